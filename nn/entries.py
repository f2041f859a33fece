"""The registry's entries: every built-in optimizer, in docs/spec.md's order (``registry.py``).

An entry names its defaults and two builders over the filled-in hyperparameters ``h`` and
the learning-rate schedule ``sched`` (None, or a function of the step count): the transform
(a chain of ``optimizers``' small transforms) and the fused in-place step over ``nn.fused``,
which returns a state laid out exactly as the transform's, so checkpoints and the two paths
interchange. To add an optimizer, add one ``register`` call here, its rule in ``fused.py``
and its test (docs/optimizers.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import fused
from .backend import to_numpy
from .optimizers import (
    AdamState,
    DeltaBarDeltaState,
    RmsNesterovState,
    ScheduleState,
    _rate,
    chain,
    delta_bar_delta,
    rmsprop_nesterov,
    scale_by_adadelta,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    trace,
)
from .registry import Optimizer, register

Array = Any
Sched = Callable[[Array], Array] | None
Step = Callable[[Array, Any, Array], Any]


def _rate_of(h: dict[str, Any], sched: Sched) -> Callable[[Array, Array], Any]:
    """ε_k at step ``count`` in the gradient's dtype."""
    def rate(count: Array, g: Array) -> Any:
        return _rate(h["lr"], sched, count, g.dtype)
    return rate


# ----------------------------------------------------------------------------- SGD
def _sgd(h: dict[str, Any], sched: Sched) -> Any:
    return scale_by_learning_rate(h["lr"], sched)


def _sgd_fused(h: dict[str, Any], sched: Sched) -> Step:
    rate = _rate_of(h, sched)

    def sgd(g: Array, state: ScheduleState, p: Array) -> ScheduleState:
        fused.launch("sgd", g, rate(state.count, g), p)
        return ScheduleState(state.count + 1)
    return sgd


register(Optimizer("sgd", "first_order", {"lr": 0.01}, "stochastic gradient descent",
                   _sgd, _sgd_fused))


# ------------------------------------------------------------------------ momentum
def _momentum_builders(nesterov: bool) -> tuple[Callable, Callable]:
    name = "nesterov" if nesterov else "momentum"

    def transform(h: dict[str, Any], sched: Sched) -> Any:
        return chain(trace(h["momentum"], nesterov=nesterov),
                     scale_by_learning_rate(h["lr"], sched))

    def fused_step(h: dict[str, Any], sched: Sched) -> Step:
        rate = _rate_of(h, sched)

        def momentum(g: Array, state: tuple, p: Array) -> tuple:
            tr, sc = state
            fused.launch(name, g, rate(sc.count, g), h["momentum"], p, tr.buf)
            return tr, ScheduleState(sc.count + 1)
        return momentum
    return transform, fused_step


register(Optimizer("momentum", "first_order", {"lr": 0.01, "momentum": 0.9},
                   "SGD with momentum", *_momentum_builders(False)))
register(Optimizer("nesterov", "first_order", {"lr": 0.01, "momentum": 0.9},
                   "SGD with Nesterov momentum", *_momentum_builders(True)))


# ------------------------------------------------------------------------- AdaGrad
def _adagrad(h: dict[str, Any], sched: Sched) -> Any:
    return chain(scale_by_adagrad(h["eps"]), scale_by_learning_rate(h["lr"], sched))


def _adagrad_fused(h: dict[str, Any], sched: Sched) -> Step:
    rate = _rate_of(h, sched)

    def adagrad(g: Array, state: tuple, p: Array) -> tuple:
        ad, sc = state
        fused.launch("adagrad", g, rate(sc.count, g), h["eps"], p, ad.sum_sq)
        return ad, ScheduleState(sc.count + 1)
    return adagrad


register(Optimizer("adagrad", "first_order", {"lr": 0.01, "eps": 1e-10}, "AdaGrad",
                   _adagrad, _adagrad_fused))


# ------------------------------------------------------------------------- RMSProp
def _rmsprop(h: dict[str, Any], sched: Sched) -> Any:
    parts = [scale_by_rms(h["alpha"], h["eps"], h["centered"])]
    if np.any(to_numpy(h["momentum"]) > 0):  # per-replica momenta may live on the GPU
        parts.append(trace(h["momentum"]))
    return chain(*parts, scale_by_learning_rate(h["lr"], sched))


def _rmsprop_fused(h: dict[str, Any], sched: Sched) -> Step:
    rate = _rate_of(h, sched)
    centered = h["centered"]
    with_momentum = bool(np.any(to_numpy(h["momentum"]) > 0))  # a group's all are, or none

    def rmsprop(g: Array, state: tuple, p: Array) -> tuple:
        rms, sc = state[0], state[-1]
        args = [g, rate(sc.count, g), h["alpha"], 1 - h["alpha"], h["eps"]]
        if with_momentum:
            tr = state[1]
            args.append(h["momentum"])
            outs = [p, rms.sq, rms.mean, tr.buf] if centered else [p, rms.sq, tr.buf]
            rule = "rmsprop_centered_momentum" if centered else "rmsprop_momentum"
            fused.launch(rule, *args, *outs)
            return rms, tr, ScheduleState(sc.count + 1)
        outs = [p, rms.sq, rms.mean] if centered else [p, rms.sq]
        fused.launch("rmsprop_centered" if centered else "rmsprop", *args, *outs)
        return rms, ScheduleState(sc.count + 1)
    return rmsprop


register(Optimizer("rmsprop", "first_order",
                   {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0,
                    "centered": False},
                   "RMSProp (optionally centered, with momentum)", _rmsprop, _rmsprop_fused))


# ---------------------------------------------------------------------------- Adam
def _adam(h: dict[str, Any], sched: Sched) -> Any:
    return chain(scale_by_adam(h["beta1"], h["beta2"], h["eps"], h["amsgrad"]),
                 scale_by_learning_rate(h["lr"], sched))


def _adam_fused(h: dict[str, Any], sched: Sched) -> Step:
    def adam(g: Array, state: tuple, p: Array) -> tuple:
        ad, sc = state
        t = ad.count + 1  # t counts steps from 1
        b1, b2 = h["beta1"], h["beta2"]
        # the step m̂/(√v̂ + δ) is float64 (bc1, bc2 are), and so is ε_k that scales it
        lr = h["lr"] if sched is None else sched(sc.count)
        args = [g, lr, b1, 1 - b1, b2, 1 - b2, h["eps"], t, p, ad.m, ad.v]
        if h["amsgrad"]:
            fused.launch("adam_amsgrad", *args, ad.v_max)
        else:
            fused.launch("adam", *args)
        return AdamState(t, ad.m, ad.v, ad.v_max), ScheduleState(sc.count + 1)
    return adam


register(Optimizer("adam", "first_order",
                   {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "amsgrad": False},
                   "Adam (optionally AMSGrad)", _adam, _adam_fused))


# ------------------------------------------------------------------------ AdaDelta
def _adadelta(h: dict[str, Any], sched: Sched) -> Any:
    return chain(scale_by_adadelta(h["rho"], h["eps"]), scale_by_learning_rate(h["lr"], sched))


def _adadelta_fused(h: dict[str, Any], sched: Sched) -> Step:
    rate = _rate_of(h, sched)

    def adadelta(g: Array, state: tuple, p: Array) -> tuple:
        ad, sc = state
        fused.launch("adadelta", g, rate(sc.count, g), h["rho"], 1 - h["rho"], h["eps"],
                     p, ad.sq, ad.delta_sq)
        return ad, ScheduleState(sc.count + 1)
    return adadelta


register(Optimizer("adadelta", "first_order", {"lr": 1.0, "rho": 0.9, "eps": 1e-6},
                   "AdaDelta", _adadelta, _adadelta_fused))


# ----------------------------------------------------------- RMSProp with Nesterov
def _rmsprop_nesterov(h: dict[str, Any], sched: Sched) -> Any:
    return rmsprop_nesterov(h["lr"], h["alpha"], h["momentum"], h["eps"], sched)


def _rmsprop_nesterov_fused(h: dict[str, Any], sched: Sched) -> Step:
    rate = _rate_of(h, sched)

    def nesterov_rms(g: Array, state: RmsNesterovState, p: Array) -> RmsNesterovState:
        fused.launch("rmsprop_nesterov", g, rate(state.count, g), h["alpha"],
                     1 - h["alpha"], h["momentum"], h["eps"], p, state.sq, state.velocity)
        return RmsNesterovState(state.count + 1, state.sq, state.velocity)
    return nesterov_rms


register(Optimizer("rmsprop_nesterov", "first_order",
                   {"lr": 0.001, "alpha": 0.9, "momentum": 0.9, "eps": 1e-6},
                   "RMSProp with Nesterov momentum (algorithm 8.6)",
                   _rmsprop_nesterov, _rmsprop_nesterov_fused))


# ----------------------------------------------------------------- delta-bar-delta
def _delta_bar_delta(h: dict[str, Any], sched: Sched) -> Any:
    return delta_bar_delta(h["lr"], h["kappa"], h["phi"], h["theta"])


def _delta_bar_delta_fused(h: dict[str, Any], sched: Sched) -> Step:
    def dbd(g: Array, state: DeltaBarDeltaState, p: Array) -> DeltaBarDeltaState:
        fused.launch("delta_bar_delta", g, h["kappa"], 1 - h["phi"], h["theta"],
                     1 - h["theta"], p, state.rates, state.bar)
        return state
    return dbd


register(Optimizer("delta_bar_delta", "first_order",
                   {"lr": 0.01, "kappa": 1e-4, "phi": 0.1, "theta": 0.7},
                   "delta-bar-delta: one adaptive rate per parameter (full batch)",
                   _delta_bar_delta, _delta_bar_delta_fused, full_batch=True, schedule=False))


# ------------------------------------------------------- closed form, second order
# these train through train/methods.py and nn/second_order.py; the registry holds their
# defaults (``hidden``: a minimizer's own, which the spec does not offer)
register(Optimizer("closed_form", "closed_form", {},
                   "the normal equations, for a linear model (ridge with l2)",
                   full_batch=True, schedule=False))
_SEARCH = {"max_evals": 25, "line_search": "strong_wolfe"}
register(Optimizer("newton", "second_order", {"damping": 1e-4, "max_params": 5000},
                   "damped Newton's method with a line search", full_batch=True,
                   schedule=False, hidden={"c1": 1e-4, "c2": 0.9, **_SEARCH}))
for _name, _summary in (("cg_fr", "nonlinear conjugate gradients (Fletcher–Reeves)"),
                        ("cg_pr", "nonlinear conjugate gradients (Polak–Ribière)")):
    register(Optimizer(_name, "second_order", {"restart": None, "c1": 1e-4, "c2": 0.1},
                       _summary, full_batch=True, schedule=False, hidden=_SEARCH))
register(Optimizer("bfgs", "second_order", {"max_params": 5000, "c1": 1e-4, "c2": 0.9},
                   "BFGS (a dense inverse Hessian: models above max_params are refused)",
                   full_batch=True, schedule=False, hidden=_SEARCH))
register(Optimizer("lbfgs", "second_order", {"history": 10, "c1": 1e-4, "c2": 0.9},
                   "limited-memory BFGS", full_batch=True, schedule=False, hidden=_SEARCH))
