"""Every optimizer of docs/optimizers.md (nn/optimizers.py, nn/second_order.py, nn/fused.py), end
to end.

Step-by-step conformance with torch.optim is in test_conformance.py and the scipy oracles for
the second-order methods in test_second_order.py; here: the table of what is under test,
NumPy references written from the book for the two rules torch lacks, divergence, every
optimizer through the trainer on both backends, monotone line searches, checkpoint
round-trips, the fused GPU kernels against the NumPy path, and the minibatch warnings.
"""

from __future__ import annotations

import functools
import io
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml
from _backends import xp_fixture
from click.testing import CliRunner
from gradq.cli.main import main
from gradq.nn import fused, registry, second_order
from gradq.nn.backend import gpu_available, to_numpy
from gradq.nn.datasets import load_builtin
from gradq.nn.optimizers import (
    FIRST_ORDER_DEFAULTS,
    apply_updates,
    make_optimizer,
    state_from_arrays,
    state_to_arrays,
)
from gradq.nn.second_order import validate_hyper
from gradq.service import submit
from gradq.service.spec import FULL_BATCH_OPTIMIZERS, OPTIMIZERS, validate
from gradq.train.interface import NullHooks
from gradq.train.trainer import Trainer
from gradq.workers.data import prepare_splits

xp = xp_fixture()

# ------------------------------------------------------------------- what is under test
# Every optimizer, its kind, and the hyperparameters it trains the tiny MLP with below
# (defaults where they make progress in a few steps).
MINIMIZERS = registry.names("second_order")  # the second-order names, from the registry

TABLE: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("first_order", {"lr": 0.1}),
    "momentum": ("first_order", {"lr": 0.05}),
    "nesterov": ("first_order", {"lr": 0.05}),
    "adagrad": ("first_order", {"lr": 0.1}),
    "rmsprop": ("first_order", {"lr": 0.01, "momentum": 0.5, "centered": True}),
    "rmsprop_nesterov": ("first_order", {"lr": 0.01}),
    "adam": ("first_order", {"lr": 0.01, "amsgrad": True}),
    "adadelta": ("first_order", {}),
    "delta_bar_delta": ("first_order", {"lr": 0.05}),
    "closed_form": ("closed_form", {}),
    "newton": ("second_order", {}),
    "cg_fr": ("second_order", {}),
    "cg_pr": ("second_order", {}),
    "bfgs": ("second_order", {}),
    "lbfgs": ("second_order", {"history": 5}),
}
ITERATIVE = [n for n, (kind, _) in TABLE.items() if kind != "closed_form"]

# The update rules with a fused kernel: (optimizer, hyperparameters, schedule) covering every
# kernel of nn.fused.RULES (checked below).
SCHEDULE = {"kind": "linear", "final_lr": 0.001, "steps": 3}
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any] | None]] = {
    "sgd": ("sgd", {}, None),
    "sgd_schedule": ("sgd", {}, SCHEDULE),
    "momentum": ("momentum", {}, None),
    "nesterov": ("nesterov", {}, None),
    "adagrad": ("adagrad", {}, None),
    "rmsprop": ("rmsprop", {}, None),
    "rmsprop_centered": ("rmsprop", {"centered": True}, None),
    "rmsprop_momentum": ("rmsprop", {"momentum": 0.5}, None),
    "rmsprop_centered_momentum": ("rmsprop", {"momentum": 0.5, "centered": True}, None),
    "adam": ("adam", {}, None),
    "adam_schedule": ("adam", {}, SCHEDULE),
    "adam_amsgrad": ("adam", {"amsgrad": True}, None),
    "adadelta": ("adadelta", {}, None),
    "rmsprop_nesterov": ("rmsprop_nesterov", {}, None),
    "rmsprop_nesterov_schedule": ("rmsprop_nesterov", {}, SCHEDULE),
    "delta_bar_delta": ("delta_bar_delta", {"kappa": 0.01}, None),
}


def test_table_covers_every_exported_optimizer() -> None:
    exported = set(FIRST_ORDER_DEFAULTS) | set(MINIMIZERS) | {"closed_form"}
    assert set(TABLE) == exported == set(OPTIMIZERS)
    for name, (kind, _) in TABLE.items():
        assert (kind == "first_order") == (name in FIRST_ORDER_DEFAULTS)
        assert (kind == "second_order") == (name in MINIMIZERS)


# docs/optimizers.md's defaults column, written out by hand (not derived from any table in the code)
SPEC_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.01},
    "momentum": {"lr": 0.01, "momentum": 0.9},
    "nesterov": {"lr": 0.01, "momentum": 0.9},
    "adagrad": {"lr": 0.01, "eps": 1e-10},
    "rmsprop": {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "momentum": 0, "centered": False},
    "rmsprop_nesterov": {"lr": 0.001, "alpha": 0.9, "momentum": 0.9, "eps": 1e-6},
    "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "amsgrad": False},
    "adadelta": {"lr": 1.0, "rho": 0.9, "eps": 1e-6},
    "delta_bar_delta": {"lr": 0.01, "kappa": 1e-4, "phi": 0.1, "theta": 0.7},
    "closed_form": {},
    "newton": {"damping": 1e-4, "max_params": 5000},
    "cg_fr": {"restart": None},  # None: n params
    "cg_pr": {"restart": None},
    "bfgs": {"max_params": 5000},
    "lbfgs": {"history": 10},
}
LINE_SEARCH_KEYS = {"c1", "c2"}  # beyond docs/optimizers.md: the Wolfe constants of line searches


def test_spec_defaults_agree_with_the_spec_reference() -> None:
    assert set(SPEC_DEFAULTS) == set(OPTIMIZERS)
    for name, table in SPEC_DEFAULTS.items():
        # the spec's table, nn's first-order table and the second-order minimizers agree
        # with docs/optimizers.md key by key; only line-search constants may be added
        offered = OPTIMIZERS[name]
        assert set(offered) - set(table) <= LINE_SEARCH_KEYS, name
        assert {k: offered[k] for k in table} == table, name
        if name in FIRST_ORDER_DEFAULTS:
            assert FIRST_ORDER_DEFAULTS[name] == table, name
        if name in MINIMIZERS:
            assert {k: second_order.DEFAULTS[name][k] for k in offered} == offered, name
            assert {k: v for k, v in validate_hyper(name, {}).items() if k in table} == table


# -------------------------------------------------------------------- a small problem
def logistic_problem(n: int = 40, d: int = 5, seed: int = 0
                     ) -> tuple[np.ndarray, Any]:
    """θ₀ and ∇J(θ) of a logistic regression on noisy data; θ = (w, b), float64."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=d)
    y = (X @ rng.normal(size=d) + rng.normal(scale=1.5, size=n) > 0).astype(float)

    def grad(theta: np.ndarray) -> np.ndarray:
        z = X @ theta[:-1] + theta[-1]
        r = 0.5 * (1 + np.tanh(0.5 * z)) - y  # σ(z) − y
        return np.concatenate([X.T @ r, [r.sum()]]) / n

    return rng.normal(scale=0.5, size=d + 1), grad


# -------------------------------------------- the book's pseudocode, step by step
def book_rmsprop_nesterov(grad: Any, theta: np.ndarray, lr: float, rho: float, alpha: float,
                          delta: float, steps: int) -> list[tuple[np.ndarray, ...]]:
    """Goodfellow et al., algorithm 8.6 (δ inside the root as in algorithm 8.5)."""
    v = np.zeros_like(theta)
    r = np.zeros_like(theta)
    out = []
    for _ in range(steps):
        interim = theta + alpha * v  # θ̃ ← θ + αv
        g = grad(interim)  # g at the interim point
        r = rho * r + (1 - rho) * g * g  # r ← ρr + (1−ρ) g ⊙ g
        v = alpha * v - lr * g / np.sqrt(r + delta)  # v ← αv − ε/√(r+δ) ⊙ g
        theta = theta + v  # θ ← θ + v
        out.append((theta, v, r))
    return out


def test_rmsprop_nesterov_follows_algorithm_8_6() -> None:
    # Given: the book's algorithm 8.6 run on a logistic regression
    theta0, grad = logistic_problem()
    lr, rho, alpha, delta, steps = 0.05, 0.9, 0.8, 1e-6, 30
    book = book_rmsprop_nesterov(grad, theta0, lr, rho, alpha, delta, steps)
    # When: gradq's transform runs on its buffer φ = θ + αv, the gradient taken at φ
    t = make_optimizer("rmsprop_nesterov",
                       {"lr": lr, "alpha": rho, "momentum": alpha, "eps": delta})
    phi = theta0.copy()  # v₀ = 0, so φ₀ = θ₀
    state = t.init(phi)
    for theta, v, r in book:
        updates, state = t.update(grad(phi), state, phi)
        phi = phi + updates
        # Then: at every step the buffer is θ + αv, and the state is the book's (r, v)
        np.testing.assert_allclose(phi, theta + alpha * v, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state.velocity, v, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state.sq, r, rtol=1e-12, atol=1e-14)
    assert int(state.count) == steps


def jacobs_delta_bar_delta(grad: Any, p: np.ndarray, lr: float, kappa: float, phi: float,
                           theta: float, steps: int) -> tuple[list[tuple[np.ndarray, ...]],
                                                               dict[str, int]]:
    """Jacobs (1988), one parameter at a time: the rate grows by κ while δ(t) keeps the sign
    of δ̄(t−1), shrinks by the factor 1−φ when it flips; δ̄(t) = (1−θ)δ(t) + θδ̄(t−1)."""
    p = p.copy()
    rate = np.full_like(p, lr)
    bar = np.zeros_like(p)
    out, moves = [], {"grew": 0, "shrank": 0}
    for _ in range(steps):
        g = grad(p)
        for i in range(p.size):
            if bar[i] * g[i] > 0:
                rate[i] += kappa
                moves["grew"] += 1
            elif bar[i] * g[i] < 0:
                rate[i] *= 1 - phi
                moves["shrank"] += 1
            bar[i] = (1 - theta) * g[i] + theta * bar[i]
            p[i] -= rate[i] * g[i]
        out.append((p.copy(), rate.copy(), bar.copy()))
    return out, moves


def test_delta_bar_delta_follows_jacobs_rule() -> None:
    # Given: Jacobs' rule, written per parameter, with steps large enough to overshoot
    p0, grad = logistic_problem(seed=1)
    lr, kappa, phi, theta, steps = 2.0, 0.05, 0.3, 0.5, 40
    reference, moves = jacobs_delta_bar_delta(grad, p0, lr, kappa, phi, theta, steps)
    assert moves["grew"] > 0 and moves["shrank"] > 0  # both branches are exercised
    # When: gradq's transform runs the same problem
    t = make_optimizer("delta_bar_delta", {"lr": lr, "kappa": kappa, "phi": phi,
                                           "theta": theta})
    p = p0.copy()
    state = t.init(p)
    for want_p, want_rate, want_bar in reference:
        updates, state = t.update(grad(p), state, p)
        p = p + updates
        # Then: parameters, rates and the running average agree at every step
        np.testing.assert_allclose(p, want_p, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state.rates, want_rate, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state.bar, want_bar, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------- divergence
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_a_far_too_large_learning_rate_ends_as_diverged(tmp_path: Path) -> None:
    # Given: plain SGD at lr 1e6 on least squares, which overflows within a few dozen steps
    spec = {"dtype": "float64",
            "data": {"dataset": "diabetes"},
            "model": {"hidden": [], "output": "linear"},
            "optimizer": {"name": "sgd", "lr": 1e6},
            "training": {"epochs": 200, "batch_size": "full", "log_every": 1}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    runner = CliRunner()
    # When
    run = runner.invoke(main, ["run", str(path), "--json"])
    # Then: exit code 1, status diverged, and the error names the step
    assert run.exit_code == 1, run.output
    doc = json.loads(run.stdout)
    assert doc["status"] == "diverged"
    match = re.search(r"at step (\d+)", doc["error"] or "")
    assert match, doc["error"]
    step = int(match.group(1))
    assert 0 < step < 200
    status = runner.invoke(main, ["status", doc["id"], "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["status"] == "diverged"
    curves = runner.invoke(main, ["curves", doc["id"], "--json", "--metric", "train_loss"])
    assert json.loads(curves.stdout)["metrics"]["train_loss"]["step"][-1] == step


# ------------------------------------------------------------- through the trainer
@functools.cache
def _dataset(name: str) -> Any:
    return load_builtin(name)


def trainer_for(name: str, hyper: dict[str, Any], xp: ModuleType, *, dtype: str = "float64",
                dataset: str = "iris", hidden: tuple[int, ...] = (8,), epochs: int = 8,
                batch: Any = None, **training: Any) -> Trainer:
    """A Trainer for optimizer ``name`` on a tiny MLP (one tanh hidden layer)."""
    if batch is None:
        batch = "full" if name in FULL_BATCH_OPTIMIZERS else 32
    raw = {"seed": 3, "dtype": dtype,
           "data": {"dataset": dataset},
           "model": {"hidden": list(hidden), "activation": "tanh"},
           "optimizer": {"name": name, **hyper},
           "training": {"epochs": epochs, "batch_size": batch, **training}}
    spec = validate(raw)
    data = prepare_splits(spec, _dataset(dataset))
    return Trainer(spec, data, xp)


def curve(trainer: Trainer, metric: str = "train_loss") -> np.ndarray:
    rows = [r for r in trainer.hooks.rows if r[0] == metric]  # type: ignore[attr-defined]
    return np.array([r[4] for r in sorted(rows, key=lambda r: r[1])])


@pytest.mark.parametrize("name", ITERATIVE)
def test_every_optimizer_trains_a_tiny_mlp(xp: ModuleType, name: str) -> None:
    # Given: a one-hidden-layer network (float32 for first-order methods, as by default)
    kind, hyper = TABLE[name]
    dtype = "float32" if kind == "first_order" else "float64"
    tr = trainer_for(name, hyper, xp, dtype=dtype, log_every=1)
    # When
    outcome = tr.run()
    # Then: it ran to the end and lowered the training loss
    assert outcome.status == "succeeded", outcome.error
    losses = curve(tr)
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses
    assert outcome.final["train_loss"] == pytest.approx(losses[-1])


def test_closed_form_reaches_the_least_squares_minimum(xp: ModuleType) -> None:
    # closed_form needs a linear model: one step from zeros to the exact minimiser, which
    # an iterative method does not beat
    exact = trainer_for("closed_form", {}, xp, dataset="diabetes", hidden=())
    outcome = exact.run()
    assert outcome.status == "succeeded", outcome.error
    initial, final = curve(exact)[0], outcome.final["train_loss"]  # the runner stores step 1
    assert final < initial
    iterative = trainer_for("lbfgs", {}, xp, dataset="diabetes", hidden=(), epochs=50)
    iterative.run()
    assert final <= curve(iterative)[-1] * (1 + 1e-9)


@pytest.mark.parametrize("name", MINIMIZERS)
def test_line_search_methods_never_raise_the_loss(xp: ModuleType, name: str) -> None:
    # Given: full batch, no penalty (train_loss is then the objective), a point per step
    tr = trainer_for(name, TABLE[name][1], xp, epochs=15, log_every=1)
    # When
    outcome = tr.run()
    # Then: the loss never rises from one iteration to the next
    assert outcome.status == "succeeded", outcome.error
    losses = curve(tr)
    assert len(losses) == 16
    assert np.all(np.diff(losses) <= 0), np.diff(losses)
    assert losses[-1] < losses[0]


# ------------------------------------------------------------------ checkpoint state
def _npz_roundtrip(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    """Through the bytes a checkpoint stores (as Trainer._snapshot writes them)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(to_numpy(v) if hasattr(v, "dtype") else v)
                     for k, v in arrays.items()})
    with np.load(io.BytesIO(buf.getvalue()), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _leaves(state: Any) -> dict[str, Any]:
    return {k: (to_numpy(v) if hasattr(v, "dtype") else v)
            for k, v in state_to_arrays(state).items()}


def _assert_same_state(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    la, lb = _leaves(a), _leaves(b)
    assert la.keys() == lb.keys()
    for k in la:
        assert type(la[k]) is type(lb[k]), k
        np.testing.assert_array_equal(la[k], lb[k], err_msg=k)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_first_order_state_round_trips_through_a_checkpoint(xp: ModuleType,
                                                            variant: str) -> None:
    # Given: a state after a few steps
    name, hyper, schedule = VARIANTS[variant]
    theta0, grad = logistic_problem()
    t = make_optimizer(name, hyper, schedule)
    p = xp.asarray(theta0)
    state = t.init(p)
    for _ in range(3):
        state = apply_updates(t, xp.asarray(grad(to_numpy(p))), state, p)
    # When: it is flattened, stored as npz and rebuilt on a fresh template
    restored = state_from_arrays(t.init(xp.asarray(theta0)), _npz_roundtrip(
        state_to_arrays(state)))
    # Then: the same state, and the same next steps from it
    _assert_same_state(state, restored)
    q = p.copy()
    for _ in range(2):
        state = apply_updates(t, xp.asarray(grad(to_numpy(p))), state, p)
        restored = apply_updates(t, xp.asarray(grad(to_numpy(q))), restored, q)
    np.testing.assert_array_equal(to_numpy(p), to_numpy(q))


@pytest.mark.parametrize("name", MINIMIZERS)
def test_minimizer_state_round_trips_through_a_checkpoint(xp: ModuleType, name: str) -> None:
    theta0, grad_np = logistic_problem()

    def fun(x: Any) -> tuple[float, Any]:
        z = to_numpy(x)
        w = z[:-1]
        return float(0.5 * w @ w), xp.asarray(grad_np(z) + np.concatenate([w, [0.0]]))

    def hvp(x: Any, v: Any) -> Any:  # finite differences are enough for newton's direction
        h = 1e-6
        return (fun(x + h * v)[1] - fun(x - h * v)[1]) / (2 * h)

    m = second_order.make_minimizer(name, **TABLE[name][1])
    x = xp.asarray(theta0)
    state = m.init(x)
    for _ in range(3):
        x, state, _ = m.step(fun, x, state, hvp=hvp)
    restored = state_from_arrays(m.init(xp.asarray(theta0)),
                                 _npz_roundtrip(state_to_arrays(state)))
    _assert_same_state(state, restored)
    x1, _, _ = m.step(fun, x, state, hvp=hvp)
    x2, _, _ = m.step(fun, x.copy(), restored, hvp=hvp)
    np.testing.assert_array_equal(to_numpy(x1), to_numpy(x2))


@pytest.mark.parametrize("name", ITERATIVE)
def test_a_resumed_run_continues_exactly(xp: ModuleType, name: str) -> None:
    # Given: a run that checkpoints every 2 epochs (minibatches for first-order methods)
    hyper = TABLE[name][1]
    whole = trainer_for(name, hyper, xp, epochs=6, checkpoint_every=2)
    expected = whole.run()
    assert isinstance(whole.hooks, NullHooks)
    epoch, _, data = whole.hooks.checkpoints[0]
    assert epoch == 2
    # When: a new trainer resumes from the epoch-2 checkpoint
    resumed = trainer_for(name, hyper, xp, epochs=6, checkpoint_every=2).run(resume=data)
    # Then: it ends with the same parameters as the run that never stopped
    for key, value in expected.arrays.items():
        np.testing.assert_array_equal(resumed.arrays[key], value, err_msg=key)


# ------------------------------------------------------------------------ fused kernels
def test_variants_cover_every_fused_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    used: set[str] = set()
    real = fused.launch

    def spy(rule: str, *args: Any) -> None:
        used.add(rule)
        real(rule, *args)

    monkeypatch.setattr(fused, "launch", spy)
    for name, hyper, schedule in VARIANTS.values():
        t = make_optimizer(name, hyper, schedule)
        p = np.ones(4)
        t.fused(np.full(4, 0.5), t.init(p), p)
    assert used == set(fused.RULES)
    assert {v[0] for v in VARIANTS.values()} == set(FIRST_ORDER_DEFAULTS)


def _run_both(variant: str, dtype: Any, xp_fused: ModuleType, steps: int = 6
              ) -> tuple[np.ndarray, dict[str, Any], np.ndarray, dict[str, Any]]:
    """(params, state) after ``steps`` on the generic NumPy path, and on the fused path with
    ``xp_fused`` arrays, from the same start and gradients."""
    name, hyper, schedule = VARIANTS[variant]
    t = make_optimizer(name, hyper, schedule)
    assert t.fused is not None
    rng = np.random.default_rng(5)
    p0 = rng.normal(size=(2, 301)).astype(dtype)  # two replicas' buffers, say
    grads = [(rng.normal(size=p0.shape) + 0.2 * (-1) ** k).astype(dtype) for k in range(steps)]
    p_ref = p0.copy()
    s_ref = t.init(p_ref)
    for g in grads:
        updates, s_ref = t.update(g, s_ref, p_ref)
        p_ref += updates
    p = xp_fused.asarray(p0)
    s = t.init(p)
    for g in grads:
        s = t.fused(xp_fused.asarray(g), s, p)
    return p_ref, _leaves(s_ref), to_numpy(p), _leaves(s)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fused_numpy_twin_equals_the_generic_path(variant: str, dtype: Any) -> None:
    # the NumPy twin of each kernel, with the in-place plumbing of optimizers._fused_step
    p_ref, s_ref, p, s = _run_both(variant, dtype, np)
    # float64 agrees to rounding; in float32 the in-place twin may round a product in a
    # different order from the pure transform: one unit in the last place
    rtol = 1e-12 if dtype == np.float64 else 4e-7
    np.testing.assert_allclose(p, p_ref, rtol=rtol, atol=0)
    for k in s_ref:
        np.testing.assert_allclose(s[k], s_ref[k], rtol=rtol, atol=0, err_msg=k)


@pytest.mark.skipif(not gpu_available(), reason="CuPy or a CUDA GPU is not available")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fused_kernel_matches_the_numpy_path(variant: str, dtype: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from gradq.nn.backend import cupy

    launched: list[str] = []
    real = fused.kernel

    def spy(name: str) -> Any:
        launched.append(name)
        return real(name)

    monkeypatch.setattr(fused, "kernel", spy)
    p_ref, s_ref, p, s = _run_both(variant, dtype, cupy)
    assert launched, "the CuPy path did not launch a fused kernel"
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    # relative to each array's scale: a kernel's fused multiply-adds round differently, which
    # shows as a larger relative error only on entries near zero
    np.testing.assert_allclose(p, p_ref, rtol=rtol, atol=rtol * np.abs(p_ref).max())
    for k in s_ref:
        want = np.asarray(s_ref[k])
        np.testing.assert_allclose(s[k], want, rtol=rtol, atol=rtol * np.abs(want).max(),
                                   err_msg=k)


def test_numpy_training_takes_the_in_place_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an Adam step on NumPy arrays, watched at the fused launcher
    launched: list[str] = []
    real = fused.launch

    def spy(name: str, *args: Any) -> None:
        launched.append(name)
        real(name, *args)

    monkeypatch.setattr(fused, "launch", spy)
    t = make_optimizer("adam", {})
    p, g = np.ones(3), np.full(3, 0.5)
    m_before = t.init(p)[0].m
    state = apply_updates(t, g, t.init(p), p)
    # Then it ran the in-place twin, and its step equals the pure transform's
    assert launched == ["adam"]
    q = np.ones(3)
    updates, ref = t.update(g, t.init(q), q)
    np.testing.assert_allclose(p, q + updates, rtol=1e-15)
    np.testing.assert_allclose(state[0].m, ref[0].m, rtol=1e-15)
    assert int(state[0].count) == 1 and m_before.shape == (3,)


def _per_replica(name: str, hyper: dict[str, Any]) -> dict[str, list[float]]:
    """Three replicas' values of the hyperparameters a stack may vary (as a search does)."""
    varied = {"lr": [0.05, 0.01, 0.002]} if name != "delta_bar_delta" else {
        "kappa": [0.01, 0.02, 0.005]}
    if "momentum" in hyper:
        varied["momentum"] = [0.5, 0.7, 0.3]
    return varied


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stacked_fused_step_equals_each_replica_alone(xp, variant: str, dtype: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Given three replicas of one optimizer with their own values, as (3, 1) arrays
    name, hyper, schedule = VARIANTS[variant]
    varied = _per_replica(name, hyper)
    stacked = make_optimizer(name, {**hyper, **{k: xp.asarray(v, dtype=dtype).reshape(-1, 1)
                                                for k, v in varied.items()}}, schedule)
    launched: list[str] = []
    real = fused.launch

    def spy(rule: str, *args: Any) -> None:
        launched.append(rule)
        real(rule, *args)

    monkeypatch.setattr(fused, "launch", spy)
    rng = np.random.default_rng(9)
    p0 = rng.normal(size=(3, 257)).astype(dtype)
    grads = [(rng.normal(size=p0.shape) + 0.2 * (-1) ** k).astype(dtype) for k in range(5)]
    # When the stack takes its fused step, and each replica its own with scalar values
    p = xp.array(p0)  # a copy: p0 is each replica's start below
    s = stacked.init(p)
    for g in grads:
        s = apply_updates(stacked, xp.asarray(g), s, p)
    assert launched and stacked.fused is not None  # the stack ran the fused rule
    for r in range(3):
        alone = make_optimizer(name, {**hyper, **{k: v[r] for k, v in varied.items()}},
                               schedule)
        q = p0[r].copy()
        sr = alone.init(q)
        for g in grads:
            sr = apply_updates(alone, g[r].copy(), sr, q)
        # Then each row is that replica's run: bit for bit in float64 on NumPy; in float32 a
        # schedule forms ε_k from the rounded rate, and a GPU kernel rounds on its own
        leaves = _leaves(s)
        pairs = [("params", to_numpy(p)[r], q)] + [
            (k, leaves[k][r], v) for k, v in _leaves(sr).items() if np.ndim(v)]
        for k, mine, want in pairs:
            if xp is np and dtype == np.float64:
                np.testing.assert_array_equal(mine, want, err_msg=k)
            else:
                rtol = 1e-6 if dtype == np.float32 else 1e-12
                np.testing.assert_allclose(mine, want, rtol=rtol,
                                           atol=rtol * np.abs(want).max(), err_msg=k)


# ------------------------------------------------------------------- submit warnings
def _spec(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"data": {"dataset": "iris"}, "model": {"hidden": [4]}}
    for key, value in changes.items():
        section, _, leaf = key.partition("__")
        if leaf:
            raw.setdefault(section, {})[leaf] = value
        else:
            raw[key] = value
    return validate(raw)


@pytest.mark.parametrize("name", sorted(FULL_BATCH_OPTIMIZERS - {"closed_form"}))
def test_full_batch_methods_warn_on_minibatches(name: str) -> None:
    on_minibatches = submit.warnings(_spec(optimizer__name=name, training__batch_size=16))
    assert any(w.startswith(f"{name} on minibatches of 16") for w in on_minibatches)
    full = submit.warnings(_spec(optimizer__name=name, training__batch_size="full"))
    assert not any("minibatches" in w for w in full)


def test_newton_warns_of_its_cost_and_others_are_quiet() -> None:
    (warning,) = submit.warnings(_spec(optimizer__name="newton"))
    assert "O(k³)" in warning
    for name in ("adam", "sgd", "lbfgs"):
        assert submit.warnings(_spec(optimizer__name=name)) == []
    assert submit.warnings(_spec(optimizer__name="adam", training__batch_size=16)) == []


def test_comparison_arms_are_judged_with_their_own_batch_size() -> None:
    spec = _spec(kind="compare", compare__optimizers=["adam", "lbfgs", "newton"],
                 training__batch_size=32)
    spec["_user_batch"] = False  # batch_size not given: expand runs lbfgs on the full batch
    assert [w.split(" ")[0] for w in submit.warnings(spec)] == ["newton"]
    spec["_user_batch"] = True  # given: every arm takes it
    assert [w.split(" ")[0] for w in submit.warnings(spec)] == ["lbfgs", "newton", "newton"]


def test_prepare_carries_the_warnings(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"data": {"dataset": "iris"},
                                    "optimizer": {"name": "bfgs"},
                                    "training": {"batch_size": 16}}))
    prepared = submit.prepare(path)
    assert len(prepared.warnings) == 1 and prepared.warnings[0].startswith("bfgs on minibatches")
    path.write_text(yaml.safe_dump({"data": {"dataset": "iris"}}))
    assert submit.prepare(path).warnings == ()
