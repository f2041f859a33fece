"""First-order optimizers as pure (init, update) pairs over the flat buffer (after optax).

A ``Transform`` maps a gradient to an update: ``state = t.init(params)``,
``updates, state = t.update(grads, state, params)``, then ``params += updates``. State is a
small immutable record of arrays; nothing is hidden. Named optimizers are chains of a few
transforms, the learning rate applied with its sign flipped in one place
(``scale_by_learning_rate``). Hyperparameter names, defaults and update rules follow
``torch.optim`` (docs/optimizers.md), so a run can be checked against it step by step. Every
hyperparameter may be a scalar or an array that broadcasts against the buffer, e.g. shape
(R, 1) for R stacked replicas with different settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from . import registry
from .backend import array_module

Array = Any


class Transform(NamedTuple):
    """``init(params) -> state``; ``update(grads, state, params) -> (updates, state)``.

    ``fused``, where set, is the same step done in place: ``fused(grads, state, params)``
    writes the new parameters into ``params`` and the new moments into the state's own
    arrays (one ``nn.fused`` kernel launch on CuPy), and returns the new state record. The
    state passed in is consumed: its arrays now hold the new values.
    """

    init: Callable[[Array], Any]
    update: Callable[[Array, Any, Array], tuple[Array, Any]]
    fused: Callable[[Array, Any, Array], Any] | None = None


def chain(*transforms: Transform) -> Transform:
    """Apply transforms in order; the state is the tuple of their states."""

    def init(params: Array) -> tuple:
        return tuple(t.init(params) for t in transforms)

    def update(g: Array, state: tuple, params: Array) -> tuple[Array, tuple]:
        new = []
        for t, s in zip(transforms, state, strict=True):
            g, s = t.update(g, s, params)
            new.append(s)
        return g, tuple(new)

    return Transform(init, update)


# --------------------------------------------------------------- learning rate
class ScheduleState(NamedTuple):
    count: Array  # updates applied so far (k)


def linear_schedule(lr: Any, final_lr: float, steps: int) -> Callable[[Array], Array]:
    """ε_k = (1 − k/τ)·ε_0 + (k/τ)·ε_τ for k ≤ τ, then ε_τ (Goodfellow et al., §8.3.1)."""

    def at(k: Array) -> Array:
        xp = array_module(k)
        frac = xp.minimum(k / steps, 1.0)
        return (1 - frac) * lr + frac * final_lr

    return at


def _rate(lr: Any, schedule: Callable[[Array], Array] | None, count: Array, dtype: Any) -> Any:
    """ε_k: the constant ``lr``, or the schedule at step ``count`` in the buffer's dtype."""
    return lr if schedule is None else schedule(count).astype(dtype)


def scale_by_learning_rate(lr: Any, schedule: Callable[[Array], Array] | None = None
                           ) -> Transform:
    """u = −ε_k·g: the single place where the sign is flipped."""

    def init(params: Array) -> ScheduleState:
        xp = array_module(params)
        return ScheduleState(xp.zeros((), dtype=np.int64))

    def update(g: Array, state: ScheduleState, params: Array) -> tuple[Array, ScheduleState]:
        return -_rate(lr, schedule, state.count, g.dtype) * g, ScheduleState(state.count + 1)

    return Transform(init, update)


# -------------------------------------------------------------------- momentum
class TraceState(NamedTuple):
    buf: Array  # b, the velocity (b₀ = 0, so b₁ = g as torch sets it)


def trace(momentum: Any, nesterov: bool = False) -> Transform:
    """b = μ·b + g (b₁ = g); returns b, or g + μ·b with ``nesterov`` (torch's Sutskever form)."""

    def init(params: Array) -> TraceState:
        xp = array_module(params)
        return TraceState(xp.zeros_like(params))

    def update(g: Array, state: TraceState, params: Array) -> tuple[Array, TraceState]:
        buf = momentum * state.buf + g  # b₀ = 0, so b₁ = g as in torch
        out = g + momentum * buf if nesterov else buf
        return out, TraceState(buf)

    return Transform(init, update)


# ------------------------------------------------------------- adaptive scales
class AdagradState(NamedTuple):
    sum_sq: Array  # s = Σ g²


def scale_by_adagrad(eps: float) -> Transform:
    """s += g²; g / (√s + eps) (Duchi et al. 2011)."""

    def init(params: Array) -> AdagradState:
        return AdagradState(array_module(params).zeros_like(params))

    def update(g: Array, state: AdagradState, params: Array) -> tuple[Array, AdagradState]:
        xp = array_module(g)
        s = state.sum_sq + g * g
        return g / (xp.sqrt(s) + eps), AdagradState(s)

    return Transform(init, update)


class RmsState(NamedTuple):
    sq: Array  # v = E[g²]
    mean: Array  # ḡ = E[g] (centered only; zeros otherwise)


def scale_by_rms(alpha: Any, eps: float, centered: bool = False) -> Transform:
    """v = α·v + (1−α)·g²; g / (√v + eps), or g / (√(v − ḡ²) + eps) when centered (Hinton)."""

    def init(params: Array) -> RmsState:
        xp = array_module(params)
        return RmsState(xp.zeros_like(params), xp.zeros_like(params))

    def update(g: Array, state: RmsState, params: Array) -> tuple[Array, RmsState]:
        xp = array_module(g)
        v = alpha * state.sq + (1 - alpha) * g * g
        if centered:
            m = alpha * state.mean + (1 - alpha) * g
            return g / (xp.sqrt(v - m * m) + eps), RmsState(v, m)
        return g / (xp.sqrt(v) + eps), RmsState(v, state.mean)

    return Transform(init, update)


class AdamState(NamedTuple):
    count: Array  # t
    m: Array  # first moment
    v: Array  # second moment
    v_max: Array  # max of v so far (amsgrad; zeros otherwise)


def scale_by_adam(b1: Any, b2: Any, eps: float, amsgrad: bool = False) -> Transform:
    """m̂/(√v̂ + eps) with bias-corrected moments (Kingma & Ba 2014); amsgrad uses max v."""

    def init(params: Array) -> AdamState:
        xp = array_module(params)
        z = xp.zeros_like(params)
        return AdamState(xp.zeros((), dtype=np.int64), z, z.copy(), z.copy())

    def update(g: Array, state: AdamState, params: Array) -> tuple[Array, AdamState]:
        xp = array_module(g)
        t = state.count + 1
        m = b1 * state.m + (1 - b1) * g  # m = β₁m + (1−β₁)g
        v = b2 * state.v + (1 - b2) * g * g  # v = β₂v + (1−β₂)g²
        v_max = xp.maximum(state.v_max, v) if amsgrad else state.v_max
        # 1 − β₁ᵗ and 1 − β₂ᵗ in the buffer's dtype, as torch forms them from Python floats:
        # a float64 0-d array would otherwise promote the whole float32 update to float64
        bc1 = (1 - b1**t).astype(g.dtype)
        bc2 = (1 - b2**t).astype(g.dtype)
        denom = xp.sqrt((v_max if amsgrad else v) / bc2) + eps
        return (m / bc1) / denom, AdamState(t, m, v, v_max)

    return Transform(init, update)


class AdadeltaState(NamedTuple):
    sq: Array  # v = E[g²]
    delta_sq: Array  # u = E[Δ²]


def scale_by_adadelta(rho: Any, eps: float) -> Transform:
    """v = ρv + (1−ρ)g²; d = √(u+eps)/√(v+eps)·g; u = ρu + (1−ρ)d² (Zeiler 2012)."""

    def init(params: Array) -> AdadeltaState:
        xp = array_module(params)
        return AdadeltaState(xp.zeros_like(params), xp.zeros_like(params))

    def update(g: Array, state: AdadeltaState, params: Array) -> tuple[Array, AdadeltaState]:
        xp = array_module(g)
        v = rho * state.sq + (1 - rho) * g * g
        d = xp.sqrt(state.delta_sq + eps) / xp.sqrt(v + eps) * g
        u = rho * state.delta_sq + (1 - rho) * d * d
        return d, AdadeltaState(v, u)

    return Transform(init, update)


# ------------------------------------------------- rules that own their rate
class RmsNesterovState(NamedTuple):
    count: Array  # k, for the schedule
    sq: Array  # r = E[g²]
    velocity: Array  # v


def rmsprop_nesterov(lr: Any, alpha: Any, momentum: Any, eps: float,
                     schedule: Callable[[Array], Array] | None = None) -> Transform:
    """RMSProp with Nesterov momentum (Goodfellow et al., algorithm 8.6).

    The book evaluates g at the interim point θ̃ = θ + αv, then
    r = ρr + (1−ρ)g², v = αv − ε·g/√(r + δ), θ = θ + v (δ = ``eps``, as in algorithm 8.5).
    The buffer holds the interim point φ = θ + αv itself, so the trainer's gradient is
    already taken there: φ₊ = θ₊ + αv₊ = φ + (1+α)v₊ − αv. (ρ is ``alpha``, α ``momentum``.)
    """

    def init(params: Array) -> RmsNesterovState:
        xp = array_module(params)
        return RmsNesterovState(xp.zeros((), dtype=np.int64), xp.zeros_like(params),
                                xp.zeros_like(params))

    def update(g: Array, state: RmsNesterovState, params: Array
               ) -> tuple[Array, RmsNesterovState]:
        xp = array_module(g)
        rate = _rate(lr, schedule, state.count, g.dtype)
        r = alpha * state.sq + (1 - alpha) * g * g  # r = ρr + (1−ρ)g²
        v = momentum * state.velocity - rate * g / xp.sqrt(r + eps)  # v = αv − ε g/√(r+δ)
        return (1 + momentum) * v - momentum * state.velocity, RmsNesterovState(
            state.count + 1, r, v)

    return Transform(init, update)


class DeltaBarDeltaState(NamedTuple):
    rates: Array  # ε_i, one learning rate per parameter
    bar: Array  # d̄, the exponential average of past gradients


def delta_bar_delta(lr: Any, kappa: Any, phi: Any, theta: Any) -> Transform:
    """Jacobs' (1988) delta-bar-delta, for full-batch training (Goodfellow et al., §8.5).

    A rate grows additively by κ while its gradient keeps the sign of the running average
    d̄ (d̄·g > 0), shrinks multiplicatively, ε ← (1−φ)ε, when the sign flips (d̄·g < 0);
    then d̄ = (1−θ)g + θd̄ and p −= ε ⊙ g with the new rates.
    """

    def init(params: Array) -> DeltaBarDeltaState:
        xp = array_module(params)
        return DeltaBarDeltaState(xp.full_like(params, lr), xp.zeros_like(params))

    def update(g: Array, state: DeltaBarDeltaState, params: Array
               ) -> tuple[Array, DeltaBarDeltaState]:
        xp = array_module(g)
        agree = state.bar * g
        rates = xp.where(agree > 0, state.rates + kappa,
                         xp.where(agree < 0, state.rates * (1 - phi), state.rates))
        bar = (1 - theta) * g + theta * state.bar
        return -rates * g, DeltaBarDeltaState(rates, bar)

    return Transform(init, update)


# ------------------------------------------------------------ named optimizers
FIRST_ORDER_DEFAULTS: Mapping[str, dict[str, Any]] = registry.DefaultsView("first_order")
"""``{name: {hyperparameter: default}}`` of the first-order optimizers: a live view of the
registry (``registry.py``; the entries are in ``entries.py``)."""


def make_optimizer(name: str, hyper: dict[str, Any], schedule: dict | None = None
                   ) -> Transform:
    """Build the named first-order optimizer from its hyperparameters (defaults filled in).

    ``schedule`` is ``None`` or ``{"kind": "linear", "final_lr": ε_τ, "steps": τ}``. The
    transform also carries its ``fused`` in-place step (see ``apply_updates``), for scalar
    hyperparameters and for per-replica ones alike: an (R, 1) array of a stack's values
    broadcasts over the (R, P) buffer in the twin as in the kernel, so a stacked step is as
    fused as a single run's. Flags (``amsgrad``, ``centered``) are the group's, scalars.
    """
    if name not in FIRST_ORDER_DEFAULTS:
        raise ValueError(f"unknown first-order optimizer {name!r}")
    entry = registry.get(name)
    h = {**entry.defaults, **hyper}
    unknown = set(h) - set(entry.defaults)
    if unknown:
        raise ValueError(f"optimizer {name!r} has no hyperparameter {sorted(unknown)[0]!r}")
    if not entry.schedule and schedule:
        raise ValueError(f"{name} adapts its own rates: it takes no schedule")
    sched = None
    if schedule:
        sched = linear_schedule(h["lr"], schedule["final_lr"], schedule["steps"])
    transform = entry.transform(h, sched)
    if entry.fused is not None:
        values = {k: v if np.ndim(v) else bool(v) if isinstance(v, (bool, np.bool_))
                  else float(v) for k, v in h.items()}
        transform = transform._replace(fused=entry.fused(values, sched))
    return transform


def apply_updates(transform: Transform, grads: Array, state: Any, params: Array) -> Any:
    """One step in place: ``params += update``; returns the new state.

    A transform with a ``fused`` step takes it (scalar hyperparameters): on CuPy one kernel
    launch for the buffer and its moments, on NumPy the kernel's in-place twin, which
    writes the same formulas without temporaries; the old state's arrays are reused.
    Otherwise the generic ``update`` then ``params += updates``.
    """
    if transform.fused is not None:
        return transform.fused(grads, state, params)
    updates, state = transform.update(grads, state, params)
    params += updates
    return state


# -------------------------------------------------------- state serialization
def state_to_arrays(state: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a (nested) optimizer state into ``{"0.m": array, ...}`` for checkpoints."""
    out: dict[str, Any] = {}
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        for f in state._fields:
            out.update(state_to_arrays(getattr(state, f), f"{prefix}{f}."))
    elif isinstance(state, tuple):
        for i, s in enumerate(state):
            out.update(state_to_arrays(s, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = state
    return out


def state_from_arrays(template: Any, arrays: dict[str, Any], prefix: str = "") -> Any:
    """Rebuild a state shaped like ``template`` from ``state_to_arrays``' output."""
    if isinstance(template, tuple) and hasattr(template, "_fields"):
        return type(template)(*(state_from_arrays(getattr(template, f), arrays,
                                                  f"{prefix}{f}.") for f in template._fields))
    if isinstance(template, tuple):
        return tuple(state_from_arrays(s, arrays, f"{prefix}{i}.")
                     for i, s in enumerate(template))
    value = arrays[prefix[:-1]]
    if not hasattr(template, "dtype"):  # a Python scalar (e.g. a minimizer's loss or count)
        return type(template)(np.asarray(value).item())
    xp = array_module(template)
    return xp.asarray(value, dtype=template.dtype).reshape(template.shape)
