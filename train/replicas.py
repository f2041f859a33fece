"""Batched replicas: children of a comparison trained together as stacked arrays
(docs/architecture.md).

A comparison runs one child per arm × seed, all of one architecture. Instead of R runs of
one network, ``ReplicaTrainer`` trains one ``Network(replicas=R)``: parameters (R, P),
minibatches gathered per replica as (R, B, d), batched matrix products, and one optimizer
transform per *group* of replicas that share an optimizer's name and structure, its
hyperparameters as (r, 1) arrays where the replicas' values differ (Python scalars where
they agree); either way the step is the fused rule, one kernel on CuPy. Each replica's
data split, minibatch order and initial parameters come from its own seed exactly as
``Trainer`` draws them, so
each child's curves, result, checkpoints and artifacts are those of training it alone
(identical in float64; in float32 up to rounding where hyperparameter values differ).

What batches (``batch_key``): multilayer perceptrons (any activation, PReLU, batch norm,
L1/L2, gradient clipping, learning-rate schedules, LSUV and marginal-bias initialisation)
trained by a first-order optimizer on minibatches or the full batch. What runs alone:
dropout (its masks come from a per-job random stream), early stopping, diagnostics, a time
limit, bagging, kernel SVMs, second-order and line-search methods and ``closed_form``,
and any child that resumes from a checkpoint. Replicas must share everything but the seed,
labels (keys starting with ``_``, ``_fold`` aside), the optimizer, the penalties
``regularization.l2``/``l1`` ((R, 1) arrays where they differ) and the initialisation
(``model.init``, ``bias_init``, ``output_bias``: each replica's initial parameters come from
its own spec). The training loop itself is ``loop.run_loop``, and the set-up, the step,
the log point and the outcome are ``engine``'s, all shared with ``Trainer``.

How many replicas go together: as many as ``max_replicas`` estimates fit a memory budget
(half the free device memory on a GPU, a quarter of the available RAM on the CPU, at most
4 GiB), capped by the caller's ``cap`` (the runner passes the ``GRADQ_MAX_REPLICAS``
setting, default 64; 1 switches batching off).

A replica that stops early — diverged, cancelled, or whose lease was lost (its hooks
raise) — keeps its end state and is no longer logged; the others carry on. Its rows of the
stacked arrays are still computed until the batch ends (they are independent rows, so
they cannot disturb the others).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
from gradq.nn import optimizers as first_order
from gradq.nn.backend import to_numpy
from gradq.nn.network import Network
from gradq.nn.preprocess import Splits
from gradq.train.engine import (
    Engine,
    Group,
    architecture,
    batch_size,
    first_order_step,
    first_order_warnings,
    host_state,
    initial_flat,
    log_point,
    make_outcome,
    minibatch_order,
)
from gradq.train.interface import (
    CheckpointEntry,
    EachReplicaHooks,
    Hooks,
    LogEntry,
    MetricRow,
    Outcome,
    ReplicaEnd,
    ReplicaHooks,
)
from gradq.train.loop import blas_threads, checkpoint_snapshot, host_copy, run_loop

LABELS = ("seed", "name")  # differ freely, as does every "_" key but _fold, _checkpoint_end
STRUCTURAL = ("amsgrad", "centered")  # flags that change an optimizer's state layout
PER_REPLICA = {  # numeric settings that may differ between replicas of one stack
    "regularization": ("l2", "l1"),  # (R, 1) arrays in the penalty gradient
    "model": ("init", "bias_init", "output_bias"),  # each replica's own initial parameters
}


class Incompatible(ValueError):
    """Specs or data splits that cannot share a stack (each then runs alone)."""


# ------------------------------------------------------------------- which batch
def batch_key(spec: dict[str, Any]) -> str | None:
    """A key equal for specs that can train together, or None where a spec runs alone.

    What may differ inside a stack: the seed, the name, labels (keys starting with ``_``;
    ``_fold`` is not one: it selects the data), the optimizer (grouped by
    ``optimizer_group``), and ``PER_REPLICA``'s settings."""
    opt = spec["optimizer"]
    m, reg, tr = spec["model"], spec["regularization"], spec["training"]
    if (spec.get("kind") != "train" or m["kind"] != "mlp"
            or opt["name"] not in first_order.FIRST_ORDER_DEFAULTS
            or m["dropout"]["input"] or m["dropout"]["hidden"]
            or reg["early_stopping"] or reg["bagging"] or reg.get("l1_proximal")
            or tr["diagnostics"] or tr["time_limit_s"]):
        return None
    rest = {k: v for k, v in spec.items()
            if k not in LABELS and k != "optimizer"
            and (k in ("_fold", "_checkpoint_end") or not k.startswith("_"))}
    for section, keys in PER_REPLICA.items():
        rest[section] = {k: v for k, v in rest[section].items() if k not in keys}
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


def max_replicas(spec: dict[str, Any], data: Splits, xp: ModuleType, cap: int = 64) -> int:
    """How many replicas of ``spec``'s network fit the memory budget (at least 1), at most
    ``cap`` (the runner passes the ``max_replicas`` setting)."""
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
        # the replica's own split, and its parts stacked again for one evaluation pass
        + (2 * n_rows * (arch.n_in + 1) if own_split else 0))
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


# ------------------------------------------------------------------ the trainer
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


class ReplicaTrainer(Engine):
    """Trains R compatible specs (``batch_key`` equal) together; see the module docstring.
    ``checkpoint_interval_s``: as for ``Trainer``."""

    def __init__(self, specs: list[dict[str, Any]], datas: list[Splits], xp: ModuleType,
                 hooks: ReplicaHooks | list[Hooks], checkpoint_interval_s: float = 0.0
                 ) -> None:
        if not specs or len(specs) != len(datas):
            raise ValueError("one spec and one data split per replica")
        if isinstance(hooks, list):
            if len(hooks) != len(specs):
                raise ValueError("one hooks object per replica")
            hooks = EachReplicaHooks(hooks)
        self.hooks = hooks
        keys = {batch_key(s) for s in specs}
        if None in keys or len(keys) != 1:
            raise Incompatible("these specs cannot be trained as replicas of one batch")
        # replicas of one optimizer group sit next to each other in the stack
        order = sorted(range(len(specs)), key=lambda i: optimizer_group(specs[i]["optimizer"]))
        self.order = order
        self.specs = [specs[i] for i in order]
        self.datas = [datas[i] for i in order]
        self.replicas = [_Replica(i, specs[i]) for i in order]
        self.R = len(specs)
        arch = architecture(self.specs[0], self.datas[0])
        for d in self.datas[1:]:
            if architecture(self.specs[0], d) != arch or _shapes(d) != _shapes(self.datas[0]):
                raise Incompatible("replicas' data splits differ in shape")
        super().__init__(self.specs, self.datas, xp, arch, stacked=True,
                         shared=all(_same_data(self.datas[0], d) for d in self.datas[1:]),
                         checkpoint_interval_s=checkpoint_interval_s)
        self.groups = self._groups()

    # ------------------------------------------------------------- set-up
    def _groups(self) -> list[Group]:
        groups: list[Group] = []
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
            groups.append(Group(slice(start, stop),
                                first_order.make_optimizer(name, hyper, schedule)))
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
        """One minibatch step of every replica: ``engine.first_order_step``, as one run's."""
        first_order_step(self, X, y, int(y.shape[1]), self.groups)

    # ----------------------------------------------------------------- run
    def run(self) -> list[ReplicaEnd]:
        """Train until every replica has ended; one ``ReplicaEnd`` per spec, in the order
        the specs were given."""
        with blas_threads(self.xp, self.batch, self.arch.sizes):
            return self._run()

    def _run(self) -> list[ReplicaEnd]:
        net = self.net
        net.set_flat(np.stack([initial_flat(s, d, self.arch, self.batch)
                               for s, d in zip(self.specs, self.datas, strict=True)]))
        initial = _split_arrays(net.arrays(), self.R)
        for g in self.groups:
            g.state = g.transform.init(net.params[g.part])
        body = _StackBody(self)
        epoch, step = run_loop(self.plan, body)
        now = time.perf_counter() - body.t0
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

    def _active(self) -> bool:
        return any(rep.active for rep in self.replicas)

    def _log(self, epoch: int, step: int, t0: float) -> None:
        """One log point of every active replica, reported in one hooks call."""
        names, values = self.measures.measure(step)
        now = time.perf_counter() - t0
        entries: list[LogEntry] = []
        at: list[tuple[int, str | None]] = []
        for r, rep in enumerate(self.replicas):
            if not rep.active:
                continue
            pairs = [(k, float(values[j, r])) for j, k in enumerate(names)]
            rep.last_rows, rep.progress, diverged = log_point(pairs, self.plan, epoch, step,
                                                              now)
            entries.append((rep.index, rep.last_rows, rep.progress))
            at.append((r, diverged))
        for (r, diverged), answer in zip(at, self.hooks.log(entries), strict=True):
            if isinstance(answer, BaseException):  # its lease lost: drop it
                self._drop(r, answer)
            elif diverged is not None:  # logged, then ended as one run does
                self._stop(r, epoch, step, now, "diverged", diverged)
            elif answer:
                self._stop(r, epoch, step, now, "cancelled")

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
        handed to another worker resumes alone from it); host copies, serialised by the
        hooks."""
        self.measures.reset()  # running sums restart here, as they do in a resumed run
        params, running = host_copy(self.net.params), host_copy(self.net.running)
        opt: list[dict[str, np.ndarray]] = []
        for g in self.groups:
            leaves = host_state(g.state)
            opt.extend({k: (v[j] if v.ndim else v) for k, v in leaves.items()}
                       for j in range(g.part.stop - g.part.start))
        entries: list[CheckpointEntry] = []
        at: list[int] = []
        for r, rep in enumerate(self.replicas):
            if rep.active:
                entries.append((rep.index, epoch, step, checkpoint_snapshot(
                    epoch, step, elapsed, params[r], running[r], opt[r])))
                at.append(r)
        for r, answer in zip(at, self.hooks.checkpoint(entries), strict=True):
            if answer is not None:  # as in log_point: this replica only
                self._drop(r, answer)

    def _outcome(self, r: int, initial: dict[str, np.ndarray]) -> Outcome:
        rep = self.replicas[r]
        one = Network(self.arch, dtype=self.dtype.name)  # host copy of this replica alone
        one.set_flat(to_numpy(rep.params), to_numpy(rep.running))
        return make_outcome(
            self, status=rep.status, error=rep.error, epoch=rep.epoch, step=rep.step,
            progress=rep.progress, last_rows=rep.last_rows, arrays=one.arrays(),
            initial=initial, run_s=rep.run_s, samples=rep.samples,
            warnings=first_order_warnings(rep.spec["optimizer"]["name"], self.batch,
                                          self.n_train))


class _StackBody:
    """``loop.Body`` for a stack: every replica steps; log points and checkpoints cover
    the active ones; the stack stops when none is left."""

    def __init__(self, rt: ReplicaTrainer) -> None:
        self.rt = rt
        self.t0 = time.perf_counter()
        self.idx: Any = None

    def begin_epoch(self, epoch: int) -> None:
        self.idx = self.rt._order(epoch) if self.rt.batch < self.rt.n_train else None

    def step(self, b: int) -> None:
        rt = self.rt
        idx = None if self.idx is None else self.idx[:, b * rt.batch:(b + 1) * rt.batch]
        Xb, yb = rt._batch(idx)
        rt.step(Xb, yb)
        rows = int(yb.shape[1])
        for rep in rt.replicas:
            if rep.active:
                rep.samples += rows

    def log(self, epoch: int, step: int) -> bool:
        self.rt._log(epoch, step, self.t0)
        return not self.rt._active()

    def interrupted(self) -> bool:
        return False  # a time limit runs alone

    def end_epoch(self, epoch: int, step: int) -> bool:
        return False  # early stopping runs alone

    def checkpoint(self, epoch: int, step: int) -> None:
        self.rt._checkpoints(epoch, step, time.perf_counter() - self.t0)

    def live(self) -> bool:
        rt = self.rt
        return rt._active()


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
