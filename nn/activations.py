"""Hidden-unit activations, each with its derivative beside it (Goodfellow et al., §6.3).

Every function is written on the array it receives (NumPy or CuPy) and compares only the
real part of its input, so the same code runs on complex arrays: ``gradq.nn.network`` uses
the complex step (``f(x + i·h·v)``) to get exact Hessian–vector products.

At 0 the rectifiers are not differentiable; we use the one-sided derivative from the left
(relu'(0) = 0, leaky_relu'(0) = 0.01, prelu'(0) = a), as every framework does, except for
abs, whose left derivative would be −1: abs'(0) = sign(0) = 0, the subgradient in the middle
of [−1, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .backend import array_module

Array = Any

LEAKY_SLOPE = 0.01


@dataclass(frozen=True)
class Activation:
    """An elementwise unit g: ``forward(z) = g(z)``, ``derivative(z, a) = g'(z)`` given a = g(z)."""

    name: str
    forward: Callable[[Array], Array]
    derivative: Callable[[Array, Array], Array]


def _relu(z: Array) -> Array:
    return z * (z.real > 0)  # g(z) = max(0, z)


def _relu_d(z: Array, a: Array) -> Array:
    return (z.real > 0).astype(z.real.dtype)  # 1 for z > 0, else 0


def _leaky(z: Array) -> Array:
    xp = array_module(z)
    return xp.where(z.real > 0, z, LEAKY_SLOPE * z)  # max(0, z) + 0.01·min(0, z)


def _leaky_d(z: Array, a: Array) -> Array:
    xp = array_module(z)
    return xp.where(z.real > 0, 1.0, LEAKY_SLOPE).astype(z.real.dtype)


def _abs(z: Array) -> Array:
    xp = array_module(z)
    return z * xp.sign(z.real)  # |z|, absolute-value rectification (Jarrett et al. 2009)


def _abs_d(z: Array, a: Array) -> Array:
    xp = array_module(z)
    return xp.sign(z.real)


def _tanh(z: Array) -> Array:
    xp = array_module(z)
    return xp.tanh(z)


def _tanh_d(z: Array, a: Array) -> Array:
    return 1 - a * a  # tanh' = 1 − tanh²


def sigmoid(z: Array) -> Array:
    """σ(z) = 1/(1 + e^{−z}), evaluated without overflow for large |z|."""
    xp = array_module(z)
    pos = z.real >= 0
    e = xp.exp(xp.where(pos, -z, z))  # e^{−|z|} ∈ (0, 1]
    return xp.where(pos, 1 / (1 + e), e / (1 + e))


def _sigmoid_d(z: Array, a: Array) -> Array:
    return a * (1 - a)  # σ' = σ(1 − σ)


def _linear(z: Array) -> Array:
    return z


def _linear_d(z: Array, a: Array) -> Array:
    xp = array_module(z)
    return xp.ones_like(z.real)


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation("relu", _relu, _relu_d),
    "leaky_relu": Activation("leaky_relu", _leaky, _leaky_d),
    "abs": Activation("abs", _abs, _abs_d),
    "tanh": Activation("tanh", _tanh, _tanh_d),
    "sigmoid": Activation("sigmoid", sigmoid, _sigmoid_d),
    "linear": Activation("linear", _linear, _linear_d),
}

# prelu has a learned slope per unit, so it is a layer with a parameter (network.PReLU),
# not a fixed elementwise function; it is listed here so specs can name it.
NAMES: tuple[str, ...] = (*ACTIVATIONS, "prelu")


def prelu(z: Array, slope: Array) -> Array:
    """g(z) = z for z > 0, a·z otherwise, with a learned slope a per unit (He et al. 2015)."""
    xp = array_module(z)
    return xp.where(z.real > 0, z, slope * z)


def prelu_backward(z: Array, slope: Array, grad: Array) -> tuple[Array, Array]:
    """Return (∂L/∂z, ∂L/∂a) given ∂L/∂g; ∂g/∂a = min(0, z), summed over the batch axis."""
    xp = array_module(z)
    pos = z.real > 0
    dz = grad * xp.where(pos, 1.0, slope)
    da = (grad * xp.where(pos, 0.0, z)).sum(axis=-2, keepdims=True)
    return dz, da
