"""A strong-Wolfe line search, shared by every line-search minimizer (``second_order.py``).

Along a descent direction ``d`` from ``x`` the search looks at ``φ(α) = f(x + α·d)`` and
returns a step ``α`` that satisfies the strong Wolfe conditions (Nocedal & Wright, 3.7):

    sufficient decrease   φ(α) ≤ φ(0) + c1·α·φ'(0)
    curvature             |φ'(α)| ≤ c2·|φ'(0)|          with φ'(α) = ∇f(x + α·d)ᵀd

It is algorithm 3.5 (bracketing by extrapolation) with algorithm 3.6 (``zoom``), both
choosing their trial steps by the cubic interpolation of 3.59 on the two end points' values
and slopes, safeguarded by bisection. Every trial evaluates loss and gradient together:
``fun(x) -> (f, g)``. The scalars (``f``, ``φ'``) are read to the host once per evaluation,
which is fine for the full-batch methods that use this search; the arrays stay on ``xp``.

The search never returns a point with a higher loss than ``f0``: when it runs out of
evaluations it falls back to the best point found that satisfies sufficient decrease, or to
``α = 0`` (``x`` itself), with ``ok=False``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

Array = Any  # a 1-D NumPy or CuPy array
Objective = Callable[[Array], tuple[Any, Array]]


class LineSearchResult(NamedTuple):
    """What a line search found: ``x = x0 + step·d`` with its loss ``f`` and gradient ``g``."""

    step: float
    f: float
    g: Array
    n_evals: int
    ok: bool  # True when both strong Wolfe conditions hold at ``step``
    x: Array


class _Point(NamedTuple):
    """One evaluated trial step: α, φ(α), φ'(α) and the arrays behind them."""

    a: float
    f: float
    df: float
    x: Array
    g: Array


def evaluate(fun: Objective, x: Array) -> tuple[float, Array]:
    """Call ``fun(x)``; return the loss as a host float and the gradient in ``x``'s dtype."""
    f, g = fun(x)
    f = float(f)
    g = g.astype(x.dtype, copy=False).reshape(x.shape)
    return (f if math.isfinite(f) else math.inf), g


def cubic_minimizer(a: float, fa: float, da: float, b: float, fb: float, db: float) -> float:
    """Minimiser of the cubic through (a, fa, da) and (b, fb, db) (Nocedal & Wright 3.59).

    d1 = φ'(a) + φ'(b) − 3·(φ(a) − φ(b))/(a − b)
    d2 = sign(b − a)·√(d1² − φ'(a)·φ'(b))
    α  = b − (b − a)·(φ'(b) + d2 − d1)/(φ'(b) − φ'(a) + 2·d2)

    Returns ``nan`` when the cubic has no minimiser (negative discriminant) or a value is
    not finite; callers then bisect.
    """
    try:
        d1 = da + db - 3.0 * (fa - fb) / (a - b)
        disc = d1 * d1 - da * db
        if not math.isfinite(disc) or disc < 0.0:
            return math.nan
        d2 = math.copysign(math.sqrt(disc), b - a)
        denom = db - da + 2.0 * d2
        if denom == 0.0:
            return math.nan
        return b - (b - a) * (db + d2 - d1) / denom
    except (ZeroDivisionError, OverflowError):
        return math.nan


def strong_wolfe(
    fun: Objective,
    x: Array,
    f0: float,
    g0: Array,
    d: Array,
    step0: float = 1.0,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_evals: int = 25,
    step_max: float = 1e10,
) -> LineSearchResult:
    """Find ``α`` with φ(α) ≤ φ(0) + c1·α·φ'(0) and |φ'(α)| ≤ c2·|φ'(0)| (N&W 3.5/3.6).

    ``f0, g0`` are the loss and gradient at ``x``; ``d`` must be a descent direction
    (``g0ᵀd < 0``), otherwise the search returns ``step=0, ok=False`` without evaluating.
    ``step0`` is the first trial (1 for Newton and quasi-Newton directions).
    """
    f0 = float(f0)
    df0 = float(g0 @ d)  # φ'(0) = ∇f(x)ᵀd
    start = _Point(0.0, f0, df0, x, g0)
    if not (df0 < 0.0) or not math.isfinite(f0):
        return LineSearchResult(0.0, f0, g0, 0, False, x)
    ctx = _Search(fun, x, d, f0, df0, c1, c2, max_evals)

    prev = start
    a = min(max(float(step0), 0.0), step_max) or 1.0
    while ctx.evals < max_evals:
        cur = ctx.trial(a)
        # Algorithm 3.5: the step is too long (no sufficient decrease, or worse than the last
        # trial), so a good step lies in [prev, cur].
        if not ctx.armijo(cur) or (prev is not start and cur.f >= prev.f):
            return ctx.zoom(prev, cur)
        if abs(cur.df) <= -c2 * df0:
            return ctx.done(cur, True)
        # Slope turned non-negative: the minimum along d is between cur and prev.
        if cur.df >= 0.0:
            return ctx.zoom(cur, prev)
        if cur.a >= step_max:
            return ctx.done(cur, False)
        # Still going down: extrapolate into [a + 1.1Δ, a + 4Δ], Δ = a − a_prev.
        delta = cur.a - prev.a
        lo, hi = cur.a + 1.1 * delta, cur.a + 4.0 * delta
        a_next = cubic_minimizer(prev.a, prev.f, prev.df, cur.a, cur.f, cur.df)
        a = min(a_next if lo <= a_next <= hi else hi, step_max)
        prev = cur
    # Out of evaluations while extrapolating: prev satisfies sufficient decrease (or is x).
    return ctx.done(prev, False)


class _Search:
    """The state shared by the bracketing phase and ``zoom`` of one line search."""

    def __init__(
        self, fun: Objective, x: Array, d: Array, f0: float, df0: float,
        c1: float, c2: float, max_evals: int,
    ) -> None:
        self.fun, self.x, self.d = fun, x, d
        self.f0, self.df0, self.c1, self.c2 = f0, df0, c1, c2
        self.max_evals = max_evals
        self.evals = 0

    def trial(self, a: float) -> _Point:
        """Evaluate φ(a) and φ'(a) at x + a·d."""
        x_a = self.x + a * self.d
        f, g = evaluate(self.fun, x_a)
        self.evals += 1
        df = float(g @ self.d) if math.isfinite(f) else math.nan
        return _Point(a, f, df, x_a, g)

    def armijo(self, p: _Point) -> bool:
        """Sufficient decrease: φ(a) ≤ φ(0) + c1·a·φ'(0)."""
        return p.f <= self.f0 + self.c1 * p.a * self.df0

    def done(self, p: _Point, ok: bool) -> LineSearchResult:
        return LineSearchResult(p.a, p.f, p.g, self.evals, ok, p.x)

    def zoom(self, lo: _Point, hi: _Point) -> LineSearchResult:
        """Algorithm 3.6: shrink [lo, hi] (either order) keeping φ(lo) the lowest sufficient-
        decrease value seen and φ'(lo)·(hi − lo) < 0, until a trial meets both conditions."""
        while self.evals < self.max_evals:
            width = hi.a - lo.a
            if abs(width) <= 1e-14 * max(abs(lo.a), abs(hi.a)):
                break  # the bracket has collapsed to rounding level
            a = cubic_minimizer(lo.a, lo.f, lo.df, hi.a, hi.f, hi.df)
            left, right = min(lo.a, hi.a), max(lo.a, hi.a)
            margin = 0.1 * abs(width)
            if not (left + margin <= a <= right - margin):
                a = lo.a + 0.5 * width  # safeguard: bisect
            cur = self.trial(a)
            if not self.armijo(cur) or cur.f >= lo.f:
                hi = cur
            else:
                if abs(cur.df) <= -self.c2 * self.df0:
                    return self.done(cur, True)
                if cur.df * (hi.a - lo.a) >= 0.0:
                    hi = lo
                lo = cur
        # Out of evaluations: lo is the best point with sufficient decrease (α=0 when none).
        return self.done(lo, False)
