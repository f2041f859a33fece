"""Search spaces and grids: ``{loguniform: [a, b]}`` and friends, and the values that
validation tries for a grid or a space (its points, endpoints or options)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from .kinds import Float, Int, Kind, SpecError, _bad, _join, _refuse_repeats, _unknown

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



def candidates(value: Any, grid: bool = True) -> list[Any]:
    """The values a setting may take that validation tries: a grid's points (a list, where
    ``grid``), a space's endpoints (or options), or the value itself."""
    if grid and isinstance(value, list):
        return list(value)
    if is_space(value):
        dist, arg = next(iter(value.items()))
        return list(arg) if dist in ("choice", "int") else [float(x) for x in arg]
    return [value]


def _refuse_grid_and_space(arm: Mapping[str, Any], path: str, dotted: bool = False,
                            is_grid: Callable[[str, Any], bool] | None = None) -> None:
    """Refuse an arm tuned by both a grid and a search space. With ``dotted`` (an arm of
    ``compare.arms``) ``is_grid(key, value)`` tells a grid from a list-valued key."""
    grids = [k for k, v in arm.items()
             if (is_grid(k, v) if dotted and is_grid else isinstance(v, list))]
    spaces = [k for k, v in arm.items() if is_space(v)]
    if grids and spaces:
        why = (f"a grid beside the search space of {spaces[0]}: an arm is tuned by a grid "
               "or by a search, not both; write the grid as {choice: [...]}")
        if dotted:
            raise SpecError(path, f"{grids[0]}: {why}")
        raise SpecError(_join(path, grids[0]), why)


