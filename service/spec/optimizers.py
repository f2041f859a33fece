"""The ``optimizer:`` section and ``compare.optimizers`` (docs/spec.md), from the registry.

Names, hyperparameters, defaults and ranges all come from ``gradq.nn.registry`` (the entries
are in ``nn/entries.py``): an optimizer registered there is accepted here with no change.
``OPTIMIZERS`` and ``FULL_BATCH_OPTIMIZERS`` are live views of the registry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from functools import cache
from typing import Any

from gradq.nn import registry

from .kinds import (
    MAX_GRID_POINTS,
    REQUIRED,
    Bool,
    Choice,
    Float,
    Int,
    Kind,
    Nullable,
    Section,
    SpecError,
    _bad,
    _join,
    _refuse_repeats,
    _suggest,
)
from .spaces import _refuse_grid_and_space, candidates, check_space

_POSITIVE = Float(0, lo_open=True)
_NONNEGATIVE = Float(0)
_FRACTION = Float(0, 1, hi_open=True)  # [0, 1)


@cache
def kind_of(r: registry.Range) -> Kind:
    """The field kind that checks a hyperparameter of range ``r``."""
    kind: Kind
    if r.type == "bool":
        kind = Bool()
    elif r.type == "int":
        kind = Int(r.lo, r.hi)
    else:
        kind = Float(r.lo, r.hi, r.lo_open, r.hi_open)
    return Nullable(kind) if r.nullable else kind


HYPERPARAMETERS: dict[str, Kind] = {k: kind_of(r) for k, r in registry.HYPERPARAMETERS.items()}
"""Each shared hyperparameter's kind (type and range), from the registry's table."""


def _hyper_kind(name: str, key: str) -> Kind:
    return kind_of(registry.get(name).range_of(key))


OPTIMIZERS: Mapping[str, dict[str, Any]] = registry.DefaultsView()
"""Each optimizer's hyperparameters and their defaults (docs/spec.md), a live view of the
registry. One with ``lr`` is first-order and may take a ``schedule``."""


class _FullBatch(AbstractSet):
    """The registered optimizers whose ``training.batch_size`` defaults to ``"full"``."""

    def __contains__(self, name: object) -> bool:
        return name in registry.full_batch_names()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(registry.full_batch_names()))

    def __len__(self) -> int:
        return len(registry.full_batch_names())

    @classmethod
    def _from_iterable(cls, it: Any) -> frozenset:
        return frozenset(it)

    def __repr__(self) -> str:
        return f"FULL_BATCH_OPTIMIZERS({sorted(self)})"


FULL_BATCH_OPTIMIZERS: AbstractSet[str] = _FullBatch()
"""Optimizers whose ``training.batch_size`` defaults to ``"full"``."""


class _OptimizerName(Kind):
    """One of the registered optimizer names (read when checked), with a did-you-mean."""

    @property
    def describe(self) -> str:  # type: ignore[override]
        return Choice(registry.names()).describe

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str)

    def check(self, value: Any, path: str) -> str:
        return Choice(registry.names()).check(value, path)


_OPTIMIZER_NAME = _OptimizerName()
_SCHEDULE = Nullable(Section({
    "kind": (Choice(("linear",)), "linear"),
    "final_lr": (_NONNEGATIVE, REQUIRED),
    "steps": (Int(1), REQUIRED),
}, hint="{kind: linear, final_lr, steps}"))


def _check_hyper(name: str, key: Any, value: Any, path: str) -> Any:
    """One hyperparameter (or ``schedule``) of optimizer ``name``."""
    entry = registry.get(name)
    table = entry.defaults
    if key == "schedule":
        if value is not None and "lr" not in table:
            raise SpecError(path, f"{name} has no learning rate to schedule; schedules apply "
                                  "to first-order optimizers only")
        if value is not None and not entry.schedule:
            raise SpecError(path, f"{name} adapts its own rates: it takes no schedule")
        return _SCHEDULE.check(value, path)
    if key not in table:
        known = ", ".join(table) or "none"
        hint = _suggest(key, table)
        raise SpecError(path, f"unknown hyperparameter for {name}; known: {known}"
                        + (f"; {hint}" if hint else ""))
    return kind_of(entry.range_of(key)).check(value, path)


def _check_wolfe(name: str, given: Mapping[str, Any], path: str) -> None:
    """0 < c1 < c2 < 1 for every combination of the given (possibly gridded) c1 and c2,
    the missing one at its default; the message names the key the user gave."""
    if "c1" not in OPTIMIZERS[name]:
        return
    values = {k: given.get(k, OPTIMIZERS[name][k]) for k in ("c1", "c2")}
    c1, c2 = max(candidates(values["c1"])), min(candidates(values["c2"]))
    if c1 >= c2:
        if "c2" in given:
            raise SpecError(_join(path, "c2"), f"must be above c1 ({c1}): 0 < c1 < c2 < 1")
        raise SpecError(_join(path, "c1"), f"must be below c2 ({c2}): 0 < c1 < c2 < 1")


class _Optimizer(Kind):
    """``optimizer:``: a name and that optimizer's hyperparameters, all defaults filled."""

    describe = "a mapping {name: ..., hyperparameters}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, Mapping)

    def check(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _bad(path, self.describe, value)
        name = _OPTIMIZER_NAME.check(value.get("name", "adam"), _join(path, "name"))
        out: dict[str, Any] = {"name": name}
        for key in value:  # unknown keys first, so a typo is named before a missing value
            if key != "name":
                _check_hyper(name, key, value[key], _join(path, key))
        for key, default in OPTIMIZERS[name].items():
            out[key] = _check_hyper(name, key, value.get(key, default), _join(path, key))
        out["schedule"] = _check_hyper(name, "schedule", value.get("schedule"),
                                       _join(path, "schedule"))
        _check_wolfe(name, {k: out[k] for k in ("c1", "c2") if k in value}, path)
        return out


def normalise_optimizer(optimizer: Mapping[str, Any], path: str = "optimizer") -> dict[str, Any]:
    """One optimizer mapping (``name`` and scalar hyperparameters, e.g. a comparison arm
    without grids) with every default filled in, as in a normalised spec's ``optimizer``."""
    return _Optimizer().check(optimizer, path)


class _Arms(Kind):
    """``compare.optimizers``: names, or mappings of name and hyperparameters where a list
    is a grid. Normalised to ``[{name, ...given keys}]`` with no defaults filled."""

    describe = "a list of optimizer names or mappings {name: ..., hyperparameters}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (list, tuple))

    def check(self, value: Any, path: str) -> list[dict[str, Any]]:
        if not isinstance(value, (list, tuple)):
            raise _bad(path, self.describe, value)
        if not value:
            raise SpecError(path, "must list at least one optimizer")
        arms = [self._arm(entry, f"{path}[{i}]") for i, entry in enumerate(value)]
        _refuse_repeats(arms, path)
        return arms

    @staticmethod
    def _arm(entry: Any, path: str) -> dict[str, Any]:
        if isinstance(entry, str):
            return {"name": _OPTIMIZER_NAME.check(entry, path)}
        if not isinstance(entry, Mapping):
            raise _bad(path, "an optimizer name or a mapping {name: ..., hyperparameters}",
                       entry)
        if "name" not in entry:
            raise SpecError(_join(path, "name"), "required")
        name = _OPTIMIZER_NAME.check(entry["name"], _join(path, "name"))
        arm: dict[str, Any] = {"name": name}
        points = 1
        for key, v in entry.items():
            if key == "name":
                continue
            p = _join(path, key)
            if isinstance(v, (list, tuple)):  # a grid
                if not v:
                    raise SpecError(p, "an empty grid; give a value or a non-empty list")
                arm[key] = [_check_hyper(name, key, x, f"{p}[{j}]") for j, x in enumerate(v)]
                _refuse_repeats(arm[key], p)
                points *= len(v)
            elif isinstance(v, Mapping) and key != "schedule":  # a search space
                if key not in OPTIMIZERS[name]:
                    _check_hyper(name, key, v, p)  # names the unknown hyperparameter
                arm[key] = check_space(v, p, _hyper_kind(name, key))
            else:
                arm[key] = _check_hyper(name, key, v, p)
        if points > MAX_GRID_POINTS:
            raise SpecError(path, f"a grid of {points:,} points, above the limit of "
                                  f"{MAX_GRID_POINTS:,}")
        _refuse_grid_and_space(arm, path)
        _check_wolfe(name, arm, path)
        return arm


