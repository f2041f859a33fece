"""The optimizer registry: one entry per optimizer (docs/optimizers.md; after optax's
``alias.py``).

An entry (:class:`Optimizer`) holds everything the rest of gradq needs to know about one
optimizer: its name, its hyperparameters with their defaults, how to build its transform
(``optimizers.Transform``) and its fused in-place step, and whether it trains full-batch.
The ranges of the hyperparameters are shared by name in :data:`HYPERPARAMETERS`; an entry
that brings a new hyperparameter gives its range in ``ranges``. The spec validation
(``gradq.service.spec``), ``optimizers.make_optimizer`` and ``second_order.validate_hyper``
read this registry, so adding an optimizer is one :func:`register` call in ``entries.py``,
its fused rule in ``fused.py`` and its test (see docs/optimizers.md).

This module imports nothing of gradq: the entries themselves (``entries.py``, which needs
the transforms) are loaded on first use, so ``optimizers.py`` can read the registry without
an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

KINDS = ("first_order", "closed_form", "second_order")


class Range(NamedTuple):
    """A hyperparameter's type (``float``, ``int`` or ``bool``) and allowed range."""

    type: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    nullable: bool = False  # None is allowed too (e.g. cg's restart: the parameter count)
    doc: str = ""


_POSITIVE = Range("float", 0, lo_open=True)
_NONNEGATIVE = Range("float", 0)
_FRACTION = Range("float", 0, 1, hi_open=True)  # [0, 1)
_OPEN_UNIT = Range("float", 0, 1, lo_open=True, hi_open=True)  # (0, 1)

HYPERPARAMETERS: dict[str, Range] = {
    "lr": _POSITIVE._replace(doc="learning rate ε"),
    "momentum": _FRACTION._replace(doc="momentum μ (α in the book)"),
    "alpha": _FRACTION._replace(doc="decay ρ of the running average of g²"),
    "rho": _FRACTION._replace(doc="decay ρ of the running averages (AdaDelta)"),
    "beta1": _FRACTION._replace(doc="decay β₁ of the first moment"),
    "beta2": _FRACTION._replace(doc="decay β₂ of the second moment"),
    "theta": _FRACTION._replace(doc="decay θ of the average gradient d̄"),
    "phi": _FRACTION._replace(doc="multiplicative decrease φ of a rate on a sign flip"),
    "eps": _POSITIVE._replace(doc="δ added for numerical stability"),
    "kappa": _NONNEGATIVE._replace(doc="additive increase κ of a rate"),
    "damping": _NONNEGATIVE._replace(doc="λ added to the Hessian's diagonal"),
    "max_params": Range("int", 1, doc="largest model Newton's method builds a Hessian for"),
    "history": Range("int", 1, doc="number of (s, y) pairs kept"),
    "restart": Range("int", 1, nullable=True,
                     doc="restart the conjugate directions every this many steps "
                         "(null: the number of parameters)"),
    "c1": _OPEN_UNIT._replace(doc="Wolfe sufficient-decrease constant (0 < c1 < c2 < 1)"),
    "c2": _OPEN_UNIT._replace(doc="Wolfe curvature constant (0 < c1 < c2 < 1)"),
    "amsgrad": Range("bool", doc="use the maximum of past second moments (AMSGrad)"),
    "centered": Range("bool", doc="divide by the variance estimate instead of E[g²]"),
}
"""Each hyperparameter's type and range, shared by every optimizer that has it."""

Schedule = Callable[[Any], Any] | None
TransformBuilder = Callable[[dict[str, Any], Schedule], Any]
FusedBuilder = Callable[[dict[str, Any], Schedule], Callable[[Any, Any, Any], Any]]


class Optimizer(NamedTuple):
    """One registry entry.

    ``defaults`` are the hyperparameters a job spec offers (docs/spec.md), in order.
    ``transform(h, schedule)`` builds the ``optimizers.Transform`` from the filled-in
    hyperparameters ``h``; ``fused(h, schedule)``, where given, builds the in-place step over
    ``nn.fused`` for scalar or per-replica (R, 1) hyperparameters (without one the generic
    update runs).
    ``hidden`` are defaults a minimizer takes that the spec does not offer.
    """

    name: str
    kind: str  # one of KINDS
    defaults: Mapping[str, Any]
    summary: str = ""
    transform: TransformBuilder | None = None
    fused: FusedBuilder | None = None
    full_batch: bool = False  # training.batch_size defaults to "full"
    schedule: bool = True  # takes a learning-rate schedule (first-order ones only)
    ranges: Mapping[str, Range] = {}  # ranges of hyperparameters not in HYPERPARAMETERS
    hidden: Mapping[str, Any] = {}

    def range_of(self, key: str) -> Range:
        """The range of hyperparameter ``key`` (the entry's own, else the shared one)."""
        return self.ranges[key] if key in self.ranges else HYPERPARAMETERS[key]


_REGISTRY: dict[str, Optimizer] = {}
_loaded = False


def _load() -> dict[str, Optimizer]:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import entries  # noqa: F401  (registers the built-in optimizers)
    return _REGISTRY


def register(entry: Optimizer) -> Optimizer:
    """Add ``entry`` (its name must be new); returns it."""
    if entry.kind not in KINDS:
        raise ValueError(f"optimizer {entry.name!r}: kind must be one of {', '.join(KINDS)}")
    for key in entry.defaults:
        if key not in entry.ranges and key not in HYPERPARAMETERS:
            raise ValueError(f"optimizer {entry.name!r}: hyperparameter {key!r} has no range; "
                             "give it in ranges")
    registered = _load()  # the built-in entries first, so that the order stays theirs
    if entry.name in registered:
        raise ValueError(f"optimizer {entry.name!r} is already registered")
    registered[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove the entry ``name`` (for tests that register a toy optimizer)."""
    _load().pop(name)


def get(name: str) -> Optimizer:
    """The entry ``name``; ``KeyError`` if there is none."""
    return _load()[name]


def names(kind: str | None = None) -> tuple[str, ...]:
    """Every registered name in registration order (docs/spec.md's), or those of one kind."""
    return tuple(n for n, e in _load().items() if kind is None or e.kind == kind)


def all_entries() -> tuple[Optimizer, ...]:
    """Every entry in registration order."""
    return tuple(_load().values())


class DefaultsView(Mapping):
    """A live read-only ``{name: {hyperparameter: default}}`` over the registry (fresh dicts),
    e.g. ``optimizers.FIRST_ORDER_DEFAULTS``; ``hidden`` adds the minimizer-only defaults."""

    def __init__(self, kind: str | None = None, hidden: bool = False) -> None:
        self._kind, self._hidden = kind, hidden

    def __getitem__(self, name: str) -> dict[str, Any]:
        entry = _load().get(name)
        if entry is None or self._kind is not None and entry.kind != self._kind:
            raise KeyError(name)
        return {**entry.defaults, **(entry.hidden if self._hidden else {})}

    def __iter__(self) -> Iterator[str]:
        return iter(names(self._kind))

    def __len__(self) -> int:
        return len(names(self._kind))

    def __repr__(self) -> str:
        return repr(dict(self))


def full_batch_names() -> frozenset[str]:
    """The optimizers whose ``training.batch_size`` defaults to ``"full"``."""
    return frozenset(e.name for e in all_entries() if e.full_batch)
