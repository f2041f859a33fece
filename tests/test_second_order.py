"""newton, cg_fr, cg_pr, bfgs, lbfgs (nn/second_order.py) and the strong-Wolfe line search
(nn/linesearch.py), against scipy.optimize's minimum and iteration counts."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.optimize
from _backends import xp_fixture
from gradq.nn import registry
from gradq.nn.backend import to_numpy
from gradq.nn.linesearch import strong_wolfe
from gradq.nn.second_order import (
    DEFAULTS,
    make_minimizer,
    validate_hyper,
)

xp = xp_fixture()
NAMES = registry.names("second_order")  # every minimizer the registry declares

# What is under test: each minimizer and the scipy.optimize method it is measured against.
SCIPY_METHOD = {
    "newton": "Newton-CG",
    "cg_fr": "CG",
    "cg_pr": "CG",
    "bfgs": "BFGS",
    "lbfgs": "L-BFGS-B",
}
LINE_SEARCH_METHODS = NAMES  # every one of them steps through strong_wolfe
L2 = 1e-3
REL_TOL = 1e-7


def test_table_covers_every_minimizer() -> None:
    assert set(SCIPY_METHOD) == set(NAMES) == set(DEFAULTS)


# --------------------------------------------------------------------------- problems


class Problem:
    """Loss, gradient and exact Hessian-vector product of a regularised regression on
    noisy data, written once on ``xp``; parameters are one flat vector (weights, then bias)."""

    fun: Callable[[Any], tuple[Any, Any]]
    hvp: Callable[[Any, Any], Any]
    size: int


def logistic(xp: Any, n: int = 300, d: int = 10, seed: int = 0) -> Problem:
    """J(w, b) = mean(log(1 + e^z) − y·z) + (L2/2)‖w‖², z = Xw + b; labels flipped by noise."""
    rng = np.random.default_rng(seed)
    X_np = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d)
    y_np = (X_np @ rng.normal(size=d) + 0.5 + rng.normal(scale=2.0, size=n) > 0).astype(float)
    X, y = xp.asarray(X_np), xp.asarray(y_np)

    def sigmoid(z: Any) -> Any:
        return 0.5 * (1.0 + xp.tanh(0.5 * z))  # σ(z), without overflow for large |z|

    def fun(t: Any) -> tuple[Any, Any]:
        w, b = t[:-1], t[-1]
        z = X @ w + b
        f = xp.mean(xp.logaddexp(0.0, z) - y * z) + 0.5 * L2 * (w @ w)
        r = (sigmoid(z) - y) / n  # ∂J/∂z
        return f, xp.concatenate([X.T @ r + L2 * w, r.sum()[None]])

    def hvp(t: Any, v: Any) -> Any:
        s = sigmoid(X @ t[:-1] + t[-1])
        u = s * (1.0 - s) / n * (X @ v[:-1] + v[-1])  # H = [X 1]ᵀ·diag(σ(1−σ)/n)·[X 1] + L2
        return xp.concatenate([X.T @ u + L2 * v[:-1], u.sum()[None]])

    p = Problem()
    p.fun, p.hvp, p.size = fun, hvp, d + 1
    return p


def softmax(xp: Any, n: int = 300, d: int = 8, c: int = 4, seed: int = 1) -> Problem:
    """J(W, b) = −mean(log softmax(XW + b)_y) + (L2/2)‖W‖²; labels from noisy logits."""
    rng = np.random.default_rng(seed)
    X_np = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d)
    labels = (X_np @ rng.normal(size=(d, c)) + rng.normal(scale=2.0, size=(n, c))).argmax(1)
    X, Y = xp.asarray(X_np), xp.asarray(np.eye(c)[labels])

    def split(t: Any) -> tuple[Any, Any]:
        return t[: d * c].reshape(d, c), t[d * c :]

    def log_probs(t: Any) -> Any:
        W, b = split(t)
        z = X @ W + b
        z = z - z.max(axis=1, keepdims=True)
        return z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))

    def fun(t: Any) -> tuple[Any, Any]:
        W, _ = split(t)
        lp = log_probs(t)
        f = -xp.mean(xp.sum(Y * lp, axis=1)) + 0.5 * L2 * xp.sum(W * W)
        R = (xp.exp(lp) - Y) / n  # ∂J/∂z
        return f, xp.concatenate([(X.T @ R + L2 * W).ravel(), R.sum(axis=0)])

    def hvp(t: Any, v: Any) -> Any:
        P = xp.exp(log_probs(t))
        V, vb = split(v)
        U = X @ V + vb
        JU = (P * U - P * xp.sum(P * U, axis=1, keepdims=True)) / n  # (diag(p) − ppᵀ)·u
        return xp.concatenate([(X.T @ JU + L2 * V).ravel(), JU.sum(axis=0)])

    p = Problem()
    p.fun, p.hvp, p.size = fun, hvp, d * c + c
    return p


PROBLEMS = {"logistic": logistic, "softmax": softmax}


@functools.cache
def scipy_reference(problem: str) -> tuple[float, dict[str, int]]:
    """f* (the lowest minimum of scipy's four methods at tight tolerance) and, for each
    method, the iterations it needs before its loss is within REL_TOL of f*."""
    p = PROBLEMS[problem](np)
    x0 = np.zeros(p.size)
    traces: dict[str, list[float]] = {}
    finals = []
    for method in sorted(set(SCIPY_METHOD.values())):
        trace: list[float] = []
        options: dict[str, Any] = {"gtol": 1e-12, "maxiter": 10_000}
        kwargs: dict[str, Any] = {}
        if method == "Newton-CG":
            options, kwargs = {"xtol": 1e-14, "maxiter": 10_000}, {"hessp": p.hvp}
        if method == "L-BFGS-B":
            options["ftol"] = 1e-16
        res = scipy.optimize.minimize(
            p.fun, x0, jac=True, method=method, options=options,
            callback=lambda xk, trace=trace: trace.append(float(p.fun(xk)[0])), **kwargs,
        )
        traces[method] = trace
        finals.append(float(res.fun))
    f_star = min(finals)
    assert max(finals) <= f_star * (1 + 1e-9)  # scipy's methods agree with each other
    needed = {
        m: next(i + 1 for i, f in enumerate(t) if f <= f_star * (1 + REL_TOL))
        for m, t in traces.items()
    }
    return f_star, needed


def never_rises(losses: list[float]) -> bool:
    """The loss of each step is at most the previous step's."""
    return all(b <= a for a, b in zip(losses, losses[1:], strict=False))


def run(opt: Any, fun: Any, x: Any, iters: int, hvp: Any = None, stop: Any = None):
    """Step ``iters`` times (or until ``stop(info)``); return x, state and every info."""
    state = opt.init(x)
    infos = []
    for _ in range(iters):
        x, state, info = opt.step(fun, x, state, hvp=hvp)
        infos.append(info)
        if stop is not None and stop(info):
            break
    return x, state, infos


# --------------------------------------------------------------------------- against scipy


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("name", NAMES)
def test_reaches_scipy_minimum_within_twice_its_iterations(xp, name: str, problem: str) -> None:
    # Given scipy's minimum and how many iterations its matching method needs to get there
    f_star, needed = scipy_reference(problem)
    budget = 2 * needed[SCIPY_METHOD[name]]
    p = PROBLEMS[problem](xp)

    # When our method runs from the same start (zeros) for at most twice that many steps
    x, _, infos = run(
        make_minimizer(name), p.fun, xp.zeros(p.size), budget, hvp=p.hvp,
        stop=lambda info: info["loss"] <= f_star * (1 + REL_TOL),
    )

    # Then it is within REL_TOL of f*, and the loss never rose from one step to the next
    losses = [info["loss"] for info in infos]
    assert losses[-1] <= f_star * (1 + REL_TOL), (name, problem, len(infos), budget, losses[-1])
    assert never_rises(losses), losses
    assert x.dtype == xp.float64 and type(x) is type(xp.zeros(1))
    assert all(info["n_evals"] >= 1 for info in infos)
    assert losses[-1] == pytest.approx(float(p.fun(x)[0]), rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_float32_stays_float32_and_converges(xp, name: str) -> None:
    f_star, _ = scipy_reference("logistic")
    p = logistic(xp)
    x, state, infos = run(make_minimizer(name), p.fun, xp.zeros(p.size, dtype=xp.float32), 60,
                          hvp=p.hvp)
    losses = [info["loss"] for info in infos]
    assert x.dtype == xp.float32 and state.g.dtype == xp.float32
    assert losses[-1] <= f_star * (1 + 1e-5)
    assert never_rises(losses)


# --------------------------------------------------------------------------- quadratic


def quadratic(xp: Any, n: int = 20, cond: float = 1e3, seed: int = 0):
    """f = ½xᵀHx − bᵀx with H = Q·diag(λ)·Qᵀ, λ evenly spread over [1, cond].

    (Evenly spread: with log-spaced eigenvalues even textbook linear CG needs 28 steps for
    n = 20 in float64, the loss of orthogonality of finite precision, not a bug here.)
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    H = xp.asarray((q * np.linspace(1.0, cond, n)) @ q.T)
    b = xp.asarray(rng.normal(size=n))

    def fun(x: Any) -> tuple[Any, Any]:
        g = H @ x - b
        return 0.5 * (x @ (g - b)), g

    def hvp(x: Any, v: Any) -> Any:
        return H @ v

    return fun, hvp, b


@pytest.mark.parametrize("name", ["cg_fr", "cg_pr"])
def test_cg_with_exact_line_search_finishes_in_n_steps(xp, name: str) -> None:
    fun, hvp, b = quadratic(xp)
    g0 = float(xp.linalg.norm(b))  # x0 = 0, so g0 = −b
    _, _, infos = run(
        make_minimizer(name, line_search="exact_quadratic"), fun, xp.zeros(20), 20, hvp=hvp,
        stop=lambda info: info["grad_norm"] <= 1e-8 * g0,
    )
    assert infos[-1]["grad_norm"] <= 1e-8 * g0, (len(infos), infos[-1]["grad_norm"] / g0)
    assert len(infos) <= 20


@pytest.mark.parametrize("line_search", ["strong_wolfe", "exact_quadratic"])
def test_undamped_newton_solves_a_quadratic_in_one_step(xp, line_search: str) -> None:
    fun, hvp, b = quadratic(xp)
    opt = make_minimizer("newton", damping=0.0, line_search=line_search)
    x, _, info = opt.step(fun, xp.zeros(20), opt.init(xp.zeros(20)), hvp=hvp)
    assert info["grad_norm"] <= 1e-8 * float(xp.linalg.norm(b))
    assert info["step_length"] == pytest.approx(1.0)
    assert info["damping"] == 0.0 and not info["damping_raised"]
    x_star = np.linalg.solve(to_numpy(hvp(None, xp.eye(20))), to_numpy(b))
    np.testing.assert_allclose(to_numpy(x), x_star, rtol=1e-8)


# --------------------------------------------------------------------------- newton specifics


def test_newton_refuses_more_than_max_params() -> None:
    opt = make_minimizer("newton", max_params=10)
    p = logistic(np)  # 11 parameters
    message = r"11 parameters.*max_params=10.*O\(k²\) memory.*O\(k³\) time"
    with pytest.raises(ValueError, match=message):
        opt.init(np.zeros(11))
    with pytest.raises(ValueError, match=message):
        opt.step(p.fun, np.zeros(11), make_minimizer("newton").init(np.zeros(11)), hvp=p.hvp)
    make_minimizer("newton", max_params=11).init(np.zeros(11))  # at the limit: accepted


def test_newton_needs_hvp() -> None:
    p = logistic(np)
    opt = make_minimizer("newton")
    with pytest.raises(ValueError, match="hvp"):
        opt.step(p.fun, np.zeros(p.size), opt.init(np.zeros(p.size)))


def test_newton_raises_damping_where_the_hessian_is_indefinite(xp) -> None:
    # Given f = x₀⁴ − x₀² + x₁², whose Hessian diag(12x₀² − 2, 2) is indefinite near x₀ = 0
    def fun(x: Any) -> tuple[Any, Any]:
        return x[0] ** 4 - x[0] ** 2 + x[1] ** 2, xp.stack([4 * x[0] ** 3 - 2 * x[0], 2 * x[1]])

    def hvp(x: Any, v: Any) -> Any:
        return xp.stack([(12 * x[0] ** 2 - 2) * v[0], 2 * v[1]])

    # When newton steps from (0.1, 1)
    x, _, infos = run(make_minimizer("newton"), fun, xp.asarray([0.1, 1.0]), 12, hvp=hvp)

    # Then the first step says it raised the damping, and it still ends at (1/√2, 0)
    assert infos[0]["damping_raised"] and infos[0]["damping"] > 1.88
    assert "not positive definite" in infos[0]["message"]
    assert not infos[-1]["damping_raised"]
    np.testing.assert_allclose(to_numpy(x), [1 / math.sqrt(2), 0.0], atol=1e-8)
    losses = [info["loss"] for info in infos]
    assert never_rises(losses)


# --------------------------------------------------------------------------- state


def test_lbfgs_state_is_a_fixed_ring_and_steps_do_not_mutate_it(xp) -> None:
    p = softmax(xp)
    opt = make_minimizer("lbfgs", history=3)
    x, state, _ = run(opt, p.fun, xp.zeros(p.size), 6, hvp=p.hvp)
    assert state.s.shape == state.y.shape == (3, p.size) and state.rho.shape == (3,)
    assert state.count == 3 and 0 <= state.head < 3
    before = [to_numpy(a).copy() for a in (state.s, state.y, state.rho, state.g)]
    opt.step(p.fun, x, state)
    for old, now in zip(before, (state.s, state.y, state.rho, state.g), strict=True):
        np.testing.assert_array_equal(old, to_numpy(now))


def test_cg_restarts_every_restart_steps() -> None:
    p = logistic(np)
    _, _, infos = run(make_minimizer("cg_pr", restart=3), p.fun, np.zeros(p.size), 7)
    assert [info["restarted"] for info in infos][::3] == [True, True, True]


# --------------------------------------------------------------------------- line search


def test_strong_wolfe_conditions_hold(xp) -> None:
    p = softmax(xp)
    rng = np.random.default_rng(3)
    x = xp.asarray(rng.normal(scale=0.3, size=p.size))
    f0, g0 = p.fun(x)
    f0 = float(f0)
    for scale in (1e-3, 1.0, 1e3):  # steps far too short, about right, far too long
        d = -g0 * scale + xp.asarray(rng.normal(scale=1e-3 * scale, size=p.size))
        res = strong_wolfe(p.fun, x, f0, g0, d, 1.0, c1=1e-4, c2=0.9, max_evals=30)
        df0 = float(g0 @ d)
        assert res.ok and res.n_evals <= 30
        assert res.f <= f0 + 1e-4 * res.step * df0  # sufficient decrease
        assert abs(float(res.g @ d)) <= 0.9 * abs(df0)  # curvature
        assert float(p.fun(x + res.step * d)[0]) == pytest.approx(res.f, rel=1e-12)


def test_strong_wolfe_refuses_an_ascent_direction() -> None:
    p = logistic(np)
    x = np.zeros(p.size)
    f0, g0 = p.fun(x)
    res = strong_wolfe(p.fun, x, f0, g0, g0, 1.0)
    assert (res.step, res.n_evals, res.ok) == (0.0, 0, False) and res.f == f0


def test_strong_wolfe_never_returns_a_higher_loss() -> None:
    # Given a budget too small to meet the curvature condition on a very long first trial
    p = logistic(np)
    x = np.zeros(p.size)
    f0, g0 = p.fun(x)
    res = strong_wolfe(p.fun, x, f0, g0, -g0, 1e6, max_evals=2)
    assert res.f <= f0 and res.n_evals == 2


# --------------------------------------------------------------------------- hyperparameters


def test_validate_hyper_fills_defaults() -> None:
    assert validate_hyper("lbfgs", {}) == DEFAULTS["lbfgs"]
    assert validate_hyper("newton", {"damping": 0})["damping"] == 0.0
    assert validate_hyper("cg_pr", {})["c2"] == 0.1 and validate_hyper("bfgs", {})["c2"] == 0.9
    assert make_minimizer("cg_fr", restart=5).hyper["restart"] == 5


@pytest.mark.parametrize(
    ("name", "hyper", "key"),
    [
        ("newton", {"lr": 0.1}, "lr"),
        ("bfgs", {"history": 5}, "history"),
        ("newton", {"damping": -1e-3}, "damping"),
        ("newton", {"damping": "1e-4"}, "damping"),
        ("newton", {"max_params": 0}, "max_params"),
        ("newton", {"max_params": 10.0}, "max_params"),
        ("lbfgs", {"history": 0}, "history"),
        ("lbfgs", {"history": True}, "history"),
        ("cg_fr", {"restart": 0}, "restart"),
        ("cg_pr", {"restart": 2.5}, "restart"),
        ("bfgs", {"c1": 0.0}, "c1"),
        ("bfgs", {"c1": 1.0}, "c1"),
        ("bfgs", {"c1": 0.5, "c2": 0.4}, "c2"),
        ("lbfgs", {"c2": 1.0}, "c2"),
        ("bfgs", {"line_search": "backtracking"}, "line_search"),
        ("adam", {}, "adam"),
    ],
)
def test_validate_hyper_names_the_bad_key(name: str, hyper: dict, key: str) -> None:
    with pytest.raises(ValueError, match=repr(key) if name != "adam" else key):
        validate_hyper(name, hyper)
    with pytest.raises(ValueError):
        make_minimizer(name, **hyper)


def test_a_stale_state_is_evaluated_afresh() -> None:
    """A caller that changes the objective between steps (the trainer on minibatches) marks
    the carried loss stale with f = nan; the next step must evaluate, not search from nan."""
    A = np.diag([1.0, 10.0])
    for name in NAMES:
        opt = make_minimizer(name)
        x = np.array([1.0, 1.0])
        state = opt.init(x)
        hvp = (lambda _x, v: A @ v) if name == "newton" else None
        for shift in (0.0, 0.5, -0.5):  # three different quadratics, one per "batch"
            fun = (lambda b: lambda z: (0.5 * (z - b) @ A @ (z - b), A @ (z - b)))(shift)
            before = fun(x)[0]
            x, state, _ = opt.step(fun, x, state, hvp=hvp)
            assert fun(x)[0] < before, (name, shift)  # every step moves downhill
            state = state._replace(f=float("nan"))
