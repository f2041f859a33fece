"""The field-kind framework of the job spec: :class:`SpecError`, its messages, and the kinds
(:class:`Int`, :class:`Float`, :class:`Choice`, :class:`Section`, ...) that each check and
normalise one value, naming the key's dotted path in one line when it is wrong."""

from __future__ import annotations

import copy
import difflib
import json
import math
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gradq.service.errors import UsageError

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



def canonical_json(spec: Any) -> str:
    """The spec as compact JSON with sorted keys, for storage and comparison."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), allow_nan=False)

