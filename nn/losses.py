"""Output units and their losses (Goodfellow et al., §6.2.2), each a mean over samples.

``forward(z, y)`` returns the loss per replica (a 0-d array, or shape (R,) for stacked
replicas), ``gradient(z, y)`` its derivative with respect to the pre-activation ``z``.
Both are written so that complex inputs (the complex step) give exact derivatives.

- softmax + categorical cross-entropy in nats, through log-sum-exp: logits of ±1000 do not
  overflow;
- sigmoid + Bernoulli cross-entropy, as softplus(z) − y·z;
- linear + squared error, Σ over outputs of (z − y)², without a ½.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .activations import sigmoid
from .backend import array_module

Array = Any


def log_softmax(z: Array) -> Array:
    """log softmax(z) = z − max z − log Σ exp(z − max z), along the last axis."""
    xp = array_module(z)
    shifted = z - z.real.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(z: Array) -> Array:
    """softmax along the last axis, overflow-free."""
    xp = array_module(z)
    e = xp.exp(z - z.real.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _pick(a: Array, y: Array) -> Array:
    xp = array_module(a)
    return xp.take_along_axis(a, y[..., None], axis=-1)[..., 0]


def _ce_forward(z: Array, y: Array) -> Array:
    return -_pick(log_softmax(z), y).mean(axis=-1)  # −(1/n) Σ log p(y_i | x_i)


def _ce_gradient(z: Array, y: Array) -> Array:
    xp = array_module(z)
    onehot = xp.arange(z.shape[-1]) == y[..., None]
    return (softmax(z) - onehot) / z.shape[-2]  # (p − onehot(y)) / n


def softplus(z: Array) -> Array:
    """log(1 + e^z) = max(z, 0) + log(1 + e^{−|z|}), overflow-free."""
    xp = array_module(z)
    pos = z.real > 0
    return xp.where(pos, z, 0) + xp.log1p(xp.exp(xp.where(pos, -z, z)))


def _bce_forward(z: Array, y: Array) -> Array:
    # −[y log σ(z) + (1 − y) log(1 − σ(z))] = softplus(z) − y·z, summed over outputs
    return (softplus(z) - y * z).sum(axis=-1).mean(axis=-1)


def _bce_gradient(z: Array, y: Array) -> Array:
    return (sigmoid(z) - y) / z.shape[-2]


def _se_forward(z: Array, y: Array) -> Array:
    d = z - y
    return (d * d).sum(axis=-1).mean(axis=-1)  # (1/n) Σ_i ‖z_i − y_i‖²


def _se_gradient(z: Array, y: Array) -> Array:
    return 2 * (z - y) / z.shape[-2]


def _identity(z: Array) -> Array:
    return z


@dataclass(frozen=True)
class Output:
    """An output unit with its matched loss: predictions = ``link(z)``."""

    name: str
    loss_name: str
    forward: Callable[[Array, Array], Array]
    gradient: Callable[[Array, Array], Array]
    link: Callable[[Array], Array]


OUTPUTS: dict[str, Output] = {
    "softmax": Output("softmax", "cross_entropy", _ce_forward, _ce_gradient, softmax),
    "sigmoid": Output("sigmoid", "binary_cross_entropy", _bce_forward, _bce_gradient, sigmoid),
    "linear": Output("linear", "squared_error", _se_forward, _se_gradient, _identity),
}
