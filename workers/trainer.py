"""The training loop: one job's spec and data in, curves, checkpoints and a result out.

The loop knows nothing of the database: it reports through ``Hooks`` (the runner connects
them to fenced writes). Per SPEC §9 nothing synchronises host and device inside the step
loop: minibatch losses accumulate on the device, and metrics are read once per log
interval. Minibatch order and dropout masks are derived from (seed, epoch), so a job resumed
from a checkpoint at an epoch boundary continues exactly as if it had never stopped.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import numpy as np
from gradq.nn import optimizers as first_order
from gradq.nn import second_order
from gradq.nn.backend import to_numpy
from gradq.nn.diagnostics import curvature, lanczos_extremes
from gradq.nn.network import (
    Architecture,
    Network,
    hvp,
    initial_parameters,
    marginal_output_bias,
)
from gradq.nn.preprocess import Splits
from gradq.nn.regularizers import add_penalty_gradient, clip_by_global_norm, penalty
from gradq.workers.faults import failpoint

MetricRow = tuple[str, int, float, float, float]  # name, step, epoch, time_s, value


class Hooks(Protocol):
    """Where the loop reports; every call may raise to stop it (e.g. a lost lease)."""

    def log(self, rows: list[MetricRow], progress: dict[str, Any]) -> bool:
        """Store one log interval; return True when cancellation was requested."""

    def checkpoint(self, epoch: int, step: int, data: bytes) -> None:
        """Store a checkpoint."""


class NullHooks:
    """Hooks that store nothing (library use and tests)."""

    def __init__(self) -> None:
        self.rows: list[MetricRow] = []
        self.checkpoints: list[tuple[int, int, bytes]] = []

    def log(self, rows: list[MetricRow], progress: dict[str, Any]) -> bool:
        self.rows.extend(rows)
        return False

    def checkpoint(self, epoch: int, step: int, data: bytes) -> None:
        self.checkpoints.append((epoch, step, data))


@dataclass
class Outcome:
    """How a run ended, and what it leaves behind."""

    status: str  # succeeded | diverged | failed | cancelled
    final: dict[str, Any]
    params: int
    arrays: dict[str, np.ndarray]
    initial: dict[str, np.ndarray]
    run_s: float
    samples: int
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    last_rows: list[MetricRow] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=dict)


class Diverged(Exception):
    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"loss became {value} at step {step}")
        self.step = step


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


def evaluate_sets(net: Network, sets: dict[str, tuple[Any, Any]], task: str
                  ) -> dict[str, Any]:
    """Loss (and accuracy) of ``net`` on every part, as device arrays: 0-d, or (R,) for
    stacked replicas (no transfer here)."""
    out: dict[str, Any] = {}
    for part, (X, y) in sets.items():
        z, _ = net.forward(X, train=False, reuse=True)  # z is used up before the next part
        out[f"{part}_loss"] = net.output.forward(z, y)
        if task == "classification":
            if net.arch.output == "softmax":
                hit = z.argmax(axis=-1) == y
            else:
                hit = (z[..., 0] > 0) == (y[..., 0] > 0.5)
            out[f"{part}_accuracy"] = hit.mean(axis=-1)
    return out


def metric_values(metrics: dict[str, Any], xp: ModuleType) -> tuple[list[str], np.ndarray]:
    """``evaluate_sets``'s names, and its values on the host as float64, (metrics,) or
    (metrics, R): the one transfer per log interval."""
    names = list(metrics)
    return names, to_numpy(xp.stack([xp.asarray(metrics[k], dtype=xp.float64)
                                     for k in names]))


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
    if name == "delta_bar_delta" and batch < n_train:
        return ["delta_bar_delta is a full-batch rule; it ran on minibatches"]
    return []


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Host arrays as the bytes of an ``.npz`` file (checkpoints and artifacts)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def host_state(state: Any) -> dict[str, np.ndarray]:
    """An optimizer state's leaves as host arrays (a checkpoint's ``opt.*`` entries)."""
    return {k: np.asarray(to_numpy(v) if hasattr(v, "dtype") else v)
            for k, v in first_order.state_to_arrays(state).items()}


def checkpoint_bytes(epoch: int, step: int, elapsed: float, params: Any, running: Any,
                     opt: dict[str, np.ndarray], best: dict[str, Any] | None = None) -> bytes:
    """A checkpoint as ``Trainer._restore`` reads it. ``best`` is early stopping's record
    (None: nothing recorded, as when early stopping is off)."""
    best = best or {"value": math.inf, "epoch": 0, "bad": 0, "params": None}
    arrays = {"params": to_numpy(params), "running": to_numpy(running),
              "meta": np.array([epoch, step, elapsed, best["value"], best["epoch"],
                                best["bad"]], dtype=np.float64),
              **{f"opt.{k}": v for k, v in opt.items()}}
    if best["params"] is not None:
        arrays["best_params"] = to_numpy(best["params"])
        arrays["best_running"] = to_numpy(best["running"])
    return npz_bytes(arrays)


class Trainer:
    """Trains one network described by a normalised spec on prepared data."""

    def __init__(self, spec: dict[str, Any], data: Splits, xp: ModuleType,
                 hooks: Hooks | None = None) -> None:
        self.spec = spec
        self.data = data
        self.xp = xp
        self.hooks = hooks or NullHooks()
        self.arch = architecture(spec, data)
        self.dtype = np.dtype(spec["dtype"])
        self.net = Network(self.arch, dtype=spec["dtype"], xp=xp)
        reg = spec["regularization"]
        self.l2, self.l1 = float(reg["l2"]), float(reg["l1"])
        self.clip = reg["clip_grad_norm"]
        out = self.arch.output
        self.sets: dict[str, tuple[Any, Any]] = {}
        for part in ("train", "val", "test"):
            X = getattr(data, f"X_{part}")
            if len(X):
                self.sets[part] = (xp.asarray(X, dtype=self.dtype),
                                   xp.asarray(targets(out, getattr(data, f"y_{part}"),
                                                      self.dtype)))
        self.n_train = len(data.X_train)
        self.batch = batch_size(spec, self.n_train)
        self.steps_per_epoch = math.ceil(self.n_train / self.batch)

    # ------------------------------------------------------------- helpers
    def initial_params(self) -> np.ndarray:
        return initial_flat(self.spec, self.data, self.arch, self.batch)

    def objective_and_grad(self, X: Any, y: Any, *, train: bool = True, rng: Any = None,
                           update_running: bool = False, l1: bool = True) -> Any:
        """Data loss on (X, y); ``net.grads`` holds ∇(data loss + penalty).

        ``l1=False`` leaves the L1 term out (a proximal step applies it instead)."""
        loss = self.net.loss_and_grad(X, y, train=train, rng=rng,
                                      update_running=update_running)
        add_penalty_gradient(self.net.grads, self.net.params, self.net.n_weights, self.l2,
                             self.l1 if l1 else 0.0)
        return loss

    def evaluate(self) -> dict[str, Any]:
        """Loss (and accuracy) on every part, as device scalars (no transfer here)."""
        return evaluate_sets(self.net, self.sets, self.data.task)

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
        spec, xp, net = self.spec, self.xp, self.net
        tr = spec["training"]
        self.stepper = make_stepper(self)
        initial = self.initial_params()
        net.set_flat(initial)
        initial_arrays = net.arrays()
        if self.stepper.name == "closed_form":
            return self._closed_form(initial_arrays)
        state = self.stepper.init()
        epoch, step, elapsed = 0, 0, 0.0
        es = spec["regularization"]["early_stopping"]
        best = {"value": math.inf, "epoch": 0, "params": None, "running": None, "bad": 0}
        resumed_from = None
        if resume is not None:
            epoch, step, elapsed, state = self._restore(resume, state, best)
            resumed_from = {"epoch": epoch, "step": step}
        log_every = tr["log_every"]
        epochs = int(tr["epochs"])
        max_steps = tr["max_steps"]
        total_steps = epochs * self.steps_per_epoch
        if max_steps is not None:
            total_steps = min(total_steps, int(max_steps))
        X, y = self.sets["train"]
        t0 = time.perf_counter() - elapsed
        time_limit = tr["time_limit_s"]
        diag = list(tr["diagnostics"])
        samples = 0
        status, error = "succeeded", None
        last_rows: list[MetricRow] = []
        progress: dict[str, Any] = {}

        def log_point() -> bool:
            nonlocal last_rows, progress
            names, values = metric_values(self.evaluate(), xp)
            extra = self.diagnostics(diag)
            now = time.perf_counter() - t0
            ep = step / self.steps_per_epoch
            pairs = [*zip(names, (float(v) for v in values), strict=True), *extra.items()]
            rows = [(k, step, ep, now, v) for k, v in pairs]
            last_rows = rows
            progress = {"epoch": epoch, "epochs": epochs, "step": step, "steps": total_steps,
                        **dict(pairs)}
            train_loss = progress["train_loss"]
            if not math.isfinite(train_loss):
                progress = finite_only(progress)
                self.hooks.log(rows, progress)
                raise Diverged(step, train_loss)
            return self.hooks.log(rows, progress)

        try:
            if step == 0 and log_point():
                status = "cancelled"
            while status == "succeeded" and epoch < epochs and step < total_steps:
                order = (minibatch_order(spec["seed"], epoch, self.n_train)
                         if self.batch < self.n_train else None)
                drop_rng = (xp.random.RandomState(
                    (spec["seed"] * 1_000_003 + epoch) % (2**32))
                    if self.arch.dropout_input or self.arch.dropout_hidden else None)
                idx_dev = xp.asarray(order) if order is not None else None
                for b in range(self.steps_per_epoch):
                    if step >= total_steps:
                        break
                    if idx_dev is None:
                        Xb, yb = X, y
                    else:
                        idx = idx_dev[b * self.batch:(b + 1) * self.batch]
                        Xb, yb = X[idx], y[idx]
                    state = self.stepper.step(Xb, yb, drop_rng, state)
                    failpoint("step")
                    step += 1
                    samples += int(Xb.shape[0])
                    if isinstance(log_every, int) and step % log_every == 0:
                        if log_point():
                            status = "cancelled"
                            break
                        if time_limit and time.perf_counter() - t0 > time_limit:
                            break
                if status != "succeeded":
                    break
                epoch += 1
                at_epoch_end = step % self.steps_per_epoch == 0 or step >= total_steps
                if log_every == "epoch" and at_epoch_end and log_point():
                    status = "cancelled"
                    break
                if es is not None and self._early_stop(
                        es, epoch, best,  # a log point at this step has measured it already
                        final_metrics(progress) if progress.get("step") == step else None):
                    break
                if time_limit and time.perf_counter() - t0 > time_limit:
                    status = "failed"
                    error = f"training.time_limit_s: stopped after {time_limit:g} s"
                    break
                end = epoch >= epochs or step >= total_steps
                if (epoch % int(tr["checkpoint_every"]) == 0 and not end) or (
                        end and spec.get("_checkpoint_end")):  # a search trial at its rung
                    self.hooks.checkpoint(epoch, step, self._snapshot(
                        epoch, step, time.perf_counter() - t0, state, best))
            if status == "succeeded" and progress.get("step") != step:
                log_point()  # the last step, when log_every does not divide the run
        except Diverged as exc:
            status, error = "diverged", str(exc)
        run_s = time.perf_counter() - t0
        final = final_metrics(progress)
        if status == "succeeded" and es is not None and best["params"] is not None:
            net.params[...] = best["params"]
            net.running[...] = best["running"]
            names, values = metric_values(self.evaluate(), xp)
            final.update({k: float(v) for k, v in zip(names, values, strict=True)})
        final.update({"epochs": epoch, "steps": step,
                      "best_epoch": best["epoch"] if es is not None else epoch})
        extra: dict[str, Any] = {}
        if self.stepper.warnings:
            extra["warnings"] = self.stepper.warnings
        if resumed_from is not None:
            extra["resumed_from"] = resumed_from
        return Outcome(status=status, final=final, params=net.size, arrays=net.arrays(),
                       initial=initial_arrays, run_s=run_s, samples=samples, error=error,
                       last_rows=last_rows, progress=progress, extra=extra)

    def _closed_form(self, initial_arrays: dict[str, np.ndarray]) -> Outcome:
        """The exact minimiser of the regularised least-squares objective (SPEC §5)."""
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
        final = final_metrics(progress)
        final.update({"epochs": 1, "steps": 1, "best_epoch": 1})
        return Outcome("succeeded", final, self.net.size, self.net.arrays(), initial_arrays,
                       run_s, self.n_train, last_rows=rows, progress=progress)

    def _metric_rows(self, step: int, epoch: float, t: float) -> list[MetricRow]:
        names, values = metric_values(self.evaluate(), self.xp)
        return [(k, step, epoch, t, float(v)) for k, v in zip(names, values, strict=True)]

    def _early_stop(self, es: dict[str, Any], epoch: int, best: dict[str, Any],
                    measured: dict[str, Any] | None = None) -> bool:
        """Record a new best, or count a bad epoch; True when patience has run out.
        ``measured``: the current figures where a log point has just taken them."""
        metric = es["metric"]
        metrics = measured if measured and metric in measured else self.evaluate()
        if metric not in metrics:
            raise ValueError(f"regularization.early_stopping.metric: {metric} is not "
                             "measured (is data.validation 0?)")
        value = float(to_numpy(metrics[metric]))
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
                  best: dict[str, Any]) -> bytes:
        return checkpoint_bytes(epoch, step, elapsed, self.net.params, self.net.running,
                                host_state(state), best)

    def _restore(self, data: bytes, state: Any, best: dict[str, Any]
                 ) -> tuple[int, int, float, Any]:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
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
        tr.objective_and_grad(X, y, rng=rng, update_running=True, l1=not self.proximal)
        if tr.clip is not None:
            clip_by_global_norm(net.grads, float(tr.clip))
        state = first_order.apply_updates(self.transform, net.grads, state, net.params)
        if self.proximal:
            # proximal gradient (ISTA): w ← sign(w)·max(|w| − ε_k·l1, 0) on the weights, the
            # exact minimiser of ε_k·l1·‖w‖₁ + ½‖w − v‖², which sets weights to exactly 0
            xp = tr.xp
            w = net.params[..., : net.n_weights]
            shrink = self.rate(state.count - 1) * tr.l1  # ε_k of the step just taken
            w[...] = xp.sign(w) * xp.maximum(xp.abs(w) - shrink, 0)
        return state


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
    if name in second_order.NAMES:
        return MinimizerStepper(tr, name, {k: v for k, v in opt.items() if v is not None})
    return FirstOrderStepper(tr, name, opt, schedule)
