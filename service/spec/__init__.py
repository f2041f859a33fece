"""Job specs (SPEC §4): load a YAML or JSON file, apply ``--set`` overrides, validate.

:func:`validate` turns what a user wrote into the *normalised* spec: every key present with
its default, numbers coerced where that is unambiguous, and every problem refused with one
line that names the key's dotted path (``model.hidden[1]: must be an integer ...``).

The rules are data: a small schema of field kinds (:class:`Int`, :class:`Float`,
:class:`Choice`, :class:`Section`, ...) that each check and normalise one value, the table
of optimizers and their hyperparameters (SPEC §5), then a short list of cross-field rules.
No database or queue code lives here.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import numbers
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from gradq.nn.datasets import BUILTIN
from gradq.nn.optimizers import FIRST_ORDER_DEFAULTS
from gradq.service.errors import UsageError
from gradq.service.spec.suite import check_search_method

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_MAX_BYTES",
    "DIAGNOSTICS",
    "FULL_BATCH_OPTIMIZERS",
    "HYPERPARAMETERS",
    "MAX_GRID_POINTS",
    "MAX_HIDDEN_PARAMS",
    "MAX_LAYER_WIDTH",
    "METRICS",
    "NOT_BUILT",
    "OPTIMIZERS",
    "DISTRIBUTIONS",
    "SpecError",
    "apply_overrides",
    "arm_spec",
    "candidates",
    "check_space",
    "is_grid",
    "is_space",
    "canonical_json",
    "check_data",
    "load_spec_file",
    "lower_is_better",
    "normalise_optimizer",
    "parameter_count",
    "validate",
]

DEFAULT_MAX_BYTES = 1 << 20
"""Largest spec file accepted by :func:`load_spec_file`, in bytes."""
MAX_LAYER_WIDTH = 65_536
MAX_HIDDEN_PARAMS = 50_000_000
"""Cap on Σ h[i]·h[i+1] over consecutive hidden layers (the input width is unknown here)."""
MAX_GRID_POINTS = 10_000
"""Cap on the grid points of one comparison arm."""

NOT_BUILT: dict[str, str] = {}
"""Features refused by :func:`validate` as not built yet: ``"dotted.key"`` matches when the
user gave the key a non-null value, ``"dotted.key=value"`` when the normalised value equals
the YAML value (or, for a list, contains it). The value names the feature for the message."""


class SpecError(UsageError, ValueError):
    """An invalid spec: ``str(e)`` is one line, ``"<dotted.path>: <message>"``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(path, message)  # args stay (path, message), so it pickles
        self.path = path
        self.message = message

    def __str__(self) -> str:
        line = f"{self.path}: {self.message}" if self.path else self.message
        return " ".join(part.strip() for part in line.splitlines() if part.strip())


# ----------------------------------------------------------------------------- messages
def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _what(value: Any) -> str:
    """How a value reads in a message: ``a boolean (true)``, ``a string ('x')``, ``0.5``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, numbers.Number):
        shown = repr(value)
        return shown if len(shown) <= 40 else shown[:37] + "..."
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


def _suggest(word: Any, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f"did you mean {close[0]!r}?" if close else ""


def _unknown(path: str, key: Any, known: Iterable[str], what: str = "unknown key") -> SpecError:
    known = list(known)
    hint = _suggest(key, known)
    if hint:
        return SpecError(_join(path, key), f"{what}; {hint}")
    return SpecError(_join(path, key), f"{what}; known: {', '.join(known) or 'none'}")


def _bad(path: str, describe: str, value: Any) -> SpecError:
    return SpecError(path, f"must be {describe}, got {_what(value)}")


# ------------------------------------------------------------------------- field kinds
class Kind:
    """One field's rule: ``check(value, path)`` returns the normalised value or raises."""

    describe = "a value"

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has this kind's type (used by :class:`Either` to pick one)."""
        return True

    def check(self, value: Any, path: str) -> Any:
        raise NotImplementedError


def _range_text(lo: Any, hi: Any, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def _in_range(v: float, lo: Any, hi: Any, lo_open: bool, hi_open: bool) -> bool:
    if lo is not None and (v <= lo if lo_open else v < lo):
        return False
    return not (hi is not None and (v >= hi if hi_open else v > hi))


@dataclass(frozen=True)
class Int(Kind):
    """An integer (never a bool, a float or a string), optionally within [lo, hi]."""

    lo: int | None = None
    hi: int | None = None

    @property
    def describe(self) -> str:  # type: ignore[override]
        return "an integer" + _range_text(self.lo, self.hi, False, False)

    def accepts(self, value: Any) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    def check(self, value: Any, path: str) -> int:
        if not self.accepts(value) or not _in_range(value, self.lo, self.hi, False, False):
            raise _bad(path, self.describe, value)
        return int(value)


# PyYAML implements YAML 1.1, whose float pattern needs a dot and a signed exponent, so
# `lr: 1e-3` (and `1.0e3`) arrive as the *string* "1e-3". Float fields accept a string of
# exactly that shape — mantissa, e, exponent — and nothing else: "0.1" in quotes, "fast" or
# "nan" stay refused, and no other kind of field accepts a string for a number.
_SCI_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Float(Kind):
    """A finite number (an int becomes a float), optionally within a range."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    @property
    def describe(self) -> str:  # type: ignore[override]
        return "a number" + _range_text(self.lo, self.hi, self.lo_open, self.hi_open)

    def accepts(self, value: Any) -> bool:
        if isinstance(value, str):
            return _SCI_NUMBER.fullmatch(value.strip()) is not None
        return isinstance(value, numbers.Real) and not isinstance(value, bool)

    def check(self, value: Any, path: str) -> float:
        if not self.accepts(value):
            error = _bad(path, self.describe, value)
            if isinstance(value, str) and _is_number(value):
                error = SpecError(path, f"{error.message}; write the number without quotes")
            raise error
        try:
            v = float(value)
        except OverflowError:
            v = math.inf
        if not math.isfinite(v):
            raise SpecError(path, f"must be a finite number, got {_what(value)}")
        if not _in_range(v, self.lo, self.hi, self.lo_open, self.hi_open):
            raise _bad(path, self.describe, value)
        return v


@dataclass(frozen=True)
class Bool(Kind):
    """A real YAML/JSON boolean: ``1`` or ``"yes"`` in quotes are refused."""

    describe = "true or false"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def check(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise _bad(path, self.describe, value)
        return value


@dataclass(frozen=True)
class Str(Kind):
    """A string, non-empty unless ``empty``."""

    empty: bool = True

    @property
    def describe(self) -> str:  # type: ignore[override]
        return "a string" if self.empty else "a non-empty string"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str)

    def check(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not (self.empty or value.strip()):
            raise _bad(path, self.describe, value)
        return value


@dataclass(frozen=True)
class Choice(Kind):
    """One of a fixed set of names, with a did-you-mean for a near miss."""

    options: tuple[str, ...]

    @property
    def describe(self) -> str:  # type: ignore[override]
        return "one of " + ", ".join(self.options)

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str)

    def check(self, value: Any, path: str) -> str:
        if isinstance(value, str) and value in self.options:
            return value
        hint = _suggest(value, self.options) if isinstance(value, str) else ""
        raise SpecError(path, f"must be {self.describe}, got {_what(value)}"
                        + (f"; {hint}" if hint else ""))


@dataclass(frozen=True)
class Const(Kind):
    """Exactly one value, e.g. ``"full"`` or ``None``."""

    value: Any

    @property
    def describe(self) -> str:  # type: ignore[override]
        return "null" if self.value is None else repr(self.value)

    def accepts(self, value: Any) -> bool:
        return value is self.value if self.value is None else value == self.value

    def check(self, value: Any, path: str) -> Any:
        if not self.accepts(value):
            raise _bad(path, self.describe, value)
        return value


@dataclass(frozen=True)
class Either(Kind):
    """The first alternative whose type fits checks the value (and gives its own precise
    message); a value no alternative fits gets ``must be A or B``."""

    alternatives: tuple[Kind, ...]

    @property
    def describe(self) -> str:  # type: ignore[override]
        return " or ".join(a.describe for a in self.alternatives)

    def accepts(self, value: Any) -> bool:
        return any(a.accepts(value) for a in self.alternatives)

    def check(self, value: Any, path: str) -> Any:
        for alt in self.alternatives:
            if alt.accepts(value):
                return alt.check(value, path)
        raise _bad(path, self.describe, value)


def Nullable(kind: Kind) -> Either:
    """``null`` or ``kind``."""
    return Either((Const(None), kind))


@dataclass(frozen=True)
class ListOf(Kind):
    """A list whose items are checked at ``path[i]``."""

    item: Kind
    unique: bool = False
    nonempty: bool = False
    name: str = "a list"

    @property
    def describe(self) -> str:  # type: ignore[override]
        return self.name

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (list, tuple))

    def check(self, value: Any, path: str) -> list:
        if not self.accepts(value):
            raise _bad(path, self.describe, value)
        if self.nonempty and not value:
            raise SpecError(path, f"must be {self.describe}, not empty")
        out = [self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if self.unique:
            _refuse_repeats(out, path)
        return out


def _refuse_repeats(items: list, path: str) -> None:
    seen: dict[str, int] = {}
    for i, v in enumerate(items):
        key = canonical_json(v)
        if key in seen:
            raise SpecError(f"{path}[{i}]", f"repeats {path}[{seen[key]}]")
        seen[key] = i


REQUIRED = object()  # a field without a default
LATER = object()  # a default that a cross-field rule fills in


@dataclass(frozen=True)
class Section(Kind):
    """A mapping of known keys, each ``name: (kind, default)``; unknown keys are refused,
    missing ones filled with their default (itself checked, so nested sections fill too)."""

    fields: dict[str, tuple[Kind, Any]]
    hint: str = ""  # the keys, shown in the type: "a mapping {models}"
    note: str = ""  # appended when the value is not a mapping at all

    @property
    def describe(self) -> str:  # type: ignore[override]
        return f"a mapping {self.hint}" if self.hint else "a mapping"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, Mapping)

    def check(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            error = _bad(path, self.describe, value)
            raise SpecError(path, f"{error.message}; {self.note}") if self.note else error
        for key in value:
            if key not in self.fields:
                raise _unknown(path, key, self.fields)
        out: dict[str, Any] = {}
        for name, (kind, default) in self.fields.items():
            p = _join(path, name)
            if name in value:
                out[name] = kind.check(value[name], p)
            elif default is REQUIRED:
                raise SpecError(p, "required")
            else:
                out[name] = default if default is LATER else kind.check(copy.deepcopy(default), p)
        return out


# ------------------------------------------------------------------- optimizers (§5)
_POSITIVE = Float(0, lo_open=True)
_NONNEGATIVE = Float(0)
_FRACTION = Float(0, 1, hi_open=True)  # [0, 1)
_OPEN_UNIT = Float(0, 1, lo_open=True, hi_open=True)  # (0, 1)

HYPERPARAMETERS: dict[str, Kind] = {
    "lr": _POSITIVE,
    "momentum": _FRACTION,
    "alpha": _FRACTION,
    "rho": _FRACTION,
    "beta1": _FRACTION,
    "beta2": _FRACTION,
    "theta": _FRACTION,
    "phi": _FRACTION,
    "eps": _POSITIVE,
    "kappa": _NONNEGATIVE,
    "damping": _NONNEGATIVE,
    "max_params": Int(1),
    "history": Int(1),
    "restart": Nullable(Int(1)),  # null: the number of parameters
    "c1": _OPEN_UNIT,  # Wolfe conditions: 0 < c1 < c2 < 1
    "c2": _OPEN_UNIT,
    "amsgrad": Bool(),
    "centered": Bool(),
}
"""Each hyperparameter's type and range, shared by every optimizer that has it."""

_WOLFE = {"c1": 1e-4, "c2": 0.9}
OPTIMIZERS: dict[str, dict[str, Any]] = {
    # the first-order defaults are nn's own table, so the two cannot drift apart
    **{name: dict(defaults) for name, defaults in FIRST_ORDER_DEFAULTS.items()},
    "closed_form": {},
    "newton": {"damping": 1e-4, "max_params": 5000},
    "cg_fr": {"restart": None, "c1": 1e-4, "c2": 0.1},
    "cg_pr": {"restart": None, "c1": 1e-4, "c2": 0.1},
    "bfgs": dict(_WOLFE),
    "lbfgs": {"history": 10, **_WOLFE},
}
"""Each optimizer's hyperparameters and their defaults (SPEC §5). One with ``lr`` is
first-order and may take a ``schedule``."""

FULL_BATCH_OPTIMIZERS = frozenset(
    {"newton", "cg_fr", "cg_pr", "bfgs", "lbfgs", "delta_bar_delta", "closed_form"})
"""Optimizers whose ``training.batch_size`` defaults to ``"full"``."""

_OPTIMIZER_NAME = Choice(tuple(OPTIMIZERS))
_SCHEDULE = Nullable(Section({
    "kind": (Choice(("linear",)), "linear"),
    "final_lr": (_NONNEGATIVE, REQUIRED),
    "steps": (Int(1), REQUIRED),
}, hint="{kind: linear, final_lr, steps}"))


def _check_hyper(name: str, key: Any, value: Any, path: str) -> Any:
    """One hyperparameter (or ``schedule``) of optimizer ``name``."""
    table = OPTIMIZERS[name]
    if key == "schedule":
        if value is not None and "lr" not in table:
            raise SpecError(path, f"{name} has no learning rate to schedule; schedules apply "
                                  "to first-order optimizers only")
        if value is not None and name == "delta_bar_delta":
            raise SpecError(path, "delta_bar_delta adapts its own rates: it takes no "
                                  "schedule")
        return _SCHEDULE.check(value, path)
    if key not in table:
        known = ", ".join(table) or "none"
        hint = _suggest(key, table)
        raise SpecError(path, f"unknown hyperparameter for {name}; known: {known}"
                        + (f"; {hint}" if hint else ""))
    return HYPERPARAMETERS[key].check(value, path)


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
                arm[key] = check_space(v, p, HYPERPARAMETERS[key])
            else:
                arm[key] = _check_hyper(name, key, v, p)
        if points > MAX_GRID_POINTS:
            raise SpecError(path, f"a grid of {points:,} points, above the limit of "
                                  f"{MAX_GRID_POINTS:,}")
        _refuse_grid_and_space(arm, path)
        _check_wolfe(name, arm, path)
        return arm


# ------------------------------------------------- search spaces and arms (compare)
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
"""A search space is a mapping with one of these keys: ``{loguniform: [a, b]}``, …"""


def is_space(value: Any) -> bool:
    """Whether ``value`` is a normalised search space (one key, a known distribution)."""
    return isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS


def check_space(value: Any, path: str, kind: Kind | None = None) -> dict[str, Any]:
    """A search space, checked and normalised (``kind`` checks its endpoints or options,
    where the key's kind is known here); the message names the key ``path``."""
    if not isinstance(value, Mapping) or len(value) != 1:
        raise SpecError(path, "a search space is one of {loguniform: [a, b]}, "
                              "{uniform: [a, b]}, {int: [a, b]}, {choice: [...]}")
    dist, arg = next(iter(value.items()))
    if dist not in DISTRIBUTIONS:
        raise _unknown(path, dist, DISTRIBUTIONS, "unknown distribution")
    p = _join(path, dist)
    if dist == "choice":
        if not isinstance(arg, (list, tuple)) or not arg:
            raise _bad(p, "a non-empty list of values", arg)
        options = [kind.check(x, f"{p}[{j}]") if kind else copy.deepcopy(x)
                   for j, x in enumerate(arg)]
        _refuse_repeats(options, p)
        return {"choice": options}
    numeric = Int() if dist == "int" else Float()
    if not isinstance(arg, (list, tuple)) or len(arg) != 2 or not all(
            numeric.accepts(x) for x in arg):
        raise _bad(p, f"a list [a, b] of two {'integers' if dist == 'int' else 'numbers'}", arg)
    a, b = (numeric.check(x, f"{p}[{j}]") for j, x in enumerate(arg))
    if a >= b:
        raise SpecError(p, f"needs a < b, got [{a}, {b}]")
    if dist == "loguniform" and a <= 0:
        raise SpecError(p, f"needs 0 < a (a log scale), got a = {a}")
    if kind is not None:
        a, b = kind.check(a, f"{p}[0]"), kind.check(b, f"{p}[1]")
    return {dist: [a, b]}


def is_grid(key: str, value: Any) -> bool:
    """Whether an arm's override of the dotted ``key`` is a grid: a list, for a key whose
    own value is not a list (``model.hidden: [64]`` is a value)."""
    if not isinstance(value, list):
        return False
    kind = _kind_at(key)
    return kind is not None and not kind.accepts(value)


def candidates(value: Any, grid: bool = True) -> list[Any]:
    """The values a setting may take that validation tries: a grid's points (a list, where
    ``grid``), a space's endpoints (or options), or the value itself."""
    if grid and isinstance(value, list):
        return list(value)
    if is_space(value):
        dist, arg = next(iter(value.items()))
        return list(arg) if dist in ("choice", "int") else [float(x) for x in arg]
    return [value]


def _refuse_grid_and_space(arm: Mapping[str, Any], path: str, dotted: bool = False) -> None:
    grids = [k for k, v in arm.items()
             if (is_grid(k, v) if dotted else isinstance(v, list))]
    spaces = [k for k, v in arm.items() if is_space(v)]
    if grids and spaces:
        why = (f"a grid beside the search space of {spaces[0]}: an arm is tuned by a grid "
               "or by a search, not both; write the grid as {choice: [...]}")
        if dotted:
            raise SpecError(path, f"{grids[0]}: {why}")
        raise SpecError(_join(path, grids[0]), why)


_ARM_SECTIONS = ("model", "regularization", "optimizer", "training")


def _kind_at(key: str) -> Kind | None:
    """The field kind of a dotted spec key (None where unknown: validation names it)."""
    parts = key.split(".")
    if parts[0] == "optimizer" and len(parts) == 2:
        return _OPTIMIZER_NAME if parts[1] == "name" else HYPERPARAMETERS.get(parts[1])
    node: Kind = _SCHEMA
    for part in parts:
        if isinstance(node, Either):
            node = next((a for a in node.alternatives if isinstance(a, Section)), node)
        if not isinstance(node, Section) or part not in node.fields:
            return None
        node = node.fields[part][0]
    return node


class _ArmList(Kind):
    """``compare.arms``: ``[{label: ..., dotted.key: value, ...}]``. Each override is a
    value, a grid (a list, for a key that is not itself a list) or a search space; the
    labels are unique. The arms are validated whole by ``_check_arms``."""

    describe = "a list of arms {label: ..., dotted.key: value, ...}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (list, tuple))

    def check(self, value: Any, path: str) -> list[dict[str, Any]]:
        if not isinstance(value, (list, tuple)):
            raise _bad(path, self.describe, value)
        if not value:
            raise SpecError(path, "must list at least one arm")
        arms: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for i, entry in enumerate(value):
            p = f"{path}[{i}]"
            if not isinstance(entry, Mapping):
                raise _bad(p, "a mapping {label: ..., dotted.key: value}", entry)
            if "label" not in entry:
                raise SpecError(_join(p, "label"), "required: every arm has a unique label")
            label = Str(empty=False).check(entry["label"], _join(p, "label"))
            if label in seen:
                raise SpecError(_join(p, "label"), f"{label!r} is already the label of "
                                                   f"{path}[{seen[label]}]")
            seen[label] = i
            arm: dict[str, Any] = {"label": label}
            for key, v in entry.items():
                if key != "label":
                    arm[str(key)] = self._override(str(key), v, f"{p} (label {label})")
            _refuse_grid_and_space(arm, f"{p} (label {label})", dotted=True)
            arms.append(arm)
        return arms

    @staticmethod
    def _override(key: str, v: Any, where: str) -> Any:
        top = key.split(".")[0]
        if top not in _ARM_SECTIONS and key != "dtype":
            why = ("the data section is shared by every arm, so that each seed gives every "
                   "arm the same split" if top == "data" else "it is the comparison's own")
            raise SpecError(where, f"{key}: cannot differ between arms ({why}); an arm "
                                   f"overrides keys of {', '.join(_ARM_SECTIONS)} or dtype")
        kind = _kind_at(key)
        if isinstance(v, Mapping) and (kind is None and next(iter(v), None) in DISTRIBUTIONS
                                       or kind is not None and not kind.accepts(v)):
            try:
                return check_space(v, key)
            except SpecError as e:
                raise SpecError(where, str(e)) from None
        if isinstance(v, (list, tuple)) and kind is not None and not kind.accepts(v):
            if not v:
                raise SpecError(where, f"{key}: an empty grid; give a value or a non-empty "
                                       "list")
            return copy.deepcopy(list(v))
        return copy.deepcopy(v)


def arm_spec(base: Mapping[str, Any], overrides: Mapping[str, Any], user_batch: bool = True
             ) -> dict[str, Any]:
    """The normalised train spec of one arm: the comparison ``base`` (normalised) with the
    arm's dotted ``overrides`` (values, no grids or spaces) applied, validated whole.

    An arm that names an optimizer (``optimizer`` or ``optimizer.name``) starts from that
    optimizer's defaults; the batch size then follows it unless the user gave one. An arm
    that changes ``model.hidden`` keeps a single activation for its new depth. The data
    section (already checked, its file already read) is the base's, unchanged. Raises
    :class:`SpecError` naming the key.
    """
    raw = {k: copy.deepcopy(v) for k, v in base.items() if not str(k).startswith("_")}
    raw.update(kind="train", compare=None)
    keys = set(overrides)
    acts = raw["model"]["activation"]
    if keys & {"model.hidden", "model"} and "model.activation" not in keys \
            and isinstance(acts, list) and len(set(acts)) <= 1:
        raw["model"]["activation"] = acts[0] if acts else "relu"
    if keys & {"optimizer", "optimizer.name"}:
        raw["optimizer"] = {}
        if not user_batch:
            raw["training"].pop("batch_size", None)
    for key, value in overrides.items():
        parts = key.split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise SpecError(".".join(parts[: i + 1]), f"is {_what(child)}, so an arm "
                                                          f"cannot set {key} inside it")
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    data = base["data"]
    spec = validate(raw, extra_datasets=(data["dataset"],))
    spec["data"]["file"], spec["data"]["dataset"] = data["file"], data["dataset"]
    return spec


def arm_path(i: int, arm: Mapping[str, Any]) -> str:
    """How a message names arm ``i`` of ``compare.arms``."""
    return f"compare.arms[{i}] (label {arm['label']})"


def arm_points(arm: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The overrides of an arm that validation tries: its first candidate of every key,
    then each other candidate (a grid's points, a space's endpoints or options) in turn."""
    over = {k: v for k, v in arm.items() if k != "label"}
    options = {k: candidates(v, is_grid(k, v)) for k, v in over.items()}
    first = {k: v[0] for k, v in options.items()}
    return [first] + [{**first, k: x} for k, v in options.items() for x in v[1:]]


def _check_arms(spec: dict, raw: Mapping[str, Any]) -> None:
    """A comparison's arms and searches, each arm validated as a whole spec at every value
    its grid or space may take (endpoints, options); one line names the arm and the key."""
    cmp = spec["compare"]
    given = raw.get("compare") if isinstance(raw.get("compare"), Mapping) else {}
    user_batch = isinstance(raw.get("training"), Mapping) and "batch_size" in raw["training"]
    if cmp["arms"] is None and cmp["optimizers"] is None:
        raise SpecError("compare.optimizers", "must list optimizers, or give compare.arms")
    if cmp["arms"] is not None:
        if given.get("optimizers") is not None:
            raise SpecError("compare.arms", "give compare.arms or compare.optimizers, not both"
                                            " (optimizers is the shorthand for arms over "
                                            "optimizer)")
        cmp["optimizers"] = None
        tuned = []
        for i, arm in enumerate(cmp["arms"]):
            where = arm_path(i, arm)
            over = {k: v for k, v in arm.items() if k != "label"}
            for point in arm_points(arm):
                try:
                    arm_spec(spec, point, user_batch)
                except SpecError as e:
                    raise SpecError(where, str(e)) from None
            tuned += [(where, k, v) for k, v in over.items()
                      if is_grid(k, v) or is_space(v)]
    else:
        tuned = [(f"compare.optimizers[{i}]", k, v) for i, arm in enumerate(cmp["optimizers"])
                 for k, v in arm.items() if isinstance(v, list) or is_space(v)]
    def error(where: str, key: str, message: str) -> SpecError:
        # an arm of compare.arms is named with its label; an optimizer's key is a path
        if where.startswith("compare.arms"):
            return SpecError(where, f"{key}: {message}")
        return SpecError(_join(where, key), message)

    spaces = [t for t in tuned if is_space(t[2])]
    if spaces and cmp["search"] is None:
        where, key, _ = spaces[0]
        raise error(where, key, "a search space needs compare.search, e.g. "
                                "{method: random, trials: 16}")
    pruner = (cmp["search"] or {}).get("pruner")
    if pruner:  # a trial must train through its rung: the rung's end is its checkpoint
        stops = [("regularization.early_stopping", spec["regularization"]["early_stopping"]),
                 ("training.time_limit_s", spec["training"]["time_limit_s"])]
        stops += [(f"{arm_path(i, arm)}: {k}", v) for i, arm in enumerate(cmp["arms"] or ())
                  for k, v in arm.items()
                  if k.startswith(("regularization.early_stopping", "training.time_limit_s"))]
        for key, value in stops:
            if value is not None:
                raise SpecError("compare.search.pruner", f"successive halving trains every "
                                f"trial to the end of its rung; {key} would stop it early "
                                "(drop the pruner, or the early stop)")
    if cmp["search"] is not None and not spaces:
        raise SpecError("compare.search", "no arm has a search space ({loguniform: [a, b]}, "
                                          "{uniform: [a, b]}, {int: [a, b]}, {choice: [...]})")
    if tuned and spec["data"]["validation"] <= 0:
        where, key, _ = tuned[0]
        raise error(where, key, "grids and searches are tuned on the validation metric: "
                                "set data.validation above 0")


# ------------------------------------------------------------------------ the schema
TASKS = ("auto", "classification", "regression")
ACTIVATIONS = ("relu", "leaky_relu", "prelu", "abs", "tanh", "sigmoid", "linear")
DIAGNOSTICS = ("grad_norm", "curvature", "hessian_extremes", "step_length", "evaluations")
METRICS = ("train_loss", "val_loss", "test_loss", "val_accuracy", "test_accuracy")
DEFAULT_ARMS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]

_PROBABILITY = _FRACTION
_ACTIVATION = Choice(ACTIVATIONS)

_SEARCH = Section({
    "method": (Choice(("random", "qmc", "tpe")), "random"),
    "trials": (Int(1, MAX_GRID_POINTS), 16),
    "wave": (Nullable(Int(1)), None),  # tpe: trials proposed at once (default 4)
    "pruner": (Nullable(Section({
        "successive_halving": (Section({"eta": (Int(2), 3), "min_epochs": (Int(1), 1)},
                                       hint="{eta, min_epochs}"), REQUIRED),
    }, hint="{successive_halving: {eta, min_epochs}}")), None),
}, hint="{method, trials, wave, pruner}")

_COMPARE = Section({
    "optimizers": (Nullable(_Arms()), DEFAULT_ARMS),
    "arms": (Nullable(_ArmList()), None),
    "seeds": (Int(1), 10),
    "tune_seeds": (Int(1), 1),
    "metric": (Choice(METRICS), "test_loss"),
    "target": (Nullable(Float()), None),
    "search": (Nullable(_SEARCH), None),
})

_SCHEMA = Section({
    "name": (Nullable(Str()), None),
    "kind": (Choice(("train", "compare", "suite")), "train"),
    "seed": (Int(0, 2**32 - 1), 0),  # any seed NumPy's legacy RandomState takes too
    "dtype": (Choice(("float32", "float64")), "float32"),
    "device": (Choice(("auto", "cuda", "cpu")), "auto"),
    "data": (Section({
        "dataset": (Str(empty=False), REQUIRED),
        "file": (Bool(), False),  # set by validate; accepted so a normalised spec re-validates
        "task": (Choice(TASKS), "auto"),
        "validation": (_FRACTION, 0.2),
        "test": (_FRACTION, 0.2),
        "standardize": (Bool(), True),
        "pca": (Nullable(Int(1)), None),
        "folds": (Nullable(Int(2)), None),
    }), {}),
    "model": (Section({
        "kind": (Choice(("mlp", "kernel_svm")), "mlp"),
        "hidden": (ListOf(Int(1, MAX_LAYER_WIDTH), name="a list of layer widths"), [64, 64]),
        "activation": (Either((_ACTIVATION, ListOf(_ACTIVATION, name="a list of names"))),
                       "relu"),
        "output": (Choice(("auto", "softmax", "sigmoid", "linear")), "auto"),
        "init": (Choice(("glorot_uniform", "glorot_normal", "he_normal", "lsuv", "zeros")),
                 "glorot_uniform"),
        "bias_init": (Float(), 0.0),
        "output_bias": (Choice(("zeros", "marginal")), "zeros"),
        "dropout": (Section({"input": (_PROBABILITY, 0.0), "hidden": (_PROBABILITY, 0.0)},
                            hint="{input: p, hidden: p}",
                            note="use the mapping even for one value, e.g. {hidden: 0.5}"),
                    {}),
        "batch_norm": (Bool(), False),
        "kernel": (Choice(("linear", "poly", "rbf")), "rbf"),
        "C": (_POSITIVE, 1.0),
        "gamma": (Either((Const("scale"), _POSITIVE)), "scale"),
        "degree": (Int(1), 3),
        "coef0": (Float(), 0.0),
    }), {}),
    "regularization": (Section({
        "l2": (_NONNEGATIVE, 0.0),
        "l1": (_NONNEGATIVE, 0.0),
        "l1_proximal": (Bool(), False),
        "clip_grad_norm": (Nullable(_POSITIVE), None),
        "early_stopping": (Nullable(Section({
            "metric": (Choice(("val_loss", "val_accuracy")), "val_loss"),
            "patience": (Int(1), 10),
            "min_delta": (_NONNEGATIVE, 0.0),
        }, hint="{metric, patience, min_delta}")), None),
        "bagging": (Nullable(Section({"models": (Int(2), 5)}, hint="{models}")), None),
    }), {}),
    "optimizer": (_Optimizer(), {}),
    "training": (Section({
        "epochs": (Int(1), 30),
        "batch_size": (Either((Int(1), Const("full"))), LATER),
        "max_steps": (Nullable(Int(1)), None),
        "log_every": (Either((Const("epoch"), Int(1))), "epoch"),
        "diagnostics": (ListOf(Choice(DIAGNOSTICS), unique=True, name="a list of names"), []),
        "checkpoint_every": (Int(1), 1),
        "time_limit_s": (Nullable(_POSITIVE), None),
        # full: a pass over the training part at each log point (exact, at the logged
        # parameters); running: the mean of the minibatch losses since the last log point
        "train_metrics": (Choice(("full", "running")), "full"),
    }), {}),
    "compare": (Nullable(_COMPARE), None),
})


_SECTIONS = ("data", "model", "regularization", "optimizer", "training")

# ----------------------------------------------------------------- cross-field rules
_MISSING = object()


def _lookup(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, Mapping) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _not_built(spec: dict, raw: Mapping) -> None:
    for key, feature in NOT_BUILT.items():
        path, eq, wanted = key.partition("=")
        if eq:
            have, want = _lookup(spec, path), _parse_value(wanted)
            hit = have == want or (isinstance(have, list) and want in have)
        else:
            hit = _lookup(raw, path) not in (None, _MISSING)
        if hit:
            raise SpecError(path, f"{feature} is not built yet in this version")


def _data_split(spec: dict) -> None:
    v, t = spec["data"]["validation"], spec["data"]["test"]
    if v + t >= 1:
        raise SpecError("data.test", f"data.validation ({v}) + data.test ({t}) must be below 1, "
                                     "to leave data to train on")


def _dataset(spec: dict, base_dir: Path | None, registered: Collection[str]) -> None:
    """A built-in (or registered) name stays a name; a file becomes an absolute path."""
    data = spec["data"]
    name: str = data["dataset"]
    if name in BUILTIN or name in registered:
        data["file"] = False
        return
    p = Path(name).expanduser()
    if not p.suffix and "/" not in name and "\\" not in name:
        hint = _suggest(name, [*BUILTIN, *registered])
        raise SpecError("data.dataset", f"unknown dataset {name!r}"
                        + (f" ({hint})" if hint else "")
                        + f"; built-in: {', '.join(BUILTIN)}; or give a .npz or .csv file")
    if p.suffix.lower() not in (".npz", ".csv"):
        raise SpecError("data.dataset", f"a dataset file must be .npz or .csv, got {name!r}")
    if not p.is_absolute():
        p = (base_dir if base_dir is not None else Path.cwd()) / p
    try:
        p = p.resolve()
        found = p.is_file()
    except (OSError, ValueError):
        found = False
    if not found:
        raise SpecError("data.dataset", f"file not found: {p}")
    data["dataset"], data["file"] = str(p), True


def _activations(spec: dict) -> None:
    """One activation name per hidden layer."""
    model = spec["model"]
    n, act = len(model["hidden"]), model["activation"]
    if isinstance(act, str):
        model["activation"] = [act] * n
    elif len(act) != n:
        raise SpecError("model.activation", f"has {len(act)} entries for {n} hidden layers; "
                                             f"give one name, or a list of {n}")


def _l1_proximal(spec: dict) -> None:
    """The proximal L1 step follows a plain gradient step: sgd only (every arm, in a
    comparison)."""
    if not spec["regularization"]["l1_proximal"]:
        return
    names = [spec["optimizer"]["name"]]
    if spec["kind"] == "compare" and spec.get("compare"):
        if spec["compare"]["optimizers"] is None:
            return  # compare.arms: each arm was validated whole
        names = [a["name"] for a in spec["compare"]["optimizers"]]
    for name in names:
        if name != "sgd":
            raise SpecError("regularization.l1_proximal",
                            f"the proximal L1 step needs optimizer sgd, not {name}")


def _hidden_size(spec: dict) -> None:
    h = spec["model"]["hidden"]
    total = sum(a * b for a, b in zip(h, h[1:], strict=False))
    if total > MAX_HIDDEN_PARAMS:
        raise SpecError("model.hidden", f"{total:,} parameters between hidden layers, above "
                                        f"the limit of {MAX_HIDDEN_PARAMS:,}")


def _closed_form_problem(spec: dict) -> str | None:
    """Why ``closed_form`` cannot fit this model, or None. (With ``task: auto`` the output
    is not known yet; the trainer checks that case.)"""
    model, task = spec["model"], spec["data"]["task"]
    if model["kind"] != "mlp":
        return f"fits a linear model, not model.kind {model['kind']}"
    if model["hidden"]:
        return f"needs a linear model: model.hidden must be [], got {model['hidden']}"
    if model["output"] in ("softmax", "sigmoid"):
        return f"needs a linear output, not model.output {model['output']}"
    if model["output"] == "auto" and task == "classification":
        return "needs a linear output; data.task classification gives softmax or sigmoid"
    if spec["regularization"]["l1"] > 0:
        return "solves the L2 (ridge) objective only; set regularization.l1 to 0"
    if model["dropout"]["input"] > 0:
        return "has no dropout; set model.dropout.input to 0"
    return None


def _closed_form(spec: dict) -> None:
    if spec["optimizer"]["name"] == "closed_form":
        why = _closed_form_problem(spec)
        if why:
            raise SpecError("optimizer.name", f"closed_form {why}")


def _batch_size(spec: dict) -> None:
    """Second-order and line-search methods default to the full batch (SPEC §5)."""
    training = spec["training"]
    if training["batch_size"] is LATER:
        full = spec["optimizer"]["name"] in FULL_BATCH_OPTIMIZERS
        training["batch_size"] = "full" if full else 128


def _compare(spec: dict) -> None:
    """``compare`` only on a comparison, and always filled there."""
    if spec["kind"] != "compare":
        if spec["compare"] is not None:
            raise SpecError("compare", f"only for kind: compare; this job is kind: {spec['kind']}")
        return
    if spec["compare"] is None:
        spec["compare"] = _COMPARE.check({}, "compare")
    for i, arm in enumerate(spec["compare"]["optimizers"] or []):
        why = _closed_form_problem(spec) if arm["name"] == "closed_form" else None
        if why:
            raise SpecError(f"compare.optimizers[{i}]", f"closed_form {why}")


def _accuracy_needs_classes(spec: dict) -> None:
    if spec["data"]["task"] != "regression":
        return
    for path in ("regularization.early_stopping.metric", "compare.metric"):
        metric = _lookup(spec, path)
        if isinstance(metric, str) and metric.endswith("accuracy"):
            raise SpecError(path, f"{metric} needs a classification task; data.task is "
                                  "regression")


def _split_parts(spec: dict) -> dict[str, str]:
    """The parts of the data that the spec reads, each with the key that asks for it:
    ``{"val": "regularization.early_stopping.metric", "test": "compare.metric", ...}``
    (the first key that needs a part names it)."""
    needs: dict[str, str] = {}

    def need(metric: Any, key: str) -> None:
        if isinstance(metric, str) and metric[:4] in ("val_", "test"):
            needs.setdefault("val" if metric.startswith("val_") else "test", key)

    es = spec["regularization"]["early_stopping"]
    if es is not None:
        need(es["metric"], "regularization.early_stopping.metric")
    cmp = spec.get("compare")
    if spec["kind"] == "compare" and cmp:
        need(cmp["metric"], "compare.metric")
        for i, arm in enumerate(cmp.get("optimizers") or ()):
            grid = next((k for k, v in arm.items() if isinstance(v, list)), None)
            if grid is not None:  # a grid is tuned on the validation metric
                needs.setdefault("val", f"compare.optimizers[{i}].{grid}")
        for i, arm in enumerate(cmp.get("arms") or ()):
            grid = next((k for k, v in arm.items() if is_grid(k, v)), None)
            if grid is not None:
                needs.setdefault("val", f"compare.arms[{i}].{grid}")
        if cmp.get("search"):  # searched arms are tuned on the validation metric too
            needs.setdefault("val", "compare.search")
    return needs


def _parts_exist(spec: dict) -> None:
    """A metric is only read on a part that the split makes: a val_* metric (early
    stopping, a comparison's metric, a grid's tuning) needs data.validation above 0, a
    test_* one data.test above 0 (or folds, whose test part is the held-out fold)."""
    data = spec["data"]
    for part, key in _split_parts(spec).items():
        if part == "val" and data["validation"] <= 0:
            raise SpecError(key, "needs a validation part: set data.validation above 0 "
                                 "(it is 0)")
        if part == "test" and data["test"] <= 0 and not data["folds"]:
            raise SpecError(key, "needs a test part: set data.test above 0 (it is 0)")


def _target(spec: dict) -> None:
    """``compare.target`` must be a value the metric can take: an accuracy in [0, 1], a
    loss at or above 0 (a target outside never counts as reached)."""
    cmp = spec.get("compare")
    if spec["kind"] != "compare" or not cmp or cmp.get("target") is None:
        return
    target, metric = cmp["target"], cmp["metric"]
    if metric.endswith("accuracy") and not 0 <= target <= 1:
        raise SpecError("compare.target", f"{target} is not an accuracy ({metric} lies in "
                                          "[0, 1])")
    if metric.endswith("loss") and target < 0:
        raise SpecError("compare.target", f"{target} is below 0, which {metric} never is")


def _bagging(spec: dict) -> None:
    """Bagging trains an ensemble of networks; a kernel SVM is fitted once."""
    if spec["regularization"]["bagging"] and spec["model"]["kind"] != "mlp":
        raise SpecError("regularization.bagging", "bags networks only, not model.kind: "
                                                  f"{spec['model']['kind']}")


def _batch_norm_batch(spec: dict) -> None:
    """Batch norm on minibatches of one sample normalises every unit to 0 (torch refuses
    it too: "expected more than 1 value per channel")."""
    model, bs = spec["model"], spec["training"]["batch_size"]
    if model["batch_norm"] and model["hidden"] and bs == 1:
        raise SpecError("training.batch_size", "batch_norm needs at least 2 samples per "
                                               "minibatch, got 1")


# ------------------------------------------------ rules that need the dataset's shape
def parameter_count(spec: dict, n_features: int, n_out: int) -> int:
    """Parameters of the spec's MLP on data of ``n_features`` (before PCA) and ``n_out``
    outputs, as ``nn.network.layout`` lays them out: weights, biases (batch norm's γ and β
    instead, on hidden layers) and PReLU slopes."""
    model = spec["model"]
    hidden = list(model["hidden"])
    sizes = [spec["data"]["pca"] or n_features, *hidden, n_out]
    acts = model["activation"]
    acts = [acts] * len(hidden) if isinstance(acts, str) else list(acts)
    total = sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))
    for i, width in enumerate(sizes[1:]):
        on_hidden = i < len(hidden)
        total += width * (2 if on_hidden and model["batch_norm"] else 1)
        total += width if on_hidden and acts[i] == "prelu" else 0
    return total


def check_data(spec: dict, *, n_features: int, task: str, n_out: int,
               split: tuple[int, int, int]) -> None:
    """The rules that need the dataset: called at submission, where the client has read it.

    ``task`` is the resolved task, ``n_out`` the network's outputs (classes for softmax, 1
    for sigmoid or one regression target), ``split`` the smallest (train, validation, test)
    sizes the job will see (over its folds). Raises :class:`SpecError` naming the key.
    """
    data = spec["data"]
    n_train, n_val, n_test = split
    if task == "regression":
        for path in ("regularization.early_stopping.metric", "compare.metric"):
            metric = _lookup(spec, path)
            if isinstance(metric, str) and metric.endswith("accuracy"):
                raise SpecError(path, f"{metric} needs a classification task; this dataset "
                                      "is a regression (its labels are not classes)")
    if n_train < 1:
        raise SpecError("data.validation", "no samples are left for training: lower "
                                           "data.validation or data.test")
    for part, key in _split_parts(spec).items():
        if part == "val" and n_val < 1:
            raise SpecError(key, f"needs a validation part, but data.validation "
                                 f"{data['validation']} of this dataset is 0 samples")
        if part == "test" and n_test < 1:
            raise SpecError(key, f"needs a test part, but data.test {data['test']} of this "
                                 "dataset is 0 samples")
    pca = data["pca"]
    if pca is not None and pca > min(n_features, n_train):
        raise SpecError("data.pca", f"{pca} components asked for, but the data has "
                        f"{n_features} features and {n_train} training samples")
    if spec["model"]["kind"] == "mlp":
        _max_params(spec, parameter_count(spec, n_features, n_out))


def _max_params(spec: dict, k: int) -> None:
    """A method with ``max_params`` (newton's full Hessian) refuses a larger model at
    submission rather than failing on a worker."""
    arms: list[tuple[str, Mapping[str, Any]]] = [("optimizer", spec["optimizer"])]
    cmp = spec.get("compare")
    if spec["kind"] == "compare" and cmp:
        if cmp["optimizers"] is None:  # compare.arms: check_data ran on each arm's spec
            return
        arms = [(f"compare.optimizers[{i}]", a) for i, a in enumerate(cmp["optimizers"])]
    for path, arm in arms:
        defaults = OPTIMIZERS.get(arm.get("name"), {})
        if "max_params" not in defaults:
            continue
        limit = arm.get("max_params", defaults["max_params"])
        limit = max(limit) if isinstance(limit, list) else limit
        if k > limit:
            raise SpecError(f"{path}.max_params" if "max_params" in arm else f"{path}.name",
                            f"{arm['name']} is limited to {limit:,} parameters, and this "
                            f"model has {k:,}; use lbfgs or cg_pr, or raise max_params")


def validate(raw: Mapping[str, Any], base_dir: Path | None = None, *,
             extra_datasets: Collection[str] = ()) -> dict[str, Any]:
    """Return the normalised spec of ``raw`` or raise :class:`SpecError` naming the key.

    ``base_dir`` (the spec file's folder; default the working directory) resolves a
    relative dataset path; ``extra_datasets`` are dataset names known to the database
    (``gradq datasets add``), accepted beside the built-ins. ``raw`` is not modified.
    """
    if not isinstance(raw, Mapping):
        raise SpecError("", f"a job spec must be a mapping of keys, got {_what(raw)}")
    if raw.get("kind") == "suite":  # SPEC §12: one comparison per workload (spec/suite.py)
        from gradq.service.spec.suite import validate_suite

        return validate_suite(raw, validate, base_dir, extra_datasets=extra_datasets)
    # A section written as a bare `model:` with everything under it commented out loads as
    # null: read it as "all defaults".
    raw = {k: {} if v is None and k in _SECTIONS else v for k, v in raw.items()}
    spec = _SCHEMA.check(raw, "")
    _not_built(spec, raw)
    _data_split(spec)
    _dataset(spec, Path(base_dir) if base_dir is not None else None, extra_datasets)
    _activations(spec)
    _hidden_size(spec)
    _closed_form(spec)
    _batch_size(spec)
    _compare(spec)
    if spec["compare"] is not None:
        _check_arms(spec, raw)
    _l1_proximal(spec)  # after _compare, which fills a comparison's default arms
    _accuracy_needs_classes(spec)
    _parts_exist(spec)
    _target(spec)
    check_search_method(spec)
    _batch_norm_batch(spec)
    _bagging(spec)
    return spec


# ------------------------------------------------------------------- files and --set
class _AliasRefused(yaml.MarkedYAMLError):
    pass


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases (no alias bombs, no shared nodes)
    and with duplicate keys refused instead of silently keeping the last one."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _AliasRefused(problem="YAML aliases are not allowed (no & anchors or * aliases)",
                                problem_mark=event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: {...}`, merged below
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark)
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class says so
                    break
        return super().construct_mapping(node, deep=deep)


def _yaml_reason(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        reason = "; ".join(part for part in (e.context, e.problem) if part) or "invalid YAML"
        return f"line {mark.line + 1}: {reason}" if mark is not None else reason
    return str(e)


def _parse_value(text: str) -> Any:
    """A ``--set`` value (or a NOT_BUILT value): YAML, loaded safely."""
    return yaml.load(text, Loader=_SpecLoader)  # a SafeLoader subclass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def load_spec_file(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Read a spec file: JSON for ``.json``, YAML otherwise. Raise :class:`SpecError` (one
    line naming the file) for a missing, oversized, empty or malformed file, YAML aliases,
    duplicate keys, or a top level that is not a mapping."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise SpecError("", f"{p}: not a file")
        if size > max_bytes:
            raise SpecError("", f"{p}: {size:,} bytes, above the limit of {max_bytes:,} bytes")
        with p.open("rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise SpecError("", f"{p}: file not found") from None
    except OSError as e:
        raise SpecError("", f"{p}: cannot read: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise SpecError("", f"{p}: above the limit of {max_bytes:,} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError("", f"{p}: not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise SpecError("", f"{p}: the file is empty")
    fmt = "JSON" if p.suffix.lower() == ".json" else "YAML"
    try:
        if fmt == "JSON":
            doc = json.loads(text, object_pairs_hook=_no_duplicates)
        else:
            doc = yaml.load(text, Loader=_SpecLoader)  # a SafeLoader subclass
    except json.JSONDecodeError as e:
        raise SpecError("", f"{p}: invalid JSON: line {e.lineno}: {e.msg}") from None
    except yaml.YAMLError as e:
        raise SpecError("", f"{p}: invalid YAML: {_yaml_reason(e)}") from None
    except RecursionError:
        raise SpecError("", f"{p}: nested too deeply") from None
    except ValueError as e:  # a duplicate JSON key, a YAML date like 2024-13-45
        raise SpecError("", f"{p}: invalid {fmt}: {e}") from None
    if doc is None:
        raise SpecError("", f"{p}: the file is empty")
    if not isinstance(doc, dict):
        raise SpecError("", f"{p}: the top level must be a mapping of keys (data:, model:, "
                            f"...), got {_what(doc)}")
    return doc


def apply_overrides(raw: Mapping[str, Any], sets: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``K=V`` applied: the dotted key ``K`` set to the
    YAML value ``V``, creating mappings on the way (a null one included). Validation
    afterwards names any unknown key."""
    if not isinstance(raw, Mapping):
        raise SpecError("", f"a job spec must be a mapping of keys, got {_what(raw)}")
    out = copy.deepcopy(dict(raw))
    for item in sets:
        key, eq, text = item.partition("=")
        parts = [part.strip() for part in key.split(".")]
        if not eq:
            raise SpecError("--set", f"{item!r} is not KEY=VALUE (e.g. optimizer.lr=0.01)")
        if not all(parts):
            raise SpecError("--set", f"{item!r}: the key must be a dotted path such as "
                                     "optimizer.lr")
        key = ".".join(parts)
        try:
            value = _parse_value(text)
        except (yaml.YAMLError, ValueError, RecursionError) as e:
            reason = _yaml_reason(e) if isinstance(e, yaml.YAMLError) else str(e)
            raise SpecError("--set", f"{key}: cannot read the value {text!r}: {reason}") from None
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise SpecError(".".join(parts[: i + 1]),
                                f"is {_what(child)}, so --set {key} cannot set a key inside it")
            node = child
        node[parts[-1]] = value
    return out


def canonical_json(spec: Any) -> str:
    """The spec as compact JSON with sorted keys, for storage and comparison."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), allow_nan=False)


def lower_is_better(metric: str) -> bool:
    """True for a loss or error, False for an accuracy."""
    if metric.endswith(("loss", "error")):
        return True
    if metric.endswith("accuracy"):
        return False
    raise ValueError(f"unknown metric {metric!r}: a name ending in loss, error or accuracy")
