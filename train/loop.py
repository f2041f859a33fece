"""The training loop's skeleton, shared by one run (``Trainer``) and a stack of replicas
(``ReplicaTrainer``): when to step, log, stop and checkpoint.

Both trainers parameterise one loop (``run_loop``) with a ``Body`` that knows what a step,
a log point and a checkpoint are for them; their set-up, first-order step, log point and
outcome are one each, in ``engine``. A single run is *not* a stack of one, for two
reasons. Its results: a ``Network(replicas=1)`` computes through batched (3-d) products,
whose float32 rounding differs from the plain 2-d products' (the final train loss of the
benchmark below differs in its last digits), and a single run's results stay bit-identical
to what they were. Its speed: ``python benchmarks/stack_of_one.py --device cpu --threads 1
--repeats 21 --sizes 784,128,128,10`` (and ``64,32,32,10``), Adam, float32, minibatches of
128, NumPy, on the shared 2-core machine at load 4.5–6, measured the stack of one at
0.97–1.25x the single run's time per epoch (median of seven runs 1.09x; earlier,
interleaved at low load: 3–9% slower per step). And the single run's features (dropout,
early stopping, diagnostics, second-order methods, resume) would all have to move into
the stack.

Also here: what a log point measures (``Evaluation``: the held-out parts and, for
``training.train_metrics: full``, the training part, in one forward pass over their rows
stacked, read to the host once) and a checkpoint's host copy (``Snapshot``: arrays copied
on the training thread, serialised only when its bytes are asked for, which the runner
does on its background writer).
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import numpy as np
from gradq.nn.backend import array_module, to_numpy
from gradq.train.faults import failpoint


# ------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class Plan:
    """How long a run is and when it logs and checkpoints (the ``training`` section)."""

    epochs: int
    steps_per_epoch: int
    total_steps: int
    log_every: int | str  # a number of steps, or "epoch"
    checkpoint_every: int  # epochs
    checkpoint_end: bool = False  # also after the last epoch (a search trial at its rung)
    checkpoint_interval_s: float = 0.0  # and at least this long since the previous one

    @classmethod
    def of(cls, spec: dict[str, Any], steps_per_epoch: int,
           checkpoint_interval_s: float = 0.0) -> Plan:
        """The plan of ``spec``; ``checkpoint_interval_s`` comes from the caller (the
        runner reads it from the settings; the engine reads none)."""
        training = spec["training"]
        epochs = int(training["epochs"])
        total = epochs * steps_per_epoch
        if training["max_steps"] is not None:
            total = min(total, int(training["max_steps"]))
        return cls(epochs, steps_per_epoch, total, training["log_every"],
                   int(training["checkpoint_every"]), bool(spec.get("_checkpoint_end")),
                   float(checkpoint_interval_s))


class Body(Protocol):
    """What the loop drives; each trainer implements it."""

    def begin_epoch(self, epoch: int) -> None:
        """Prepare the epoch's minibatch order (and dropout stream)."""

    def step(self, b: int) -> None:
        """Take minibatch ``b`` of the current epoch."""

    def log(self, epoch: int, step: int) -> bool:
        """Measure and report a log point; True stops the run (cancelled, all ended)."""

    def interrupted(self) -> bool:
        """Whether to leave the epoch early (a time limit passed), checked at log points."""

    def end_epoch(self, epoch: int, step: int) -> bool:
        """After an epoch's last step (and log): True stops (early stopping, time limit)."""

    def checkpoint(self, epoch: int, step: int) -> None:
        """Hand a checkpoint of the state after ``step`` to the hooks."""

    def live(self) -> bool:
        """Whether the run (or any replica) still ends normally: then its last step is
        logged when the log interval did not fall on it."""


def run_loop(plan: Plan, body: Body, epoch: int = 0, step: int = 0) -> tuple[int, int]:
    """``_run_loop`` with NumPy's floating-point warnings off: a run that diverges ends
    ``diverged`` with its step (docs/results.md), so the overflow warnings of its last steps
    (dozens per replica in a stack) would only bury that line on the terminal."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _run_loop(plan, body, epoch, step)


def _run_loop(plan: Plan, body: Body, epoch: int, step: int) -> tuple[int, int]:
    """Train from (epoch, step) until the plan ends or the body stops it; the end's
    (epoch, step). Step 0 is logged (the loss before the first update), then every
    ``log_every`` steps or at each epoch's end, and the last step; a checkpoint follows
    every ``checkpoint_every`` epochs but the last, once ``checkpoint_interval_s`` seconds
    have passed since the previous one or the start (and the last too with
    ``checkpoint_end``): a short job pays for no checkpoint, a long one for one every
    interval at most, and a crash loses at most an interval's work."""
    logged = -1
    saved_at = time.perf_counter()

    def log() -> bool:
        nonlocal logged
        logged = step
        return body.log(epoch, step)

    if step == 0 and log():
        return epoch, step
    every = plan.log_every
    while epoch < plan.epochs and step < plan.total_steps:
        body.begin_epoch(epoch)
        for b in range(plan.steps_per_epoch):
            if step >= plan.total_steps:
                break
            body.step(b)
            failpoint("step")
            step += 1
            if isinstance(every, int) and step % every == 0:
                if log():
                    return epoch, step
                if body.interrupted():
                    break
        epoch += 1
        at_epoch_end = step % plan.steps_per_epoch == 0 or step >= plan.total_steps
        if every == "epoch" and at_epoch_end and log():
            return epoch, step
        if body.end_epoch(epoch, step):
            break
        end = epoch >= plan.epochs or step >= plan.total_steps
        due = epoch % plan.checkpoint_every == 0 and not end and (
            time.perf_counter() - saved_at >= plan.checkpoint_interval_s)
        if due or (end and plan.checkpoint_end):
            body.checkpoint(epoch, step)
            saved_at = time.perf_counter()
    if body.live() and logged != step:
        log()  # the last step, when log_every does not divide the run
    return epoch, step


SMALL_PRODUCT = 1 << 24  # multiply-adds of a step's largest product: below, one BLAS thread


def blas_threads(xp: ModuleType, batch: int, sizes: tuple[int, ...]
                 ) -> contextlib.AbstractContextManager:
    """One BLAS thread while training where every product of a step is small (NumPy).

    Splitting a small product over threads costs more in synchronisation than it saves,
    and on a busy machine a thread that waits for a descheduled sibling stalls every call
    (measured on the issue-12 mnist job, 2 cores under load: 10-17x slower per epoch with
    OpenBLAS's two threads than with one; idle, one thread is as fast). A stack of R
    replicas is R such products. Large products (more than ``SMALL_PRODUCT``
    multiply-adds per replica) keep the threads.
    """
    widest = max(a * b for a, b in zip(sizes, sizes[1:], strict=False))
    if xp is not np or batch * widest > SMALL_PRODUCT:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # it comes with scikit-learn; without it, leave BLAS alone
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# ------------------------------------------------------------------ evaluation
class Evaluation:
    """Loss (and accuracy) of several parts in one forward pass, read to the host once.

    The parts' rows are stacked once at set-up (X: (n, d) shared, or (R, n, d) per
    replica; y likewise), so a log point is one forward pass (one product per layer, into
    the network's reused buffers) and per-row losses and hits, averaged per part by one
    product with a (rows, parts) matrix of 1/n_part weights, in float64. ``measure``
    returns the metric names and their values as host float64: (metrics,) or
    (metrics, R) — the one device-to-host transfer of a log point.
    """

    def __init__(self, net: Any, sets: dict[str, tuple[Any, Any]], parts: list[str],
                 task: str, xp: ModuleType) -> None:
        self.net, self.xp = net, xp
        self.parts = [p for p in parts if p in sets]
        self.classify = task == "classification"
        kinds = ("loss", "accuracy") if self.classify else ("loss",)
        self.names = [f"{p}_{k}" for p in self.parts for k in kinds]
        if not self.parts:
            return
        Xs = [sets[p][0] for p in self.parts]
        ys = [sets[p][1] for p in self.parts]
        row_axis = -2  # X's rows; y's rows are axis 1 of (R, n) or (R, n, k), 0 of (n, ...)
        self.X = Xs[0] if len(Xs) == 1 else xp.concatenate(Xs, axis=row_axis)
        y_axis = 1 if net.replicas else 0
        self.y = ys[0] if len(ys) == 1 else xp.concatenate(ys, axis=y_axis)
        sizes = [X.shape[row_axis] for X in Xs]
        weights = np.zeros((sum(sizes), len(sizes)))
        start = 0
        for j, n in enumerate(sizes):
            weights[start:start + n, j] = 1.0 / n
            start += n
        self.weights = xp.asarray(weights)

    def measure(self, extra: dict[str, Any] | None = None) -> tuple[list[str], np.ndarray]:
        """The names and host values (float64) of ``extra`` (device values, 0-d or (R,),
        read in the same transfer) and then of every metric of the parts."""
        xp, net = self.xp, self.net
        extra = extra or {}
        blocks = []
        if extra:
            blocks.append(xp.stack([xp.asarray(v, dtype=xp.float64) for v in extra.values()]))
        if self.parts:
            z, _ = net.forward(self.X, train=False, reuse=True)  # used up below
            rows = [row_losses(net.arch.output, z, self.y)]
            if self.classify:
                rows.append(row_hits(net.arch.output, z, self.y))
            per_row = xp.stack([r.astype(xp.float64) for r in rows])  # (kinds, [R,] n)
            values = xp.moveaxis(per_row @ self.weights, -1, 0)  # (parts, kinds, [R])
            blocks.append(values.reshape(-1, *values.shape[2:]))
        if not blocks:
            return [], np.zeros((0,))
        out = blocks[0] if len(blocks) == 1 else xp.concatenate(blocks)
        return [*extra, *self.names], to_numpy(out)


class Measures:
    """What each log point reports: ``training.train_metrics`` decides the train part.

    ``full``: one pass over every part at the current parameters (``Evaluation``).
    ``running``: the held-out parts by a pass, the train part as the mean of the minibatch
    losses (and accuracies) since the previous log point, accumulated on the device by the
    step (``add``) with no second pass. Step 0 is always a full pass, and the running sums
    restart at each checkpoint as well, so that a run resumed from one logs exactly the
    values of an uninterrupted run.
    """

    def __init__(self, net: Any, sets: dict[str, tuple[Any, Any]], task: str,
                 xp: ModuleType, mode: str = "full") -> None:
        self.xp = xp
        self.classify = task == "classification"
        self.full = Evaluation(net, sets, ["train", "val", "test"], task, xp)
        self.running = mode == "running"
        self.held = Evaluation(net, sets, ["val", "test"], task, xp) if self.running else None
        self.reset()

    def reset(self) -> None:
        self.loss_sum: Any = None
        self.hit_sum: Any = None
        self.rows = 0

    def add(self, loss: Any, hits: Any, rows: int) -> None:
        """Count a minibatch of ``rows`` rows: its mean loss and accuracy (device)."""
        xp = self.xp
        loss = xp.asarray(loss, dtype=xp.float64) * rows
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        if hits is not None:
            hits = xp.asarray(hits, dtype=xp.float64) * rows
            self.hit_sum = hits if self.hit_sum is None else self.hit_sum + hits
        self.rows += rows

    def measure(self, step: int) -> tuple[list[str], np.ndarray]:
        """Names and host values of this log point's metrics (one transfer)."""
        if self.held is None or step == 0 or not self.rows:
            out = self.full.measure()
        else:
            extra = {"train_loss": self.loss_sum / self.rows}
            if self.classify and self.hit_sum is not None:
                extra["train_accuracy"] = self.hit_sum / self.rows
            out = self.held.measure(extra)
        self.reset()
        return out


def row_losses(output: str, z: Any, y: Any) -> Any:
    """Each row's data loss ((n,) or (R, n)): the per-sample terms of ``nn.losses``."""
    xp = array_module(z)
    if output == "softmax":
        m = z.max(axis=-1, keepdims=True)
        lse = xp.log(xp.exp(z - m).sum(axis=-1)) + m[..., 0]  # log Σ exp z
        return lse - xp.take_along_axis(z, y[..., None], axis=-1)[..., 0]  # −log p_y
    if output == "sigmoid":
        pos = z > 0
        softplus = xp.where(pos, z, 0) + xp.log1p(xp.exp(xp.where(pos, -z, z)))
        return (softplus - y * z).sum(axis=-1)
    d = z - y
    return (d * d).sum(axis=-1)


def row_hits(output: str, z: Any, y: Any) -> Any:
    """Each row's correctness (1 or 0) of a classifier's prediction."""
    if output == "softmax":
        return z.argmax(axis=-1) == y
    return (z[..., 0] > 0) == (y[..., 0] > 0.5)


# ----------------------------------------------------------------- checkpoints
class Snapshot:
    """A checkpoint as host arrays, copied on the training thread; ``bytes(snapshot)``
    serialises it (an ``.npz``) on whichever thread asks — the runner's writer."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self._data: bytes | None = None

    def __bytes__(self) -> bytes:
        if self._data is None:
            self._data = npz_bytes(self.arrays)
        return self._data


def host_copy(x: Any) -> np.ndarray:
    """A host array that later in-place updates of ``x`` do not change."""
    a = to_numpy(x)
    return np.array(a, copy=True) if a is x else np.asarray(a)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Host arrays as the bytes of an ``.npz`` file (checkpoints and artifacts)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def checkpoint_snapshot(epoch: int, step: int, elapsed: float, params: Any, running: Any,
                        opt: dict[str, np.ndarray], best: dict[str, Any] | None = None
                        ) -> Snapshot:
    """A checkpoint as ``Trainer._restore`` reads it. ``best`` is early stopping's record
    (None: nothing recorded, as when early stopping is off). ``opt`` must already be a
    host copy."""
    best = best or {"value": math.inf, "epoch": 0, "bad": 0, "params": None}
    arrays = {"params": host_copy(params), "running": host_copy(running),
              "meta": np.array([epoch, step, elapsed, best["value"], best["epoch"],
                                best["bad"]], dtype=np.float64),
              **{f"opt.{k}": v for k, v in opt.items()}}
    if best["params"] is not None:
        arrays["best_params"] = host_copy(best["params"])
        arrays["best_running"] = host_copy(best["running"])
    return Snapshot(arrays)
