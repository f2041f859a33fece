"""Full-batch second-order and line-search minimizers: newton, cg_fr, cg_pr, bfgs, lbfgs.

Each is a pure ``(init, step)`` pair in the manner of optax: ``state = opt.init(x)`` builds a
small immutable record of fixed-size arrays and counters, and

    x, state, info = opt.step(fun, x, state, hvp=None)

does one iteration — one search direction, one line search — on the flat 1-D parameter
array ``x``, with ``fun(x) -> (loss, grad)`` and, for ``newton``, ``hvp(x, v) -> H·v``.
``info`` holds ``loss`` and ``grad_norm`` at the new ``x``, ``step_length`` (the line
search's α), ``n_evals`` (evaluations of ``fun`` this step) and a few method-specific keys.

Every method's step goes through ``nn.linesearch.strong_wolfe`` (c1 = 1e-4; c2 = 0.9, or 0.1
for conjugate gradients), so the loss never rises from one step to the next. For tests on a
quadratic, ``line_search="exact_quadratic"`` takes the exact step α = −gᵀd / dᵀHd from ``hvp``.
State is immutable: a step returns new arrays and never writes into the old state's. The
state carries the loss and gradient at the ``x`` a step returns (so each step costs only
its line search's evaluations): pass that ``x`` back unchanged, or ``init`` afresh.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy
from gradq.nn import registry
from gradq.nn.backend import array_module
from gradq.nn.linesearch import LineSearchResult, Objective, evaluate, strong_wolfe

Array = Any  # a 1-D NumPy or CuPy array
Hvp = Callable[[Array, Array], Array]
Info = dict[str, Any]

DEFAULTS: Mapping[str, dict[str, Any]] = registry.DefaultsView("second_order", hidden=True)
"""Each minimizer's hyperparameters and defaults: a live view of the registry (``entries.py``),
with the line-search settings the spec does not offer (``max_evals``, ``line_search``)."""
LINE_SEARCHES = ("strong_wolfe", "exact_quadratic")


# --------------------------------------------------------------------------- hyperparameters


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def validate_hyper(name: str, hyper: dict[str, Any]) -> dict[str, Any]:
    """Return ``hyper`` with the defaults of ``name`` filled in; raise ``ValueError`` naming
    the offending key (unknown key, wrong type, or out of range)."""
    if name not in DEFAULTS:
        raise ValueError(f"unknown minimizer {name!r}: choose one of "
                         f"{', '.join(registry.names('second_order'))}")
    out = dict(DEFAULTS[name])
    for key, value in hyper.items():
        if key not in out:
            raise ValueError(
                f"{name}: unknown hyperparameter {key!r}; known: {', '.join(sorted(out))}"
            )
        out[key] = value

    def bad(key: str, why: str) -> ValueError:
        return ValueError(f"{name}: hyperparameter {key!r} = {out[key]!r} {why}")

    for key in ("damping", "c1", "c2"):
        if key in out and not _is_real(out[key]):
            raise bad(key, "must be a finite real number")
    for key in ("max_params", "history", "max_evals"):
        if key in out and not (_is_int(out[key]) and out[key] >= 1):
            raise bad(key, "must be an integer ≥ 1")
    if "restart" in out and out["restart"] is not None and not (
        _is_int(out["restart"]) and out["restart"] >= 1
    ):
        raise bad("restart", "must be an integer ≥ 1, or None for the number of parameters")
    if "damping" in out and out["damping"] < 0:
        raise bad("damping", "must be ≥ 0")
    if not 0 < out["c1"] < 1:
        raise bad("c1", "must lie in (0, 1)")
    if not out["c1"] < out["c2"] < 1:
        raise bad("c2", f"must lie in (c1, 1) = ({out['c1']}, 1)")
    if out["line_search"] not in LINE_SEARCHES:
        raise bad("line_search", f"must be one of {', '.join(LINE_SEARCHES)}")
    for key in ("damping", "c1", "c2"):
        if key in out:
            out[key] = float(out[key])
    for key in ("max_params", "history", "max_evals", "restart"):
        if key in out and out[key] is not None:
            out[key] = int(out[key])
    return out


# --------------------------------------------------------------------------- shared pieces


class Minimizer(NamedTuple):
    """A named minimizer: ``init(x) -> state``; ``step(fun, x, state, hvp) -> (x, state, info)``."""

    name: str
    hyper: dict[str, Any]
    init: Callable[[Array], Any]
    step: Callable[..., tuple[Array, Any, Info]]


def _search(
    fun: Objective, x: Array, f: float, g: Array, d: Array, step0: float,
    hyper: dict[str, Any], hvp: Hvp | None,
) -> LineSearchResult:
    """One line search along ``d``: strong Wolfe, or the exact step on a quadratic,
    α = −gᵀd / dᵀHd (test hook; needs ``hvp``)."""
    if hyper["line_search"] == "exact_quadratic":
        if hvp is None:
            raise ValueError("line_search='exact_quadratic' needs hvp(x, v) -> H·v")
        gd, dhd = float(g @ d), float(d @ hvp(x, d))
        if not gd < 0.0:  # no descent along d (converged, or a lost direction)
            return LineSearchResult(0.0, f, g, 0, False, x)
        if not dhd > 0.0:
            raise ValueError(f"exact_quadratic line search: dᵀHd = {dhd} ≤ 0, not convex along d")
        a = -gd / dhd
        x_new = x + a * d
        f_new, g_new = evaluate(fun, x_new)
        return LineSearchResult(a, f_new, g_new, 1, True, x_new)
    return strong_wolfe(
        fun, x, f, g, d, step0, hyper["c1"], hyper["c2"], hyper["max_evals"]
    )


def _current(fun: Objective, x: Array, state: Any) -> tuple[float, Array, int]:
    """Loss and gradient at ``x``: evaluated on the first step, carried in the state after.

    A state whose ``f`` is nan is evaluated afresh too: a caller that changes the objective
    between steps (a new minibatch) marks the carried loss and gradient stale that way.
    """
    if state.k == 0 or math.isnan(state.f):
        f, g = evaluate(fun, x)
        return f, g, 1
    return state.f, state.g, 0


def _info(ls: LineSearchResult, n_evals: int, **extra: Any) -> Info:
    xp = array_module(ls.g)
    return {
        "loss": ls.f,
        "grad_norm": float(xp.linalg.norm(ls.g)),
        "step_length": ls.step,
        "n_evals": n_evals + ls.n_evals,
        "line_search_ok": ls.ok,
        **extra,
    }


def _first_step(g: Array) -> float:
    """First trial step along −g with no curvature known yet: min(1, 1/‖g‖)."""
    norm = float(array_module(g).linalg.norm(g))
    return min(1.0, 1.0 / norm) if norm > 0 else 1.0


# --------------------------------------------------------------------------- newton


class NewtonState(NamedTuple):
    f: float  # loss at x (nan before the first step)
    g: Array  # gradient at x
    k: int  # steps taken


def _refuse_over_max_params(name: str, x: Array, limit: int, matrix: str,
                            beyond: str = "") -> None:
    """A dense k×k method (newton, bfgs) refuses a model of more than ``limit`` parameters."""
    k = int(x.size)
    if k > limit:
        raise ValueError(
            f"{name}: the model has {k} parameters, above max_params={limit}: {matrix} takes "
            f"O(k²) memory ({k * k * x.dtype.itemsize / 1e6:.0f} MB){beyond}; use lbfgs or "
            f"cg_pr, or raise max_params")


def newton(
    damping: float = 1e-4, max_params: int = 5000, **search: Any
) -> Minimizer:
    """Damped Newton on the full Hessian: solve (H + λI)·p = −g, then line search from α = 1.

    H is built column by column from ``hvp`` (H·eᵢ), symmetrised as (H + Hᵀ)/2 and factored
    by Cholesky; if H + λI is not positive definite, λ grows until it is (N&W algorithm 3.3:
    from β − min Hᵢᵢ, doubling), and ``info['damping_raised']`` and ``info['message']`` say
    so. O(k²) memory and O(k³) time in the k parameters: models above ``max_params`` are
    refused.
    """
    hyper = validate_hyper("newton", {"damping": damping, "max_params": max_params, **search})

    def check_size(x: Array) -> None:
        _refuse_over_max_params("newton", x, hyper["max_params"], "the full Hessian",
                                " and O(k³) time to factor")

    def init(x: Array) -> NewtonState:
        check_size(x)
        return NewtonState(math.nan, array_module(x).zeros_like(x), 0)

    def step(
        fun: Objective, x: Array, state: NewtonState, hvp: Hvp | None = None
    ) -> tuple[Array, NewtonState, Info]:
        if hvp is None:
            raise ValueError("newton needs hvp(x, v) -> H·v, the exact Hessian-vector product")
        check_size(x)
        xp = array_module(x)
        f, g, n0 = _current(fun, x, state)
        k = x.size
        h = xp.empty((k, k), dtype=x.dtype)
        for i in range(k):  # H[:, i] = H·eᵢ
            e = xp.zeros_like(x)
            e[i] = 1
            h[:, i] = hvp(x, e)
        h = 0.5 * (h + h.T)  # symmetrise
        lam = hyper["damping"]
        eye = xp.eye(k, dtype=x.dtype)
        raised = not _is_positive_definite(xp, h + lam * eye)
        if raised:
            # N&W algorithm 3.3: τ₀ = β − min Hᵢᵢ, then τ ← max(2τ, β), β = 1e-3·max|Hᵢᵢ|.
            diag = xp.diag(h)
            beta = 1e-3 * (float(xp.abs(diag).max()) or 1.0)
            lam = max(lam, beta - float(diag.min()))
            while not _is_positive_definite(xp, h + lam * eye):
                lam = max(2.0 * lam, beta)
        p = xp.linalg.solve(h + lam * eye, -g)  # (H + λI)·p = −g
        ls = _search(fun, x, f, g, p, 1.0, hyper, hvp)
        extra: Info = {"damping": lam, "damping_raised": raised, "n_hvp": k}
        if raised:
            extra["message"] = (
                f"Hessian not positive definite: damping raised from {hyper['damping']:g} to "
                f"{lam:g}"
            )
        return ls.x, NewtonState(ls.f, ls.g, state.k + 1), _info(ls, n0, **extra)

    return Minimizer("newton", hyper, init, step)


def _is_positive_definite(xp: Any, a: Array) -> bool:
    """Whether the Cholesky factorisation a = L·Lᵀ succeeds.

    NumPy raises on failure; CuPy by default does not (it leaves the factor partly computed,
    sometimes NaN), so the factor is also checked: a positive finite diagonal, and
    |L·Lᵀ − a| ≤ 10·k·eps·max|a|, the backward-error bound of a completed factorisation.
    """
    try:
        chol = xp.linalg.cholesky(a)
    except numpy.linalg.LinAlgError:
        return False
    diag = xp.diag(chol)
    if not bool(xp.all(xp.isfinite(diag)) & xp.all(diag > 0)):
        return False
    eps = float(numpy.finfo(a.dtype).eps)
    err = float(xp.abs(chol @ chol.T - a).max())
    return err <= 10.0 * a.shape[0] * eps * float(xp.abs(a).max())


# --------------------------------------------------------------------------- conjugate gradients


class CGState(NamedTuple):
    f: float  # loss at x
    g: Array  # gradient at x
    d: Array  # search direction for the next step
    f_prev: float  # loss one step back, for the initial trial step
    k: int  # steps taken
    since_restart: int  # steps taken along the current conjugate sequence (0: d = −g)


def _cg(name: str, formula: str, restart: int | None, **search: Any) -> Minimizer:
    hyper = validate_hyper(name, {"restart": restart, **search})

    def init(x: Array) -> CGState:
        zeros = array_module(x).zeros_like(x)
        return CGState(math.nan, zeros, zeros, math.nan, 0, 0)

    def step(
        fun: Objective, x: Array, state: CGState, hvp: Hvp | None = None
    ) -> tuple[Array, CGState, Info]:
        f, g, n0 = _current(fun, x, state)
        restart_now = state.k == 0
        if not restart_now and not float(g @ state.d) < 0.0:
            # the carried direction is not downhill here: the objective changed under it
            # (a stale state on a new minibatch), so restart along −g
            restart_now = True
        if restart_now:
            d, step0 = -g, _first_step(g)
        else:
            # N&W 3.60: α₀ = 2·(f_k − f_{k−1}) / φ'(0), the minimiser of the quadratic through
            # f_{k−1}, f_k and the slope at α = 0.
            d, gd = state.d, float(g @ state.d)
            step0 = 2.0 * (f - state.f_prev) / gd if gd < 0 else 1.0
            step0 = step0 if math.isfinite(step0) and step0 > 0 else 1.0
        restarted = state.since_restart == 0 or restart_now
        ls = _search(fun, x, f, g, d, step0, hyper, hvp)
        since = (0 if restart_now else state.since_restart) + 1
        n_restart = hyper["restart"] or int(x.size)
        if ls.step == 0.0 or since >= n_restart:
            d_new, since = -ls.g, 0
        else:
            gg = float(g @ g)
            if formula == "fr":  # β_FR = g₊ᵀg₊ / gᵀg
                beta = float(ls.g @ ls.g) / gg if gg > 0 else 0.0
            else:  # β_PR+ = max(0, g₊ᵀ(g₊ − g) / gᵀg)
                beta = max(0.0, float(ls.g @ (ls.g - g)) / gg) if gg > 0 else 0.0
            d_new = -ls.g + beta * d
            if not float(ls.g @ d_new) < 0.0:  # lost descent: restart along −g
                d_new, since = -ls.g, 0
        new = CGState(ls.f, ls.g, d_new, f, state.k + 1, since)
        return ls.x, new, _info(ls, n0, restarted=restarted)

    return Minimizer(name, hyper, init, step)


def cg_fr(restart: int | None = None, **search: Any) -> Minimizer:
    """Nonlinear CG, Fletcher–Reeves: d₊ = −g₊ + β·d with β = ‖g₊‖² / ‖g‖².

    Strong-Wolfe search with c2 = 0.1; restarts along −g every ``restart`` steps (default:
    the number of parameters) and whenever d₊ is not a descent direction (g₊ᵀd₊ ≥ 0).
    """
    return _cg("cg_fr", "fr", restart, **search)


def cg_pr(restart: int | None = None, **search: Any) -> Minimizer:
    """Nonlinear CG, Polak–Ribière+: β = max(0, g₊ᵀ(g₊ − g) / ‖g‖²); restarts as ``cg_fr``."""
    return _cg("cg_pr", "pr", restart, **search)


# --------------------------------------------------------------------------- bfgs


class BFGSState(NamedTuple):
    f: float  # loss at x
    g: Array  # gradient at x
    h_inv: Array  # k×k inverse-Hessian approximation
    k: int  # steps taken
    n_updates: int  # accepted (s, y) updates; 0 means h_inv = I, not yet scaled


def _curvature_ok(s: Array, y: Array, ys: float) -> bool:
    """Keep a pair only when yᵀs > 1e-10·‖s‖·‖y‖ (positive curvature, not rounding noise)."""
    xp = array_module(s)
    return ys > 1e-10 * float(xp.linalg.norm(s)) * float(xp.linalg.norm(y))


def bfgs(**search: Any) -> Minimizer:
    """BFGS on the inverse Hessian (N&W 6.17): with s = x₊ − x, y = g₊ − g, ρ = 1/yᵀs,

        H₊ = (I − ρ·s·yᵀ)·H·(I − ρ·y·sᵀ) + ρ·s·sᵀ,   d = −H·g.

    Before the first update H₀ = (yᵀs / yᵀy)·I (N&W 6.20); an update with
    yᵀs ≤ 1e-10·‖s‖‖y‖ is skipped. O(k²) memory in the k parameters: models above
    ``max_params`` are refused.
    """
    hyper = validate_hyper("bfgs", search)

    def init(x: Array) -> BFGSState:
        _refuse_over_max_params("bfgs", x, hyper["max_params"], "the inverse Hessian")
        xp = array_module(x)
        return BFGSState(math.nan, xp.zeros_like(x), xp.eye(x.size, dtype=x.dtype), 0, 0)

    def step(
        fun: Objective, x: Array, state: BFGSState, hvp: Hvp | None = None
    ) -> tuple[Array, BFGSState, Info]:
        xp = array_module(x)
        f, g, n0 = _current(fun, x, state)
        h = state.h_inv
        d = -(h @ g)
        step0 = 1.0 if state.n_updates else _first_step(g)
        ls = _search(fun, x, f, g, d, step0, hyper, hvp)
        s, y = ls.x - x, ls.g - g
        ys = float(y @ s)
        n_updates = state.n_updates
        updated = ls.step > 0.0 and _curvature_ok(s, y, ys)
        if updated:
            if n_updates == 0:
                h = (ys / float(y @ y)) * xp.eye(x.size, dtype=x.dtype)  # H₀ = (yᵀs/yᵀy)·I
            rho = 1.0 / ys
            hy = h @ y
            # Expanded form of the update: H − ρ(s·(Hy)ᵀ + (Hy)·sᵀ) + (ρ²·yᵀHy + ρ)·s·sᵀ
            h = (
                h
                - rho * (xp.outer(s, hy) + xp.outer(hy, s))
                + (rho * rho * float(y @ hy) + rho) * xp.outer(s, s)
            )
            n_updates += 1
        elif ls.step == 0.0:  # the search found no decrease: forget the curvature, go along −g
            h, n_updates = xp.eye(x.size, dtype=x.dtype), 0
        new = BFGSState(ls.f, ls.g, h, state.k + 1, n_updates)
        return ls.x, new, _info(ls, n0, updated=updated)

    return Minimizer("bfgs", hyper, init, step)


# --------------------------------------------------------------------------- l-bfgs


class LBFGSState(NamedTuple):
    f: float  # loss at x
    g: Array  # gradient at x
    s: Array  # history×k ring buffer of steps s = x₊ − x
    y: Array  # history×k ring buffer of gradient changes y = g₊ − g
    rho: Array  # history ring buffer of ρ = 1/yᵀs
    head: int  # slot the next pair is written to
    count: int  # pairs stored (≤ history)
    k: int  # steps taken


def lbfgs(history: int = 10, **search: Any) -> Minimizer:
    """L-BFGS: d = −H·g by the two-loop recursion (N&W algorithm 7.4) over the last
    ``history`` pairs, held in fixed-size ring buffers, with H₀ = γ·I, γ = sᵀy / yᵀy of the
    newest pair. Pairs with yᵀs ≤ 1e-10·‖s‖‖y‖ (so every yᵀs ≤ 0) are skipped.
    """
    hyper = validate_hyper("lbfgs", {"history": history, **search})
    m = hyper["history"]

    def init(x: Array) -> LBFGSState:
        xp = array_module(x)
        ring = xp.zeros((m, x.size), dtype=x.dtype)
        return LBFGSState(
            math.nan, xp.zeros_like(x), ring, ring.copy(), xp.zeros(m, dtype=x.dtype), 0, 0, 0
        )

    def direction(g: Array, state: LBFGSState) -> Array:
        """Two-loop recursion: q ← g; newest to oldest aᵢ = ρᵢ·sᵢᵀq, q ← q − aᵢ·yᵢ; r ← γ·q;
        oldest to newest bᵢ = ρᵢ·yᵢᵀr, r ← r + (aᵢ − bᵢ)·sᵢ; d = −r."""
        order = [(state.head - 1 - j) % m for j in range(state.count)]  # newest first
        q = g.copy()
        alphas = []
        for i in order:
            a = state.rho[i] * (state.s[i] @ q)  # stays on the device: no host sync
            q -= a * state.y[i]
            alphas.append(a)
        if order:
            newest = order[0]
            gamma = (state.s[newest] @ state.y[newest]) / (state.y[newest] @ state.y[newest])
            q *= gamma
        for i, a in zip(reversed(order), reversed(alphas), strict=True):
            b = state.rho[i] * (state.y[i] @ q)
            q += (a - b) * state.s[i]
        return -q

    def step(
        fun: Objective, x: Array, state: LBFGSState, hvp: Hvp | None = None
    ) -> tuple[Array, LBFGSState, Info]:
        f, g, n0 = _current(fun, x, state)
        d = direction(g, state)
        step0 = 1.0 if state.count else _first_step(g)
        ls = _search(fun, x, f, g, d, step0, hyper, hvp)
        s, y = ls.x - x, ls.g - g
        ys = float(y @ s)
        s_ring, y_ring, rho, head, count = state.s, state.y, state.rho, state.head, state.count
        updated = ls.step > 0.0 and _curvature_ok(s, y, ys)
        if updated:  # write into copies: the old state stays as it was
            s_ring, y_ring, rho = s_ring.copy(), y_ring.copy(), rho.copy()
            s_ring[head], y_ring[head], rho[head] = s, y, 1.0 / ys
            head, count = (head + 1) % m, min(count + 1, m)
        elif ls.step == 0.0:  # the search found no decrease: drop the history, go along −g
            count = 0
        new = LBFGSState(ls.f, ls.g, s_ring, y_ring, rho, head, count, state.k + 1)
        return ls.x, new, _info(ls, n0, updated=updated)

    return Minimizer("lbfgs", hyper, init, step)


# --------------------------------------------------------------------------- registry

_FACTORIES: dict[str, Callable[..., Minimizer]] = {
    "newton": newton,
    "cg_fr": cg_fr,
    "cg_pr": cg_pr,
    "bfgs": bfgs,
    "lbfgs": lbfgs,
}


def make_minimizer(name: str, **hyper: Any) -> Minimizer:
    """Build the minimizer ``name`` (a second-order name of the registry) with ``hyper`` over
    its ``DEFAULTS``."""
    validate_hyper(name, hyper)  # names an unknown minimizer or key before building
    return _FACTORIES[name](**hyper)
