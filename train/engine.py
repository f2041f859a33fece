"""What one run (``Trainer``) and a stack of replicas (``ReplicaTrainer``) share: the
set-up (``Engine``), the first-order minibatch step (``first_order_step``), the log point
(``log_point``, divergence included) and the ``Outcome`` (``make_outcome``), plus the
spec-to-network helpers both draw from (architecture, targets, batch size, initial
parameters, minibatch order).

A single run is not a stack of one (``Network(replicas=1)``): see ``loop``'s docstring for
the measurement (3–9% slower per step through the batched products). Both kinds build
their state here; only the array layout differs (``stacked``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from gradq.nn import optimizers as first_order
from gradq.nn import registry
from gradq.nn.network import (
    Architecture,
    Network,
    initial_parameters,
    marginal_output_bias,
)
from gradq.nn.preprocess import Splits
from gradq.nn.regularizers import add_penalty_gradient, clip_by_global_norm
from gradq.train.interface import Diverged, MetricRow, Outcome
from gradq.train.loop import Measures, Plan, host_copy

PARTS = ("train", "val", "test")


# ------------------------------------------------------------ spec → network
def architecture(spec: dict[str, Any], data: Splits) -> Architecture:
    """The network a spec asks for, its output resolved against the task."""
    m = spec["model"]
    output = m["output"]
    if output == "auto":
        if data.task == "regression":
            output = "linear"
        else:
            output = "sigmoid" if data.n_classes == 2 else "softmax"
    n_out = _n_out(output, data)
    hidden = tuple(m["hidden"])
    acts = m["activation"]
    if isinstance(acts, str):
        acts = [acts] * len(hidden)
    return Architecture(data.n_features, hidden, n_out, tuple(acts), output,
                        batch_norm=bool(m["batch_norm"]) and bool(hidden),
                        dropout_input=float(m["dropout"]["input"]),
                        dropout_hidden=float(m["dropout"]["hidden"]))


def _n_out(output: str, data: Splits) -> int:
    if output == "softmax":
        if data.task != "classification":
            raise ValueError("model.output: softmax needs a classification task")
        return int(data.n_classes)
    if output == "sigmoid":
        if data.task != "classification" or data.n_classes != 2:
            raise ValueError("model.output: sigmoid needs a binary classification task")
        return 1
    if data.task == "classification":
        raise ValueError("model.output: linear needs a regression task")
    return 1 if data.y_train.ndim == 1 else int(data.y_train.shape[1])


def targets(output: str, y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Labels as the loss wants them: int classes (softmax), (n,1) floats (sigmoid, linear)."""
    if output == "softmax":
        return y.astype(np.int64)
    y = y.astype(dtype)
    return y.reshape(len(y), -1)


def batch_size(spec: dict[str, Any], n_train: int) -> int:
    """Rows per minibatch: ``training.batch_size``, or every training row for ``full``."""
    bs = spec["training"]["batch_size"]
    return n_train if bs == "full" else min(int(bs), n_train)


def initial_flat(spec: dict[str, Any], data: Splits, arch: Architecture, batch: int
                 ) -> np.ndarray:
    """A job's initial parameters, a function of its seed (and training data) alone."""
    m = spec["model"]
    rng = np.random.default_rng([spec["seed"], 104729])
    ob: Any = "zeros"
    if m["output_bias"] == "marginal":
        ob = marginal_output_bias(arch.output, data.y_train, arch.n_out)
    lsuv = None
    if m["init"] == "lsuv":
        take = min(len(data.X_train), max(batch, 256))
        lsuv = data.X_train[rng.permutation(len(data.X_train))[:take]]
    return initial_parameters(arch, rng, init=m["init"], bias_init=m["bias_init"],
                              output_bias=ob, lsuv_batch=lsuv)


def minibatch_order(seed: int, epoch: int, n_train: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits the training rows (from seed and epoch)."""
    return np.random.default_rng([seed, epoch, 15485863]).permutation(n_train)


def finite_only(progress: dict[str, Any]) -> dict[str, Any]:
    """A diverged run's progress without its NaN and ±inf: the progress and final
    documents are JSON, which has neither (the metric rows keep them, stored explicitly)."""
    return {k: v for k, v in progress.items()
            if not (isinstance(v, float) and not math.isfinite(v))}


def final_metrics(progress: dict[str, Any]) -> dict[str, Any]:
    """The losses and accuracies of a progress document (a result's ``final`` figures)."""
    return {k: v for k, v in progress.items() if k.endswith(("_loss", "_accuracy"))}


def first_order_warnings(name: str, batch: int, n_train: int) -> list[str]:
    """What a result says about a first-order optimizer used outside its domain."""
    if registry.get(name).full_batch and batch < n_train:  # its registry entry says so
        return [f"{name} is a full-batch rule; it ran on minibatches"]
    return []


def host_state(state: Any) -> dict[str, np.ndarray]:
    """An optimizer state's leaves as host copies (a checkpoint's ``opt.*`` entries)."""
    return {k: host_copy(v) if hasattr(v, "dtype") else np.asarray(v)
            for k, v in first_order.state_to_arrays(state).items()}


# ------------------------------------------------------------------- set-up
class Engine:
    """The set-up of one run or of a stack of R replicas of one architecture.

    ``stacked``: parameters (R, P) of a ``Network(replicas=R)``, each part's targets
    (R, n[, k]) and its inputs (n, d) where every replica sees the same split (``shared``)
    or (R, n, d); else one network's (P,) and (n, d). Penalties are Python floats where
    every spec agrees (as a single run has them), else (R, 1) arrays."""

    def __init__(self, specs: list[dict[str, Any]], datas: list[Splits], xp: ModuleType,
                 arch: Architecture, *, stacked: bool, shared: bool = True,
                 checkpoint_interval_s: float = 0.0) -> None:
        spec = specs[0]
        self.spec, self.xp, self.arch = spec, xp, arch
        self.dtype = np.dtype(spec["dtype"])
        self.net = Network(arch, dtype=spec["dtype"], xp=xp,
                           **({"replicas": len(specs)} if stacked else {}))
        self.l2 = per_replica(specs, "regularization", "l2", xp, self.dtype)
        self.l1 = per_replica(specs, "regularization", "l1", xp, self.dtype)
        self.clip = spec["regularization"]["clip_grad_norm"]
        self.n_train = len(datas[0].X_train)
        self.batch = batch_size(spec, self.n_train)
        self.steps_per_epoch = math.ceil(self.n_train / self.batch)
        self.plan = Plan.of(spec, self.steps_per_epoch, checkpoint_interval_s)
        self.shared = shared
        self.sets = device_sets(datas, arch.output, self.dtype, xp,
                                replicas=len(specs) if stacked else None, shared=shared)
        self.measures = Measures(self.net, self.sets, datas[0].task, xp,
                                 spec["training"].get("train_metrics", "full"))


def per_replica(specs: list[dict[str, Any]], section: str, key: str, xp: ModuleType,
                dtype: np.dtype) -> Any:
    """A numeric setting: a Python float where every spec agrees, else an (R, 1) array
    that broadcasts against the (R, P) buffer."""
    values = [float(s[section][key]) for s in specs]
    if all(v == values[0] for v in values):
        return values[0]
    return xp.asarray(values, dtype=dtype).reshape(-1, 1)


def device_sets(datas: list[Splits], output: str, dtype: np.dtype, xp: ModuleType,
                replicas: int | None, shared: bool) -> dict[str, tuple[Any, Any]]:
    """Each non-empty part as device (X, y): one run's (n, d), (n[, k]); a stack's X
    (n, d) shared by every replica or (R, n, d) stacked, y (R, n[, k]) (a broadcast view
    where shared)."""
    sets: dict[str, tuple[Any, Any]] = {}
    for part in PARTS:
        if not len(getattr(datas[0], f"X_{part}")):
            continue
        if replicas is None or shared:
            d = datas[0]
            X = xp.asarray(getattr(d, f"X_{part}"), dtype=dtype)
            y = xp.asarray(targets(output, getattr(d, f"y_{part}"), dtype))
            sets[part] = (X, y) if replicas is None else (
                X, xp.broadcast_to(y, (replicas, *y.shape)))
        else:
            X = xp.asarray(np.stack([getattr(d, f"X_{part}") for d in datas]), dtype=dtype)
            y = xp.asarray(np.stack([targets(output, getattr(d, f"y_{part}"), dtype)
                                     for d in datas]))
            sets[part] = (X, y)
    return sets


# --------------------------------------------------------------------- the step
@dataclass
class Group:
    """Parameters ``part`` of the buffer (None: all of it; ``slice(a, b)``: replicas
    a..b of a stack), updated by one optimizer transform."""

    part: slice | None
    transform: first_order.Transform
    state: Any = None


def first_order_step(eng: Engine, X: Any, y: Any, rows: int, groups: list[Group],
                     rng: Any = None, l1: bool = True) -> None:
    """One minibatch step of a first-order transform over the flat buffer: ∇(data loss +
    penalty) (the minibatch's loss and accuracy count towards running train_* metrics),
    clipped by global norm, then each group's update (its ``state`` replaced).
    ``l1=False`` leaves the L1 term out (a proximal step applies it instead)."""
    net, m = eng.net, eng.measures
    if m.running:
        loss, hits = net.loss_and_grad(X, y, train=True, rng=rng, update_running=True,
                                       hits=m.classify)
        m.add(loss, hits, rows)
    else:
        net.loss_and_grad(X, y, train=True, rng=rng, update_running=True)
    add_penalty_gradient(net.grads, net.params, net.n_weights, eng.l2,
                         eng.l1 if l1 else 0.0)
    if eng.clip is not None:
        clip_by_global_norm(net.grads, float(eng.clip))
    for g in groups:
        if g.part is None:
            g.state = first_order.apply_updates(g.transform, net.grads, g.state, net.params)
        else:
            g.state = first_order.apply_updates(g.transform, net.grads[g.part], g.state,
                                                net.params[g.part])


# ---------------------------------------------------------------- log points
def log_point(pairs: list[tuple[str, float]], plan: Plan, epoch: int, step: int,
              now: float) -> tuple[list[MetricRow], dict[str, Any], str | None]:
    """A log point's metric rows, its progress document and, where the training loss is
    NaN or ±inf, why the run diverged (its progress then without the non-finite values)."""
    ep = step / plan.steps_per_epoch
    rows = [(k, step, ep, now, v) for k, v in pairs]
    progress = {"epoch": epoch, "epochs": plan.epochs, "step": step,
                "steps": plan.total_steps, **dict(pairs)}
    train_loss = progress["train_loss"]
    if math.isfinite(train_loss):
        return rows, progress, None
    return rows, finite_only(progress), str(Diverged(step, train_loss))


def make_outcome(eng: Engine, *, status: str, error: str | None, epoch: int, step: int,
                 progress: dict[str, Any], last_rows: list[MetricRow],
                 arrays: dict[str, np.ndarray], initial: dict[str, np.ndarray],
                 run_s: float, samples: int, warnings: list[str],
                 best_epoch: int | None = None, measured: dict[str, float] | None = None,
                 extra: dict[str, Any] | None = None, session_s: float | None = None
                 ) -> Outcome:
    """A run's ``Outcome``: its final figures are the last log point's (or ``measured``,
    at restored best parameters), its epochs, steps and best epoch."""
    final = final_metrics(progress)
    final.update(measured or {})
    final.update({"epochs": epoch, "steps": step,
                  "best_epoch": epoch if best_epoch is None else best_epoch})
    more: dict[str, Any] = {"warnings": warnings} if warnings else {}
    more.update(extra or {})
    return Outcome(status=status, final=final, params=eng.net.size, arrays=arrays,
                   initial=initial, run_s=run_s, samples=samples, error=error,
                   last_rows=last_rows, progress=progress, extra=more, session_s=session_s)
