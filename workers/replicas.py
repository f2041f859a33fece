"""Batched replicas: children of a comparison trained together as stacked arrays (SPEC §9).

A comparison runs one child per arm × seed, all of one architecture. Instead of R runs of
one network, ``ReplicaTrainer`` trains one ``Network(replicas=R)``: parameters (R, P),
minibatches gathered per replica as (R, B, d), batched matrix products, and one optimizer
transform per *group* of replicas that share an optimizer's name and structure, its
hyperparameters as (r, 1) arrays where the replicas' values differ (Python scalars where
they agree, which keeps CuPy's fused update kernels). Each replica's data split, minibatch
order and initial parameters come from its own seed exactly as ``Trainer`` draws them, so
each child's curves, result, checkpoints and artifacts are those of training it alone
(identical in float64; in float32 up to rounding where hyperparameter values differ).

What batches (``batch_key``): multilayer perceptrons (any activation, PReLU, batch norm,
L1/L2, gradient clipping, learning-rate schedules, LSUV and marginal-bias initialisation)
trained by a first-order optimizer on minibatches or the full batch. What runs alone:
dropout (its masks come from a per-job random stream), early stopping, diagnostics, a time
limit, bagging, kernel SVMs, second-order and line-search methods and ``closed_form``,
and any child that resumes from a checkpoint. Replicas must share everything but the seed
and the optimizer (the data section, model, regularization, training section, dtype).

How many replicas go together: as many as ``max_replicas`` estimates fit a memory budget
(half the free device memory on a GPU, a quarter of the available RAM on the CPU, at most
4 GiB), capped by ``GRADQ_MAX_REPLICAS`` (default 64; 1 switches batching off).

A replica that stops early — diverged, cancelled, or whose lease was lost (its hooks
raise) — keeps its end state and is no longer logged; the others carry on. Its rows of the
stacked arrays are still computed until the batch ends (they are independent rows, so
they cannot disturb the others).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import numpy as np
from gradq.nn import optimizers as first_order
from gradq.nn.backend import to_numpy
from gradq.nn.network import Architecture, Network
from gradq.nn.preprocess import Splits
from gradq.nn.regularizers import add_penalty_gradient, clip_by_global_norm
from gradq.service.settings import get_settings

from .faults import failpoint
from .trainer import (
    Diverged,
    Hooks,
    MetricRow,
    Outcome,
    architecture,
    batch_size,
    checkpoint_bytes,
    evaluate_sets,
    final_metrics,
    finite_only,
    first_order_warnings,
    host_state,
    initial_flat,
    metric_values,
    minibatch_order,
    targets,
)

SMALL_PRODUCT = 1 << 24  # multiply-adds of one replica's largest product: below, one thread
LABELS = ("seed", "name", "_arm", "_arm_index", "_grid", "_phase")  # differ freely
STRUCTURAL = ("amsgrad", "centered")  # flags that change an optimizer's state layout


# ------------------------------------------------------------------- which batch
def batch_key(spec: dict[str, Any]) -> str | None:
    """A key equal for specs that can train together, or None where a spec runs alone."""
    opt = spec["optimizer"]
    m, reg, tr = spec["model"], spec["regularization"], spec["training"]
    if (spec.get("kind") != "train" or m["kind"] != "mlp"
            or opt["name"] not in first_order.FIRST_ORDER_DEFAULTS
            or m["dropout"]["input"] or m["dropout"]["hidden"]
            or reg["early_stopping"] or reg["bagging"] or reg.get("l1_proximal")
            or tr["diagnostics"] or tr["time_limit_s"]):
        return None
    rest = {k: v for k, v in spec.items()  # labels (`_` keys but a fold) never stop stacking
            if k not in LABELS and (k == "_fold" or not k.startswith("_"))
            and k != "optimizer"}
    return json.dumps(rest, sort_keys=True, default=str)


def optimizer_group(opt: dict[str, Any]) -> str:
    """Replicas with equal groups share one transform: the name, the schedule and whatever
    changes the state's layout; other hyperparameter values may differ (as arrays)."""
    name = opt["name"]
    fixed: dict[str, Any] = {"name": name, "schedule": opt.get("schedule")}
    for k in STRUCTURAL:
        if k in opt:
            fixed[k] = opt[k]
    if name == "rmsprop":
        fixed["with_momentum"] = float(opt.get("momentum", 0.0)) > 0  # adds a trace
    if name == "delta_bar_delta":  # its initial rates are filled from lr: keep them scalars
        fixed.update({k: v for k, v in opt.items() if k != "name"})
    return json.dumps(fixed, sort_keys=True, default=str)


def max_replicas(spec: dict[str, Any], data: Splits, xp: ModuleType) -> int:
    """How many replicas of ``spec``'s network fit the memory budget (at least 1)."""
    cap = get_settings().max_replicas
    if cap <= 1:
        return 1
    arch = architecture(spec, data)
    itemsize = np.dtype(spec["dtype"]).itemsize
    sizes = arch.sizes
    n_params = sum(a * b + b for a, b in zip(sizes, sizes[1:], strict=False))
    n_rows = len(data.X_train) + len(data.X_val) + len(data.X_test)
    batch = batch_size(spec, len(data.X_train))
    widest = max(sizes)
    d = spec["data"]
    own_split = bool(d["validation"] or d["test"] or d["folds"])  # else one shared copy
    per_replica = itemsize * (
        8 * n_params  # parameters, gradients, up to three optimizer moments, temporaries
        + 6 * batch * sum(sizes)  # activations, their gradients, the gathered batch
        + 4 * max(len(data.X_train), len(data.X_val)) * widest  # evaluation passes
        + (n_rows * (arch.n_in + 1) if own_split else 0))  # the replica's own split
    return max(1, min(cap, _memory_budget(xp) // max(per_replica, 1)))


def _memory_budget(xp: ModuleType) -> int:
    """Bytes a batch may use: half the free device memory on a GPU; on the CPU a quarter of
    the available memory, at most 4 GiB."""
    try:
        if xp.__name__ == "cupy":
            free, _ = xp.cuda.runtime.memGetInfo()
            return int(free // 2)
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return int(min(4 << 30, pages // 4))
    except (AttributeError, ValueError, OSError):  # no sysconf (not Linux): stay modest
        return 1 << 30


# ---------------------------------------------------------------------- hooks
LogEntry = tuple[int, list[MetricRow], dict[str, Any]]  # replica, rows, progress
CheckpointEntry = tuple[int, int, int, bytes]  # replica, epoch, step, data


class ReplicaHooks(Protocol):
    """Where a batch reports: one call per log interval or checkpoint for all replicas
    (the runner writes them in one transaction). Replicas are numbered as given to
    ``ReplicaTrainer``. A replica's answer is its cancel flag (``log``) or None
    (``checkpoint``), or the exception that ends it (a lost lease): the others go on."""

    def log(self, entries: list[LogEntry]) -> list[bool | BaseException]: ...

    def checkpoint(self, entries: list[CheckpointEntry]) -> list[BaseException | None]: ...


class EachReplicaHooks:
    """``ReplicaHooks`` over one trainer ``Hooks`` per replica (library use and tests)."""

    def __init__(self, hooks: list[Hooks]) -> None:
        self.hooks = hooks

    def log(self, entries: list[LogEntry]) -> list[bool | BaseException]:
        out: list[bool | BaseException] = []
        for r, rows, progress in entries:
            try:
                out.append(bool(self.hooks[r].log(rows, progress)))
            except Exception as exc:
                out.append(exc)
        return out

    def checkpoint(self, entries: list[CheckpointEntry]) -> list[BaseException | None]:
        out: list[BaseException | None] = []
        for r, epoch, step, data in entries:
            try:
                self.hooks[r].checkpoint(epoch, step, data)
                out.append(None)
            except Exception as exc:
                out.append(exc)
        return out


# ------------------------------------------------------------------ the trainer
@dataclass
class ReplicaEnd:
    """How one replica left the batch: an outcome, or the exception its hooks raised."""

    outcome: Outcome | None = None
    error: BaseException | None = None
    traceback: str | None = None


@dataclass
class _Replica:
    index: int  # where the caller listed it
    spec: dict[str, Any]
    active: bool = True
    status: str = "succeeded"
    error: str | None = None
    epoch: int = 0
    step: int = 0
    samples: int = 0
    run_s: float = 0.0
    last_rows: list[MetricRow] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=dict)
    params: Any = None  # this replica's flat parameters (and statistics) when it stopped
    running: Any = None
    end: ReplicaEnd = field(default_factory=ReplicaEnd)


@dataclass
class _Group:
    """Replicas ``start:stop`` of the stack, updated by one optimizer transform."""

    start: int
    stop: int
    transform: first_order.Transform
    state: Any = None


class ReplicaTrainer:
    """Trains R compatible specs (``batch_key`` equal) together; see the module docstring."""

    def __init__(self, specs: list[dict[str, Any]], datas: list[Splits], xp: ModuleType,
                 hooks: ReplicaHooks | list[Hooks]) -> None:
        if not specs or len(specs) != len(datas):
            raise ValueError("one spec and one data split per replica")
        if isinstance(hooks, list):
            if len(hooks) != len(specs):
                raise ValueError("one hooks object per replica")
            hooks = EachReplicaHooks(hooks)
        self.hooks = hooks
        keys = {batch_key(s) for s in specs}
        if None in keys or len(keys) != 1:
            raise ValueError("these specs cannot be trained as replicas of one batch")
        # replicas of one optimizer group sit next to each other in the stack
        order = sorted(range(len(specs)), key=lambda i: optimizer_group(specs[i]["optimizer"]))
        self.order = order
        self.specs = [specs[i] for i in order]
        self.datas = [datas[i] for i in order]
        self.replicas = [_Replica(i, specs[i]) for i in order]
        self.xp = xp
        spec = self.specs[0]
        self.spec = spec
        self.R = len(specs)
        self.task = self.datas[0].task
        self.arch: Architecture = architecture(spec, self.datas[0])
        for d in self.datas[1:]:
            if architecture(spec, d) != self.arch or _shapes(d) != _shapes(self.datas[0]):
                raise ValueError("replicas' data splits differ in shape")
        self.dtype = np.dtype(spec["dtype"])
        self.net = Network(self.arch, dtype=spec["dtype"], xp=xp, replicas=self.R)
        reg = spec["regularization"]
        self.l2, self.l1 = float(reg["l2"]), float(reg["l1"])
        self.clip = reg["clip_grad_norm"]
        self.n_train = len(self.datas[0].X_train)
        self.batch = batch_size(spec, self.n_train)
        self.steps_per_epoch = math.ceil(self.n_train / self.batch)
        self.shared = all(_same_data(self.datas[0], d) for d in self.datas[1:])
        self.sets = self._device_sets()
        self.groups = self._groups()

    # ------------------------------------------------------------- set-up
    def _device_sets(self) -> dict[str, tuple[Any, Any]]:
        """Each part as (X, y): X (n, d) shared by every replica or (R, n, d) stacked, y
        always (R, n) or (R, n, k) (a broadcast view where shared)."""
        xp, out = self.xp, self.arch.output
        sets: dict[str, tuple[Any, Any]] = {}
        for part in ("train", "val", "test"):
            if not len(getattr(self.datas[0], f"X_{part}")):
                continue
            if self.shared:
                d = self.datas[0]
                X = xp.asarray(getattr(d, f"X_{part}"), dtype=self.dtype)
                y = xp.asarray(targets(out, getattr(d, f"y_{part}"), self.dtype))
                sets[part] = (X, xp.broadcast_to(y, (self.R, *y.shape)))
            else:
                X = xp.asarray(np.stack([getattr(d, f"X_{part}") for d in self.datas]),
                               dtype=self.dtype)
                y = xp.asarray(np.stack([targets(out, getattr(d, f"y_{part}"), self.dtype)
                                         for d in self.datas]))
                sets[part] = (X, y)
        return sets

    def _groups(self) -> list[_Group]:
        groups: list[_Group] = []
        start = 0
        while start < self.R:
            key = optimizer_group(self.specs[start]["optimizer"])
            stop = start
            while stop < self.R and optimizer_group(self.specs[stop]["optimizer"]) == key:
                stop += 1
            opts = [dict(s["optimizer"]) for s in self.specs[start:stop]]
            name = opts[0].pop("name")
            schedule = opts[0].pop("schedule", None)
            hyper: dict[str, Any] = {}
            for k in opts[0]:
                values = [o[k] for o in opts]
                if all(v == values[0] for v in values):
                    hyper[k] = values[0]  # one scalar, as a single run has it
                else:
                    hyper[k] = self.xp.asarray(values, dtype=self.dtype).reshape(-1, 1)
            groups.append(_Group(start, stop, first_order.make_optimizer(name, hyper,
                                                                         schedule)))
            start = stop
        return groups

    # --------------------------------------------------------------- steps
    def _order(self, epoch: int) -> Any:
        """(R, n) row indices of this epoch per replica, into the flattened stack."""
        order = np.stack([minibatch_order(s["seed"], epoch, self.n_train) for s in self.specs])
        if not self.shared:
            order += (np.arange(self.R) * self.n_train)[:, None]
        return self.xp.asarray(order)

    def _batch(self, idx: Any) -> tuple[Any, Any]:
        X, y = self.sets["train"]
        if idx is None:  # the full batch
            return X, y
        if self.shared:
            return X[idx], y[0][idx]
        return (X.reshape(-1, X.shape[-1])[idx], y.reshape(-1, *y.shape[2:])[idx])

    def step(self, X: Any, y: Any) -> None:
        """One minibatch step of every replica: the step of ``FirstOrderStepper``."""
        net = self.net
        net.loss_and_grad(X, y, train=True, update_running=True)
        add_penalty_gradient(net.grads, net.params, net.n_weights, self.l2, self.l1)
        if self.clip is not None:
            clip_by_global_norm(net.grads, float(self.clip))
        for g in self.groups:
            g.state = first_order.apply_updates(g.transform, net.grads[g.start:g.stop],
                                                g.state, net.params[g.start:g.stop])

    # ----------------------------------------------------------------- run
    def run(self) -> list[ReplicaEnd]:
        """Train until every replica has ended; one ``ReplicaEnd`` per spec, in the order
        the specs were given."""
        with self._blas_threads():
            return self._run()

    def _blas_threads(self) -> contextlib.AbstractContextManager:
        """One BLAS thread where every product is small (NumPy only).

        A stacked product is R separate BLAS calls; splitting each small one over threads
        costs more in synchronisation than it saves, and on a busy machine a thread that
        waits for a descheduled sibling stalls every call (measured: up to 10× slower).
        Large products (more than ``SMALL_PRODUCT`` multiply-adds each) keep the threads.
        """
        rows = max(self.batch, *(len(X) if X.ndim == 2 else X.shape[1]
                                 for X, _ in self.sets.values()))
        sizes = self.arch.sizes
        widest = max(a * b for a, b in zip(sizes, sizes[1:], strict=False))
        if self.xp is not np or rows * widest > SMALL_PRODUCT:
            return contextlib.nullcontext()
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # it comes with scikit-learn; without it, leave BLAS alone
            return contextlib.nullcontext()
        return threadpool_limits(limits=1, user_api="blas")

    def _run(self) -> list[ReplicaEnd]:
        xp, net, spec = self.xp, self.net, self.spec
        tr = spec["training"]
        net.set_flat(np.stack([initial_flat(s, d, self.arch, self.batch)
                               for s, d in zip(self.specs, self.datas, strict=True)]))
        initial = _split_arrays(net.arrays(), self.R)
        for g in self.groups:
            g.state = g.transform.init(net.params[g.start:g.stop])
        log_every = tr["log_every"]
        epochs = int(tr["epochs"])
        total_steps = epochs * self.steps_per_epoch
        if tr["max_steps"] is not None:
            total_steps = min(total_steps, int(tr["max_steps"]))
        t0 = time.perf_counter()
        epoch = step = 0

        def log_point() -> None:
            names, values = metric_values(evaluate_sets(net, self.sets, self.task), xp)
            now = time.perf_counter() - t0
            ep = step / self.steps_per_epoch
            entries: list[LogEntry] = []
            at: list[int] = []
            for r, rep in enumerate(self.replicas):
                if not rep.active:
                    continue
                pairs = [(k, float(values[j, r])) for j, k in enumerate(names)]
                rep.last_rows = [(k, step, ep, now, v) for k, v in pairs]
                rep.progress = {"epoch": epoch, "epochs": epochs, "step": step,
                                "steps": total_steps, **dict(pairs)}
                if not math.isfinite(rep.progress["train_loss"]):  # diverges: as Trainer,
                    rep.progress = finite_only(rep.progress)  # JSON documents hold no NaN
                entries.append((rep.index, rep.last_rows, rep.progress))
                at.append(r)
            for r, answer in zip(at, self.hooks.log(entries), strict=True):
                train_loss = float(values[names.index("train_loss"), r])
                if isinstance(answer, BaseException):  # its lease lost: drop it
                    self._drop(r, answer)
                elif not math.isfinite(train_loss):  # logged, then ended as Trainer does
                    self._stop(r, epoch, step, now, "diverged", str(Diverged(step, train_loss)))
                elif answer:
                    self._stop(r, epoch, step, now, "cancelled")

        def active() -> bool:
            return any(rep.active for rep in self.replicas)

        log_point()
        while active() and epoch < epochs and step < total_steps:
            idx_all = self._order(epoch) if self.batch < self.n_train else None
            for b in range(self.steps_per_epoch):
                if step >= total_steps:
                    break
                idx = None if idx_all is None else idx_all[:, b * self.batch:
                                                           (b + 1) * self.batch]
                Xb, yb = self._batch(idx)
                self.step(Xb, yb)
                failpoint("step")
                step += 1
                rows = int(yb.shape[1])
                for rep in self.replicas:
                    if rep.active:
                        rep.samples += rows
                if isinstance(log_every, int) and step % log_every == 0:
                    log_point()
                    if not active():
                        break
            if not active():
                break
            epoch += 1
            at_epoch_end = step % self.steps_per_epoch == 0 or step >= total_steps
            if log_every == "epoch" and at_epoch_end:
                log_point()
            end = epoch >= epochs or step >= total_steps
            if (epoch % int(tr["checkpoint_every"]) == 0 and not end) or (
                    end and spec.get("_checkpoint_end")):  # a search trial at its rung
                self._checkpoints(epoch, step, time.perf_counter() - t0)
        if active() and any(rep.progress.get("step") != step for rep in self.replicas
                            if rep.active):
            log_point()  # the last step, when log_every does not divide the run
        now = time.perf_counter() - t0
        for r, rep in enumerate(self.replicas):
            if rep.active:
                self._stop(r, epoch, step, now, "succeeded")
        for r, rep in enumerate(self.replicas):
            if rep.end.error is None:
                rep.end.outcome = self._outcome(r, initial[r])
        ends = [ReplicaEnd()] * self.R
        for rep in self.replicas:
            ends[rep.index] = rep.end
        return ends

    def _stop(self, r: int, epoch: int, step: int, now: float, status: str,
              error: str | None = None) -> None:
        rep = self.replicas[r]
        rep.active = False
        rep.status, rep.error = status, error
        rep.epoch, rep.step, rep.run_s = epoch, step, now
        rep.params = self.net.params[r].copy()
        rep.running = self.net.running[r].copy()

    def _drop(self, r: int, exc: BaseException) -> None:
        rep = self.replicas[r]
        rep.active = False
        rep.end = ReplicaEnd(error=exc, traceback="".join(traceback.format_exception(exc)))

    def _checkpoints(self, epoch: int, step: int, elapsed: float) -> None:
        """Each active replica's checkpoint, laid out as ``Trainer``'s own (so a replica
        handed to another worker resumes alone from it)."""
        params, running = to_numpy(self.net.params), to_numpy(self.net.running)
        opt: list[dict[str, np.ndarray]] = []
        for g in self.groups:
            leaves = host_state(g.state)
            opt.extend({k: (v[j] if v.ndim else v) for k, v in leaves.items()}
                       for j in range(g.stop - g.start))
        entries: list[CheckpointEntry] = []
        at: list[int] = []
        for r, rep in enumerate(self.replicas):
            if rep.active:
                entries.append((rep.index, epoch, step, checkpoint_bytes(
                    epoch, step, elapsed, params[r], running[r], opt[r])))
                at.append(r)
        for r, answer in zip(at, self.hooks.checkpoint(entries), strict=True):
            if answer is not None:  # as in log_point: this replica only
                self._drop(r, answer)

    def _outcome(self, r: int, initial: dict[str, np.ndarray]) -> Outcome:
        rep = self.replicas[r]
        one = Network(self.arch, dtype=self.dtype.name)  # host copy of this replica alone
        one.set_flat(to_numpy(rep.params), to_numpy(rep.running))
        final = final_metrics(rep.progress)
        final.update({"epochs": rep.epoch, "steps": rep.step, "best_epoch": rep.epoch})
        extra: dict[str, Any] = {}
        warnings = first_order_warnings(rep.spec["optimizer"]["name"], self.batch,
                                        self.n_train)
        if warnings:
            extra["warnings"] = warnings
        return Outcome(status=rep.status, final=final, params=self.net.size,
                       arrays=one.arrays(), initial=initial, run_s=rep.run_s,
                       samples=rep.samples, error=rep.error, last_rows=rep.last_rows,
                       progress=rep.progress, extra=extra)


def _shapes(d: Splits) -> tuple:
    return tuple(getattr(d, f"{a}_{p}").shape for a in ("X", "y")
                 for p in ("train", "val", "test"))


def _same_data(a: Splits, b: Splits) -> bool:
    """Whether two replicas see the same split (the same seed, or no held-out parts)."""
    if a is b:
        return True
    return all(np.array_equal(getattr(a, f"{k}_{p}"), getattr(b, f"{k}_{p}"))
               for k in ("X", "y") for p in ("train", "val", "test"))


def _split_arrays(arrays: dict[str, np.ndarray], R: int) -> list[dict[str, np.ndarray]]:
    return [{k: v[r] for k, v in arrays.items()} for r in range(R)]
