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


# ------------------------------------------------------------------------ plain SGD
def _sgd(g: Array, lr: Any, p: Array) -> None:
    p -= lr * g  # θ ← θ − ε·g


SGD = Rule("T g, T lr", "T p",
           "p -= lr * g;", _sgd)


# ------------------------------------------------------------------ momentum (torch)
def _momentum(g: Array, lr: Any, mu: Any, p: Array, b: Array) -> None:
    b[...] = mu * b + g  # b ← μ·b + g  (b₀ = 0, so b₁ = g)
    p -= lr * b  # θ ← θ − ε·b


MOMENTUM = Rule("T g, T lr, T mu", "T p, T b",
                "b = mu * b + g;"
                " p -= lr * b;", _momentum)


def _nesterov(g: Array, lr: Any, mu: Any, p: Array, b: Array) -> None:
    b[...] = mu * b + g  # b ← μ·b + g
    p -= lr * (g + mu * b)  # θ ← θ − ε·(g + μ·b), Sutskever's update in torch's form


NESTEROV = Rule("T g, T lr, T mu", "T p, T b",
                "b = mu * b + g;"
                " p -= lr * (g + mu * b);", _nesterov)


# --------------------------------------------------------------------------- AdaGrad
def _adagrad(g: Array, lr: Any, eps: Any, p: Array, s: Array) -> None:
    s += g * g  # s ← s + g²
    p -= lr * (g / (np.sqrt(s) + eps))  # θ ← θ − ε·g/(√s + δ)


ADAGRAD = Rule("T g, T lr, T eps", "T p, T s",
               "s += g * g;"
               " p -= lr * (g / (sqrt(s) + eps));", _adagrad)


# --------------------------------------------------------------------------- RMSProp
def _rmsprop(g: Array, lr: Any, alpha: Any, one_minus_alpha: Any, eps: Any, p: Array,
             v: Array) -> None:
    v[...] = alpha * v + one_minus_alpha * g * g  # v ← ρ·v + (1−ρ)·g²
    p -= lr * (g / (np.sqrt(v) + eps))  # θ ← θ − ε·g/(√v + δ)


RMSPROP = Rule("T g, T lr, T alpha, T one_minus_alpha, T eps", "T p, T v",
               "v = alpha * v + one_minus_alpha * g * g;"
               " p -= lr * (g / (sqrt(v) + eps));", _rmsprop)


def _rmsprop_centered(g: Array, lr: Any, alpha: Any, one_minus_alpha: Any, eps: Any,
                      p: Array, v: Array, m: Array) -> None:
    v[...] = alpha * v + one_minus_alpha * g * g  # v ← ρ·v + (1−ρ)·g²
    m[...] = alpha * m + one_minus_alpha * g  # ḡ ← ρ·ḡ + (1−ρ)·g
    p -= lr * (g / (np.sqrt(v - m * m) + eps))  # θ ← θ − ε·g/(√(v − ḡ²) + δ)


RMSPROP_CENTERED = Rule("T g, T lr, T alpha, T one_minus_alpha, T eps", "T p, T v, T m",
                        "v = alpha * v + one_minus_alpha * g * g;"
                        " m = alpha * m + one_minus_alpha * g;"
                        " p -= lr * (g / (sqrt(v - m * m) + eps));", _rmsprop_centered)


def _rmsprop_momentum(g: Array, lr: Any, alpha: Any, one_minus_alpha: Any, eps: Any,
                      mu: Any, p: Array, v: Array, b: Array) -> None:
    v[...] = alpha * v + one_minus_alpha * g * g  # v ← ρ·v + (1−ρ)·g²
    b[...] = mu * b + g / (np.sqrt(v) + eps)  # b ← μ·b + g/(√v + δ)
    p -= lr * b  # θ ← θ − ε·b


RMSPROP_MOMENTUM = Rule("T g, T lr, T alpha, T one_minus_alpha, T eps, T mu",
                        "T p, T v, T b",
                        "v = alpha * v + one_minus_alpha * g * g;"
                        " b = mu * b + g / (sqrt(v) + eps);"
                        " p -= lr * b;", _rmsprop_momentum)


def _rmsprop_centered_momentum(g: Array, lr: Any, alpha: Any, one_minus_alpha: Any,
                               eps: Any, mu: Any, p: Array, v: Array, m: Array,
                               b: Array) -> None:
    v[...] = alpha * v + one_minus_alpha * g * g  # v ← ρ·v + (1−ρ)·g²
    m[...] = alpha * m + one_minus_alpha * g  # ḡ ← ρ·ḡ + (1−ρ)·g
    b[...] = mu * b + g / (np.sqrt(v - m * m) + eps)  # b ← μ·b + g/(√(v − ḡ²) + δ)
    p -= lr * b  # θ ← θ − ε·b


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
    m *= b1  # m ← β₁·m + (1−β₁)·g
    m += one_minus_b1 * g
    v *= b2  # v ← β₂·v + (1−β₂)·g²
    v += one_minus_b2 * g * g
    bc1 = float(1 - b1 ** int(t))  # 1 − β₁ᵗ  (t counts steps from 1; a host scalar here)
    bc2 = float(1 - b2 ** int(t))  # 1 − β₂ᵗ
    denom = np.sqrt(v / bc2)  # θ ← θ − ε·m̂/(√v̂ + δ)
    denom += eps
    p -= lr * ((m / bc1) / denom)


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
    m[...] = b1 * m + one_minus_b1 * g  # m ← β₁·m + (1−β₁)·g
    v[...] = b2 * v + one_minus_b2 * g * g  # v ← β₂·v + (1−β₂)·g²
    np.maximum(vmax, v, out=vmax)  # v_max ← max(v_max, v)
    bc1 = float(1 - b1 ** int(t))  # 1 − β₁ᵗ
    bc2 = float(1 - b2 ** int(t))  # 1 − β₂ᵗ
    p -= lr * ((m / bc1) / (np.sqrt(vmax / bc2) + eps))  # θ ← θ − ε·m̂/(√(v_max/(1−β₂ᵗ)) + δ)


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
    v[...] = rho * v + one_minus_rho * g * g  # v ← ρ·v + (1−ρ)·g²
    d = np.sqrt(u + eps) / np.sqrt(v + eps) * g  # Δ = √(u + δ)/√(v + δ)·g
    u[...] = rho * u + one_minus_rho * d * d  # u ← ρ·u + (1−ρ)·Δ²
    p -= lr * d  # θ ← θ − ε·Δ


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
    n_in = len(rule.in_params.split(","))
    outputs = args[n_in:]
    if array_module(*outputs) is np:
        rule.reference(*args)
    else:
        kernel(name)(*args)
