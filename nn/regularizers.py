"""Norm penalties and gradient clipping on the flat buffer (Goodfellow et al., §7.1, §10.11.1).

objective = data loss + (l2/2)·Σ‖W‖² + l1·Σ|W|, over weights only, never biases. Weights are
the prefix ``params[..., :n_weights]`` of the buffer (see ``network.layout``).
"""

from __future__ import annotations

from typing import Any

from .backend import array_module

Array = Any


def penalty(params: Array, n_weights: int, l2: float, l1: float) -> Array:
    """(l2/2)·Σw² + l1·Σ|w| over the weights (0-d, or (R,) for stacked replicas)."""
    xp = array_module(params)
    w = params[..., :n_weights]
    out = xp.zeros(params.shape[:-1], dtype=params.dtype)
    if l2:
        out = out + 0.5 * l2 * (w * w).sum(axis=-1)
    if l1:
        out = out + l1 * (w * xp.sign(w.real)).sum(axis=-1)
    return out


def add_penalty_gradient(grads: Array, params: Array, n_weights: int, l2: Any,
                         l1: Any) -> None:
    """grads += l2·w + l1·sign(w) on the weights, in place (sign(0) = 0: a subgradient).

    ``l2`` and ``l1`` are floats, or (R, 1) arrays for stacked replicas whose settings
    differ (a replica's 0 then adds exactly nothing)."""
    xp = array_module(params)
    if _any(l2):
        grads[..., :n_weights] += l2 * params[..., :n_weights]
    if _any(l1):
        grads[..., :n_weights] += l1 * xp.sign(params[..., :n_weights].real)


def _any(value: Any) -> bool:
    """Whether a penalty weight (a float or a per-replica array) is non-zero anywhere."""
    return bool(value) if isinstance(value, (int, float)) else bool((value != 0).any())


def global_norm(grads: Array) -> Array:
    """‖g‖₂ over the whole buffer (per replica)."""
    xp = array_module(grads)
    return xp.sqrt((grads * grads).sum(axis=-1))


def clip_by_global_norm(grads: Array, max_norm: float) -> Array:
    """Rescale g to norm ``max_norm`` where ‖g‖ exceeds it (Pascanu et al. 2013); returns ‖g‖."""
    xp = array_module(grads)
    norm = global_norm(grads)
    scale = xp.minimum(1.0, max_norm / xp.maximum(norm, 1e-30))
    grads *= scale[..., None] if grads.ndim > 1 else scale
    return norm
