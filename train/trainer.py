"""One run: one job's spec and data in, curves, checkpoints and a result out.

The run knows nothing of the database: it reports through ``interface.Hooks`` (the runner
connects them to fenced writes). Its set-up, first-order step, log point and ``Outcome``
are ``engine``'s, shared with a stack of replicas (``replicas``); what is its own here:
early stopping, dropout streams, diagnostics, second-order and proximal steps, resume.
Per docs/architecture.md nothing synchronises host and device inside the step loop: minibatch losses
accumulate on the device, and metrics are read once per log interval. Minibatch order
and dropout masks are derived from (seed, epoch), so a job resumed from a checkpoint at an
epoch boundary continues exactly as if it had never stopped.
"""

from __future__ import annotations

import io
import math
import time
from types import ModuleType
from typing import Any

import numpy as np
from gradq.nn import optimizers as first_order
from gradq.nn import registry, second_order
from gradq.nn.diagnostics import curvature, lanczos_extremes
from gradq.nn.network import hvp
from gradq.nn.preprocess import Splits
from gradq.nn.regularizers import add_penalty_gradient, penalty
from gradq.train.engine import (
    Engine,
    Group,
    architecture,
    final_metrics,
    first_order_step,
    first_order_warnings,
    host_state,
    initial_flat,
    log_point,
    make_outcome,
    minibatch_order,
)
from gradq.train.interface import Hooks, MetricRow, NullHooks, Outcome
from gradq.train.loop import Snapshot, blas_threads, checkpoint_snapshot, run_loop


class Trainer(Engine):
    """Trains one network described by a normalised spec on prepared data.

    ``checkpoint_interval_s``: the least time between two checkpoints (the runner passes
    the setting; 0 checkpoints every ``training.checkpoint_every`` epochs)."""

    def __init__(self, spec: dict[str, Any], data: Splits, xp: ModuleType,
                 hooks: Hooks | None = None, checkpoint_interval_s: float = 0.0) -> None:
        super().__init__([spec], [data], xp, architecture(spec, data), stacked=False,
                         checkpoint_interval_s=checkpoint_interval_s)
        self.data = data
        self.hooks = hooks or NullHooks()

    # ------------------------------------------------------------- helpers
    def initial_params(self) -> np.ndarray:
        return initial_flat(self.spec, self.data, self.arch, self.batch)

    def objective_and_grad(self, X: Any, y: Any, *, train: bool = True, rng: Any = None,
                           update_running: bool = False, l1: bool = True,
                           hits: bool | None = None) -> Any:
        """Data loss on (X, y); ``net.grads`` holds ∇(data loss + penalty).

        ``l1=False`` leaves the L1 term out (a proximal step applies it instead). ``hits``
        (not None) returns (loss, accuracy or None), as ``Network.loss_and_grad`` does."""
        out = self.net.loss_and_grad(X, y, train=train, rng=rng,
                                     update_running=update_running, hits=hits)
        add_penalty_gradient(self.net.grads, self.net.params, self.net.n_weights, self.l2,
                             self.l1 if l1 else 0.0)
        return out

    def evaluate(self) -> dict[str, float]:
        """Loss (and accuracy) on every part at the current parameters (one pass)."""
        names, values = self.measures.full.measure()
        return {k: float(v) for k, v in zip(names, values, strict=True)}

    # ------------------------------------------------------------ objective
    def full_objective(self, p: Any, X: Any, y: Any) -> tuple[float, Any]:
        """(data loss + penalty, its gradient) at ``p`` on (X, y): dropout off, for the
        deterministic objective that line searches and diagnostics need."""
        g = self.xp.zeros_like(p)
        z, cache = self.net.forward(X, train=True, params=p, dropout=False)
        loss = self.net.output.forward(z, y)
        self.net.backward(cache, self.net.output.gradient(z, y), params=p, grads=g)
        add_penalty_gradient(g, p, self.net.n_weights, self.l2, self.l1)
        total = loss + penalty(p, self.net.n_weights, self.l2, self.l1)
        return float(total), g

    def full_hvp(self, p: Any, v: Any, X: Any, y: Any) -> Any:
        """H v of the objective: the data loss's by the complex step, plus l2·v on weights."""
        hv = hvp(self.net, X, y, v, params=p)
        if self.l2:
            hv[..., : self.net.n_weights] += self.l2 * v[..., : self.net.n_weights]
        return hv

    def diagnostics(self, names: list[str]) -> dict[str, float]:
        """The requested diagnostics on the training set at the current parameters."""
        if not names:
            return {}
        X, y = self.sets["train"]
        p = self.net.params
        out: dict[str, float] = {}
        _, g = self.full_objective(p, X, y)
        gg = float((g * g).sum())
        if "grad_norm" in names:
            out["grad_norm"] = math.sqrt(gg)
        if "curvature" in names:
            hg = self.full_hvp(p, g, X, y)
            out["gHg"] = float((g * hg).sum())
            out["gg"] = gg
            out["curvature"] = curvature(g, hg)
        if "hessian_extremes" in names:
            rng = np.random.default_rng([self.spec["seed"], 31337])
            v0 = self.xp.asarray(rng.normal(size=p.shape), dtype=self.dtype)
            hi, lo = lanczos_extremes(lambda v: self.full_hvp(p, v, X, y), v0,
                                      iterations=min(30, p.size))
            out["hessian_max"], out["hessian_min"] = hi, lo
        if self.stepper.info:
            if "step_length" in names and "step_length" in self.stepper.info:
                out["step_length"] = float(self.stepper.info["step_length"])
            if "evaluations" in names and "n_evals" in self.stepper.info:
                out["evaluations"] = float(self.stepper.info["n_evals"])
        return out

    # ----------------------------------------------------------------- run
    def run(self, resume: bytes | None = None) -> Outcome:
        """Train until epochs, max_steps, early stopping, cancellation or divergence."""
        net = self.net
        self.stepper = make_stepper(self)
        initial = self.initial_params()
        net.set_flat(initial)
        initial_arrays = net.arrays()
        if self.stepper.name == "closed_form":
            return self._closed_form(initial_arrays)
        body = _RunBody(self, self.stepper.init())
        epoch = step = 0
        resumed_from = None
        elapsed = None
        if resume is not None:
            epoch, step, elapsed, body.state = self._restore(resume, body.state, body.best)
            body.t0 -= elapsed
            resumed_from = {"epoch": epoch, "step": step}
        body.epoch, body.step_ = epoch, step
        with blas_threads(self.xp, self.batch, self.arch.sizes):
            epoch, step = run_loop(self.plan, body, epoch, step)
        run_s = time.perf_counter() - body.t0
        es, best = body.es, body.best
        measured = None
        if body.status == "succeeded" and es is not None and best["params"] is not None:
            net.params[...] = best["params"]
            net.running[...] = best["running"]
            measured = self.evaluate()
        return make_outcome(
            self, status=body.status, error=body.error, epoch=epoch, step=step,
            progress=body.progress, last_rows=body.last_rows, arrays=net.arrays(),
            initial=initial_arrays, run_s=run_s, samples=body.samples,
            warnings=self.stepper.warnings, best_epoch=best["epoch"] if es is not None else None,
            measured=measured,
            extra={"resumed_from": resumed_from} if resumed_from is not None else None,
            session_s=None if elapsed is None else max(0.0, run_s - elapsed))

    def _closed_form(self, initial_arrays: dict[str, np.ndarray]) -> Outcome:
        """The exact minimiser of the regularised least-squares objective (docs/optimizers.md)."""
        from gradq.nn.linear import closed_form

        t0 = time.perf_counter()
        rows0 = self._metric_rows(0, 0.0, 0.0)
        self.hooks.log(rows0, {"epoch": 0, "epochs": 1, "step": 0, "steps": 1})
        X, y = self.sets["train"]
        W, b = closed_form(X.astype(self.xp.float64), y.astype(self.xp.float64), self.l2)
        self.net.view(self.net.params, "W0")[...] = W
        self.net.view(self.net.params, "b0")[...] = b.reshape(1, -1)
        run_s = time.perf_counter() - t0
        rows = self._metric_rows(1, 1.0, run_s)
        progress = {"epoch": 1, "epochs": 1, "step": 1, "steps": 1,
                    **{r[0]: r[4] for r in rows}}
        return make_outcome(self, status="succeeded", error=None, epoch=1, step=1,
                            progress=progress, last_rows=rows, arrays=self.net.arrays(),
                            initial=initial_arrays, run_s=run_s, samples=self.n_train,
                            warnings=[])

    def _metric_rows(self, step: int, epoch: float, t: float) -> list[MetricRow]:
        return [(k, step, epoch, t, v) for k, v in self.evaluate().items()]

    def _early_stop(self, es: dict[str, Any], epoch: int, best: dict[str, Any],
                    measured: dict[str, Any] | None = None) -> bool:
        """Record a new best, or count a bad epoch; True when patience has run out.
        ``measured``: the current figures where a log point has just taken them."""
        metric = es["metric"]
        metrics = measured if measured and metric in measured else self.evaluate()
        if metric not in metrics:
            raise ValueError(f"regularization.early_stopping.metric: {metric} is not "
                             "measured (is data.validation 0?)")
        value = float(metrics[metric])
        if metric.endswith("accuracy"):
            value = -value
        if value < best["value"] - float(es.get("min_delta", 0.0)):
            best.update(value=value, epoch=epoch, params=self.net.params.copy(),
                        running=self.net.running.copy(), bad=0)
            return False
        best["bad"] += 1
        return best["bad"] >= int(es["patience"])

    # --------------------------------------------------------- checkpoints
    def _snapshot(self, epoch: int, step: int, elapsed: float, state: Any,
                  best: dict[str, Any]) -> Snapshot:
        return checkpoint_snapshot(epoch, step, elapsed, self.net.params, self.net.running,
                                   host_state(state), best)

    def _restore(self, data: bytes | Snapshot, state: Any, best: dict[str, Any]
                 ) -> tuple[int, int, float, Any]:
        with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        self.net.set_flat(arrays["params"], arrays["running"])
        epoch, step, elapsed, bvalue, bepoch, bad = arrays["meta"]
        best.update(value=float(bvalue), epoch=int(bepoch), bad=int(bad))
        if "best_params" in arrays:
            best["params"] = self.xp.asarray(arrays["best_params"], dtype=self.dtype)
            best["running"] = self.xp.asarray(arrays["best_running"], dtype=self.dtype)
        opt = {k[4:]: v for k, v in arrays.items() if k.startswith("opt.")}
        state = first_order.state_from_arrays(state, opt)
        return int(epoch), int(step), float(elapsed), state


class _RunBody:
    """``loop.Body`` for one run: its state, clock, curves and how it ended."""

    def __init__(self, tr: Trainer, state: Any) -> None:
        self.tr = tr
        self.state = state
        training = tr.spec["training"]
        self.es = tr.spec["regularization"]["early_stopping"]
        self.best: dict[str, Any] = {"value": math.inf, "epoch": 0, "params": None,
                                     "running": None, "bad": 0}
        self.time_limit = training["time_limit_s"]
        self.diag = list(training["diagnostics"])
        self.dropout = bool(tr.arch.dropout_input or tr.arch.dropout_hidden)
        self.t0 = time.perf_counter()
        self.status, self.error = "succeeded", None
        self.samples = 0
        self.last_rows: list[MetricRow] = []
        self.progress: dict[str, Any] = {}
        self.epoch = self.step_ = 0
        self.X, self.y = tr.sets["train"]
        self.idx: Any = None
        self.rng: Any = None

    def begin_epoch(self, epoch: int) -> None:
        tr, seed = self.tr, self.tr.spec["seed"]
        self.epoch = epoch
        self.idx = (tr.xp.asarray(minibatch_order(seed, epoch, tr.n_train))
                    if tr.batch < tr.n_train else None)
        self.rng = (tr.xp.random.RandomState((seed * 1_000_003 + epoch) % (2**32))
                    if self.dropout else None)

    def step(self, b: int) -> None:
        if self.idx is None:
            Xb, yb = self.X, self.y
        else:
            idx = self.idx[b * self.tr.batch:(b + 1) * self.tr.batch]
            Xb, yb = self.X[idx], self.y[idx]
        self.state = self.tr.stepper.step(Xb, yb, self.rng, self.state)
        self.samples += int(Xb.shape[0])

    def log(self, epoch: int, step: int) -> bool:
        tr = self.tr
        self.epoch, self.step_ = epoch, step
        names, values = tr.measures.measure(step)
        extra = tr.diagnostics(self.diag)
        now = time.perf_counter() - self.t0
        pairs = [*zip(names, (float(v) for v in values), strict=True), *extra.items()]
        self.last_rows, self.progress, diverged = log_point(pairs, tr.plan, epoch, step, now)
        cancel = tr.hooks.log(self.last_rows, self.progress)
        if diverged is not None:  # logged, then ended (a stack's replica ends alike)
            self.status, self.error = "diverged", diverged
            return True
        if cancel:
            self.status = "cancelled"
            return True
        return False

    def interrupted(self) -> bool:
        return bool(self.time_limit) and time.perf_counter() - self.t0 > self.time_limit

    def end_epoch(self, epoch: int, step: int) -> bool:
        self.epoch, self.step_ = epoch, step
        if self.es is not None and self.tr._early_stop(
                self.es, epoch, self.best,  # a log point at this step has measured it already
                final_metrics(self.progress) if self.progress.get("step") == step else None):
            return True
        if self.interrupted():
            self.status = "failed"
            self.error = f"training.time_limit_s: stopped after {self.time_limit:g} s"
            return True
        return False

    def checkpoint(self, epoch: int, step: int) -> None:
        tr = self.tr
        tr.measures.reset()  # running sums restart here, as they do in a resumed run
        tr.hooks.checkpoint(epoch, step, tr._snapshot(
            epoch, step, time.perf_counter() - self.t0, self.state, self.best))

    def live(self) -> bool:
        return self.status == "succeeded"


# --------------------------------------------------------------------- steppers
class FirstOrderStepper:
    """A minibatch step of a first-order transform over the flat buffer."""

    def __init__(self, tr: Trainer, name: str, hyper: dict[str, Any], schedule: Any) -> None:
        self.tr = tr
        self.name = name
        self.transform = first_order.make_optimizer(name, hyper, schedule)
        self.info: dict[str, Any] = {}
        self.warnings = first_order_warnings(name, tr.batch, tr.n_train)
        self.proximal = bool(tr.spec["regularization"].get("l1_proximal")) and tr.l1 > 0
        if self.proximal:
            if name != "sgd":
                raise ValueError("regularization.l1_proximal: the proximal L1 step follows a "
                                 f"plain gradient step: it needs optimizer sgd, not {name}")
            lr = float(hyper.get("lr", first_order.FIRST_ORDER_DEFAULTS["sgd"]["lr"]))
            self.rate = (first_order.linear_schedule(lr, schedule["final_lr"],
                                                     schedule["steps"])
                         if schedule else (lambda k: lr))

    def init(self) -> Any:
        return self.transform.init(self.tr.net.params)

    def step(self, X: Any, y: Any, rng: Any, state: Any) -> Any:
        tr, net = self.tr, self.tr.net
        group = Group(None, self.transform, state)
        first_order_step(tr, X, y, int(X.shape[0]), [group], rng=rng, l1=not self.proximal)
        if self.proximal:
            # proximal gradient (ISTA): w ← sign(w)·max(|w| − ε_k·l1, 0) on the weights, the
            # exact minimiser of ε_k·l1·‖w‖₁ + ½‖w − v‖², which sets weights to exactly 0
            xp = tr.xp
            w = net.params[..., : net.n_weights]
            shrink = self.rate(group.state.count - 1) * tr.l1  # ε_k of the step just taken
            w[...] = xp.sign(w) * xp.maximum(xp.abs(w) - shrink, 0)
        return group.state


class MinimizerStepper:
    """One iteration (one line search) of a second-order or line-search method."""

    def __init__(self, tr: Trainer, name: str, hyper: dict[str, Any]) -> None:
        self.tr = tr
        self.name = name
        self.minimizer = second_order.make_minimizer(name, **hyper)
        self.info: dict[str, Any] = {}
        self.warnings: list[str] = []
        if tr.batch < tr.n_train:
            self.warnings.append(f"{name} ran on minibatches of {tr.batch}: line searches "
                                 "and curvature estimates are noisy; batch_size: full is "
                                 "the default for it")
        if tr.arch.dropout_input or tr.arch.dropout_hidden:
            self.warnings.append(f"{name} minimises the deterministic objective: dropout "
                                 "is not applied")
        if tr.clip is not None:
            self.warnings.append(f"{name} does not clip gradients (clip_grad_norm ignored)")

    def init(self) -> Any:
        return self.minimizer.init(self.tr.net.params)

    def step(self, X: Any, y: Any, rng: Any, state: Any) -> Any:
        tr, net = self.tr, self.tr.net
        if tr.batch < tr.n_train:
            state = state._replace(f=math.nan)  # a new batch: the cached loss is stale
        x, state, self.info = self.minimizer.step(
            lambda p: tr.full_objective(p, X, y), net.params, state,
            hvp=lambda p, v: tr.full_hvp(p, v, X, y))
        net.params[...] = x
        if net.arch.batch_norm:  # keep running statistics for inference
            net.forward(X, train=True, update_running=True, dropout=False)
        return state


class ClosedFormStepper:
    name = "closed_form"
    info: dict[str, Any] = {}
    warnings: list[str] = []


def make_stepper(tr: Trainer) -> FirstOrderStepper | MinimizerStepper | ClosedFormStepper:
    opt = dict(tr.spec["optimizer"])
    name = opt.pop("name")
    schedule = opt.pop("schedule", None)
    if name == "closed_form":
        if tr.arch.hidden or tr.arch.output != "linear":
            raise ValueError("optimizer.name: closed_form needs model.hidden [] and a linear "
                             "output (a regression task)")
        return ClosedFormStepper()
    if name in registry.names("second_order"):
        return MinimizerStepper(tr, name, {k: v for k, v in opt.items() if v is not None})
    return FirstOrderStepper(tr, name, opt, schedule)
