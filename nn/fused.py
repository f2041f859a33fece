"""Fused first-order updates: one ``cupy.ElementwiseKernel`` launch per step (after Chainer).

Each rule updates the flat parameter buffer and its optimizer state **in place**, in one
pass over the buffer: ``launch(name, *inputs, *outputs)``. The inputs are the gradient and
the hyperparameters (Python scalars, or 0-d arrays such as a scheduled learning rate or the
step count); the outputs are the buffer ``p`` and the state arrays, read and written.

Beside every kernel stands its NumPy twin, the readable reference, line for line the same
formula (docs/optimizers.md; ε is ``lr``): it runs when the arrays are NumPy arrays, so the
plumbing in
``optimizers.py`` is tested on any machine, and on a GPU the kernel is compared with it.
The kernel sources are C++ over the type ``T`` of the buffer (float or double). NumPy
training comes through the twins too (``optimizers.apply_updates``): updating the state in
place saves the allocations of the pure transforms, which dominate a small model's step.

CuPy comes from ``backend`` (the one module that imports it); kernels are built on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .backend import array_module, cupy

Array = Any


class Rule(NamedTuple):
    """One update rule: the kernel's parameter lists and body, and its NumPy twin."""

    in_params: str
    out_params: str
    operation: str
    reference: Callable[..., None]


_LOCAL = threading.local()  # per thread: two trainers in one process never share scratch


def _scratch(like: Array, k: int = 0) -> Array:
    """Scratch array ``k`` of ``like``'s shape and dtype, kept per thread and reused, so a
    twin's intermediate results go to ``out=`` buffers instead of fresh allocations. Its
    contents are garbage between calls; nothing is kept in it (not optimizer state)."""
    cache = getattr(_LOCAL, "buffers", None)
    if cache is None:
        cache = _LOCAL.buffers = {}
    key = (like.shape, like.dtype.str, k)
    buf = cache.get(key)
    if buf is None:
        if len(cache) > 32:  # shapes of an earlier run
            cache.clear()
        buf = cache[key] = np.empty_like(like)
    return buf


def _host(x: Any) -> Any:
    """A 0-d value as a Python float (weak in NumPy 2's promotion, as a scalar
    hyperparameter is), an array of per-replica values as it is."""
    return float(x) if np.ndim(x) == 0 else x


def _keeps(buf: Array, x: Any) -> bool:
    """Whether ``buf op x`` stays in ``buf``'s dtype (an ``out=buf`` then rounds as the
    expression does); a float64 0-d rate against a float32 buffer does not."""
    return isinstance(x, (int, float)) or np.result_type(buf.dtype, x) == buf.dtype


def _scaled(x: Array, rate: Any, out: Array) -> Array:
    """``rate · x`` in ``out`` where that rounds as the expression does, else a new array."""
    if _keeps(out, rate):
        return np.multiply(x, rate, out=out)
    return rate * x


# Every twin below does exactly the operations of its formula in the formula's order (the
# results are bit for bit those of the plain expression), with intermediates written to
# scratch buffers: the passes over the buffer are counted in each comment.
# ------------------------------------------------------------------------ plain SGD
def _sgd(g: Array, lr: Any, p: Array) -> None:
    p -= _scaled(g, lr, _scratch(p))  # θ ← θ − ε·g  (2 passes)


SGD = Rule("T g, T lr", "T p",
           "p -= lr * g;", _sgd)


# ------------------------------------------------------------------ momentum (torch)
def _momentum(g: Array, lr: Any, mu: Any, p: Array, b: Array) -> None:
    b *= mu  # b ← μ·b + g  (b₀ = 0, so b₁ = g)
    b += g
    p -= _scaled(b, lr, _scratch(p))  # θ ← θ − ε·b  (4 passes in all)


MOMENTUM = Rule("T g, T lr, T mu", "T p, T b",
                "b = mu * b + g;"
                " p -= lr * b;", _momentum)


def _nesterov(g: Array, lr: Any, mu: Any, p: Array, b: Array) -> None:
    b *= mu  # b ← μ·b + g
    b += g
    t = np.multiply(b, mu, out=_scratch(p))  # θ ← θ − ε·(g + μ·b), Sutskever's update
    t += g  # in torch's form  (6 passes in all)
    p -= _scaled(t, lr, t)


NESTEROV = Rule("T g, T lr, T mu", "T p, T b",
                "b = mu * b + g;"
                " p -= lr * (g + mu * b);", _nesterov)


# --------------------------------------------------------------------------- AdaGrad
def _adagrad(g: Array, lr: Any, eps: Any, p: Array, s: Array) -> None:
    t = _scratch(p)
    s += np.multiply(g, g, out=t)  # s ← s + g²
    _step_over_root(g, s, lr, eps, p, t)  # θ ← θ − ε·g/(√s + δ)  (7 passes in all)


def _step_over_root(g: Array, s: Array, lr: Any, eps: Any, p: Array, t: Array) -> None:
    """θ ← θ − ε·(g/(√s + δ)) through the scratch ``t``: 5 passes."""
    np.sqrt(s, out=t)
    t += eps
    np.divide(g, t, out=t)
    p -= _scaled(t, lr, t)


def _ema_square(v: Array, g: Array, rho: Any, one_minus_rho: Any, t: Array) -> None:
    """v ← ρ·v + (1−ρ)·g·g in place, through the scratch ``t``: 4 passes."""
    v *= rho
    np.multiply(g, one_minus_rho, out=t)
    t *= g
    v += t


ADAGRAD = Rule("T g, T lr, T eps", "T p, T s",
               "s += g * g;"
               " p -= lr * (g / (sqrt(s) + eps));", _adagrad)


# --------------------------------------------------------------------------- RMSProp
def _rmsprop(g: Array, lr: Any, alpha: Any, one_minus_alpha: Any, eps: Any, p: Array,
             v: Array) -> None:
    t = _scratch(p)
    _ema_square(v, g, alpha, one_minus_alpha, t)  # v ← ρ·v + (1−ρ)·g²
    _step_over_root(g, v, lr, eps, p, t)  # θ ← θ − ε·g/(√v + δ)  (9 passes in all)


RMSPROP = Rule("T g, T lr, T alpha, T one_minus_alpha, T eps", "T p, T v",
               "v = alpha * v + one_minus_alpha * g * g;"
               " p -= lr * (g / (sqrt(v) + eps));", _rmsprop)


def _rmsprop_centered(g: Array, lr: Any, alpha: Any, one_minus_alpha: Any, eps: Any,
                      p: Array, v: Array, m: Array) -> None:
    t = _scratch(p)
    _ema_square(v, g, alpha, one_minus_alpha, t)  # v ← ρ·v + (1−ρ)·g²
    m *= alpha  # ḡ ← ρ·ḡ + (1−ρ)·g
    m += np.multiply(g, one_minus_alpha, out=t)
    np.multiply(m, m, out=t)  # θ ← θ − ε·g/(√(v − ḡ²) + δ)
    np.subtract(v, t, out=t)
    _step_over_root(g, t, lr, eps, p, t)  # (15 passes in all)


RMSPROP_CENTERED = Rule("T g, T lr, T alpha, T one_minus_alpha, T eps", "T p, T v, T m",
                        "v = alpha * v + one_minus_alpha * g * g;"
                        " m = alpha * m + one_minus_alpha * g;"
                        " p -= lr * (g / (sqrt(v - m * m) + eps));", _rmsprop_centered)


def _rmsprop_momentum(g: Array, lr: Any, alpha: Any, one_minus_alpha: Any, eps: Any,
                      mu: Any, p: Array, v: Array, b: Array) -> None:
    t = _scratch(p)
    _ema_square(v, g, alpha, one_minus_alpha, t)  # v ← ρ·v + (1−ρ)·g²
    _momentum_over_root(g, v, eps, mu, b, t)  # b ← μ·b + g/(√v + δ)
    p -= _scaled(b, lr, t)  # θ ← θ − ε·b  (12 passes in all)


def _momentum_over_root(g: Array, s: Array, eps: Any, mu: Any, b: Array, t: Array) -> None:
    """b ← μ·b + g/(√s + δ) in place, through the scratch ``t``: 5 passes."""
    np.sqrt(s, out=t)
    t += eps
    np.divide(g, t, out=t)
    b *= mu
    b += t


RMSPROP_MOMENTUM = Rule("T g, T lr, T alpha, T one_minus_alpha, T eps, T mu",
                        "T p, T v, T b",
                        "v = alpha * v + one_minus_alpha * g * g;"
                        " b = mu * b + g / (sqrt(v) + eps);"
                        " p -= lr * b;", _rmsprop_momentum)


def _rmsprop_centered_momentum(g: Array, lr: Any, alpha: Any, one_minus_alpha: Any,
                               eps: Any, mu: Any, p: Array, v: Array, m: Array,
                               b: Array) -> None:
    t = _scratch(p)
    _ema_square(v, g, alpha, one_minus_alpha, t)  # v ← ρ·v + (1−ρ)·g²
    m *= alpha  # ḡ ← ρ·ḡ + (1−ρ)·g
    m += np.multiply(g, one_minus_alpha, out=t)
    np.multiply(m, m, out=t)  # b ← μ·b + g/(√(v − ḡ²) + δ)
    np.subtract(v, t, out=t)
    _momentum_over_root(g, t, eps, mu, b, t)
    p -= _scaled(b, lr, t)  # θ ← θ − ε·b  (17 passes in all)


RMSPROP_CENTERED_MOMENTUM = Rule(
    "T g, T lr, T alpha, T one_minus_alpha, T eps, T mu", "T p, T v, T m, T b",
    "v = alpha * v + one_minus_alpha * g * g;"
    " m = alpha * m + one_minus_alpha * g;"
    " b = mu * b + g / (sqrt(v - m * m) + eps);"
    " p -= lr * b;", _rmsprop_centered_momentum)


# ------------------------------------------------------------------------------ Adam
# The scalars come as float64: in float32, 1 − β₂ and 1 − β₂ᵗ would lose most of their
# digits to cancellation (1 − 0.999f is 1.3e-5 off in relative terms). As on the NumPy path,
# the moments are kept in T and the step m̂/(√v̂ + δ) is formed in float64.
def _adam(g: Array, lr: Any, b1: float, one_minus_b1: float, b2: float, one_minus_b2: float,
          eps: Any, t: Array, p: Array, m: Array, v: Array) -> None:
    s = _scratch(p)
    m *= b1  # m ← β₁·m + (1−β₁)·g
    m += np.multiply(g, one_minus_b1, out=s)
    _ema_square(v, g, b2, one_minus_b2, s)  # v ← β₂·v + (1−β₂)·g²
    _adam_step(m, v, lr, b1, b2, eps, t, p, s)  # (14 passes in all)


def _adam_step(m: Array, v: Array, lr: Any, b1: Any, b2: Any, eps: Any, t: Array, p: Array,
               s: Array) -> None:
    """θ ← θ − ε·m̂/(√v̂ + δ), m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ), through the scratch
    ``s`` and a second one: 7 passes."""
    bc1 = _host(1 - b1 ** int(t))  # 1 − β₁ᵗ  (t counts steps from 1; a host scalar here)
    bc2 = _host(1 - b2 ** int(t))  # 1 − β₂ᵗ
    denom = np.divide(v, bc2, out=s)
    np.sqrt(denom, out=denom)
    denom += eps
    step = np.divide(m, bc1, out=_scratch(p, 1))
    step /= denom
    p -= _scaled(step, lr, step)


_ADAM_IN = ("T g, float64 lr, float64 b1, float64 one_minus_b1, float64 b2,"
            " float64 one_minus_b2, float64 eps, int64 t")
ADAM = Rule(_ADAM_IN, "T p, T m, T v",
            "m = (T)b1 * m + (T)one_minus_b1 * g;"
            " v = (T)b2 * v + (T)one_minus_b2 * g * g;"
            " const double bc1 = 1 - pow(b1, (double)t);"
            " const double bc2 = 1 - pow(b2, (double)t);"
            " p -= lr * ((m / bc1) / (sqrt(v / bc2) + eps));", _adam)


def _adam_amsgrad(g: Array, lr: Any, b1: float, one_minus_b1: float, b2: float,
                  one_minus_b2: float, eps: Any, t: Array, p: Array, m: Array, v: Array,
                  vmax: Array) -> None:
    s = _scratch(p)
    m *= b1  # m ← β₁·m + (1−β₁)·g
    m += np.multiply(g, one_minus_b1, out=s)
    _ema_square(v, g, b2, one_minus_b2, s)  # v ← β₂·v + (1−β₂)·g²
    np.maximum(vmax, v, out=vmax)  # v_max ← max(v_max, v)
    _adam_step(m, vmax, lr, b1, b2, eps, t, p, s)  # θ ← θ − ε·m̂/(√(v_max/(1−β₂ᵗ)) + δ)


ADAM_AMSGRAD = Rule(_ADAM_IN, "T p, T m, T v, T vmax",
                    "m = (T)b1 * m + (T)one_minus_b1 * g;"
                    " v = (T)b2 * v + (T)one_minus_b2 * g * g;"
                    " vmax = v > vmax ? v : vmax;"
                    " const double bc1 = 1 - pow(b1, (double)t);"
                    " const double bc2 = 1 - pow(b2, (double)t);"
                    " p -= lr * ((m / bc1) / (sqrt(vmax / bc2) + eps));", _adam_amsgrad)


# -------------------------------------------------------------------------- AdaDelta
def _adadelta(g: Array, lr: Any, rho: Any, one_minus_rho: Any, eps: Any, p: Array,
              v: Array, u: Array) -> None:
    t, d = _scratch(p), _scratch(p, 1)
    _ema_square(v, g, rho, one_minus_rho, t)  # v ← ρ·v + (1−ρ)·g²
    np.add(u, eps, out=d)  # Δ = √(u + δ)/√(v + δ)·g
    np.sqrt(d, out=d)
    np.add(v, eps, out=t)
    np.sqrt(t, out=t)
    d /= t
    d *= g
    _ema_square(u, d, rho, one_minus_rho, t)  # u ← ρ·u + (1−ρ)·Δ²
    p -= _scaled(d, lr, d)  # θ ← θ − ε·Δ  (16 passes in all)


ADADELTA = Rule("T g, T lr, T rho, T one_minus_rho, T eps", "T p, T v, T u",
                "v = rho * v + one_minus_rho * g * g;"
                " const T d = sqrt(u + eps) / sqrt(v + eps) * g;"
                " u = rho * u + one_minus_rho * d * d;"
                " p -= lr * d;", _adadelta)


# ------------------------------------------- RMSProp with Nesterov momentum (alg. 8.6)
def _rmsprop_nesterov(g: Array, lr: Any, alpha: Any, one_minus_alpha: Any, mu: Any,
                      eps: Any, p: Array, r: Array, v: Array) -> None:
    # p is the interim point φ = θ + α·v, where g was taken (see optimizers.rmsprop_nesterov)
    r[...] = alpha * r + one_minus_alpha * g * g  # r ← ρ·r + (1−ρ)·g²
    v_old = v.copy()
    v[...] = mu * v - lr * g / np.sqrt(r + eps)  # v ← α·v − ε·g/√(r + δ)
    p += (1 + mu) * v - mu * v_old  # φ ← φ + (1+α)·v₊ − α·v  (θ ← θ + v₊)


RMSPROP_NESTEROV = Rule("T g, T lr, T alpha, T one_minus_alpha, T mu, T eps",
                        "T p, T r, T v",
                        "r = alpha * r + one_minus_alpha * g * g;"
                        " const T v_old = v;"
                        " v = mu * v - lr * g / sqrt(r + eps);"
                        " p += (1 + mu) * v - mu * v_old;", _rmsprop_nesterov)


# ------------------------------------------------------------ delta-bar-delta (Jacobs)
def _delta_bar_delta(g: Array, kappa: Any, one_minus_phi: Any, theta: Any,
                     one_minus_theta: Any, p: Array, rate: Array, bar: Array) -> None:
    agree = bar * g  # d̄·g: does g keep the sign of the running average?
    rate[...] = np.where(agree > 0, rate + kappa,  # ε ← ε + κ while it does
                         np.where(agree < 0, rate * one_minus_phi, rate))  # ε ← (1−φ)·ε if not
    bar[...] = one_minus_theta * g + theta * bar  # d̄ ← (1−θ)·g + θ·d̄
    p -= rate * g  # θ ← θ − ε ⊙ g


DELTA_BAR_DELTA = Rule("T g, T kappa, T one_minus_phi, T theta, T one_minus_theta",
                       "T p, T rate, T bar",
                       "const T agree = bar * g;"
                       " if (agree > 0) { rate = rate + kappa; }"
                       " else if (agree < 0) { rate = rate * one_minus_phi; }"
                       " bar = one_minus_theta * g + theta * bar;"
                       " p -= rate * g;", _delta_bar_delta)


RULES: dict[str, Rule] = {
    "sgd": SGD,
    "momentum": MOMENTUM,
    "nesterov": NESTEROV,
    "adagrad": ADAGRAD,
    "rmsprop": RMSPROP,
    "rmsprop_centered": RMSPROP_CENTERED,
    "rmsprop_momentum": RMSPROP_MOMENTUM,
    "rmsprop_centered_momentum": RMSPROP_CENTERED_MOMENTUM,
    "adam": ADAM,
    "adam_amsgrad": ADAM_AMSGRAD,
    "adadelta": ADADELTA,
    "rmsprop_nesterov": RMSPROP_NESTEROV,
    "delta_bar_delta": DELTA_BAR_DELTA,
}
"""Every fused rule by name; ``launch`` takes its inputs, then its outputs, in list order."""

_KERNELS: dict[str, Any] = {}


def kernel(name: str) -> Any:
    """The ``cupy.ElementwiseKernel`` of rule ``name``, built on first use."""
    if cupy is None:
        raise RuntimeError("fused kernels need CuPy")
    if name not in _KERNELS:
        rule = RULES[name]
        _KERNELS[name] = cupy.ElementwiseKernel(rule.in_params, rule.out_params,
                                                rule.operation, f"gradq_{name}")
    return _KERNELS[name]


def launch(name: str, *args: Any) -> None:
    """Run rule ``name`` in place: the kernel on CuPy arrays, its NumPy twin otherwise.

    ``args`` are the rule's inputs then its outputs; the outputs (the buffer and the
    state arrays, all of the buffer's shape and dtype) are overwritten.
    """
    rule = RULES[name]
    params = [p.split()[0] for p in rule.in_params.split(",")]
    outputs = args[len(params):]
    if array_module(*outputs) is np:
        rule.reference(*args)
        return
    # per-replica (R, 1) values of a parameter declared float64 (Adam's) come in the
    # buffer's dtype: the kernel reads them as float64 arrays, broadcast over the rows
    inputs = tuple(a.astype(kind) if kind != "T" and getattr(a, "ndim", 0) and a.dtype != kind
                   else a for kind, a in zip(params, args, strict=False))
    kernel(name)(*inputs, *outputs)
