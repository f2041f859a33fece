"""Every layer, activation, output/loss, initializer and regularizer of ``gradq.nn``,
gradient-checked by central finite differences in float64 (relative error ≤ 1e-6), on
NumPy and, where a GPU is, CuPy.

Central differences f'(x) ≈ (f(x + h) − f(x − h))/2h have truncation error O(h²) and
rounding error O(ε/h); with h = 1e-6 both sit far below 1e-6 relative, as long as no input
crosses a kink of a rectifier within ±h. Every check below draws its points away from 0
and asserts that margin. The one-sided derivatives at 0 itself are checked separately
(``test_derivative_at_zero_is_the_documented_one_sided_value``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from _backends import xp_fixture
from gradq.nn import activations
from gradq.nn.activations import ACTIVATIONS, NAMES, prelu, prelu_backward
from gradq.nn.backend import to_numpy
from gradq.nn.initializers import INITIALIZERS
from gradq.nn.losses import OUTPUTS
from gradq.nn.network import Architecture, Network, hvp, initial_parameters, layout
from gradq.nn.regularizers import add_penalty_gradient, clip_by_global_norm, penalty

xp = xp_fixture()

TOL = 1e-6  # largest relative error accepted by every gradient check
H = 1e-6  # finite-difference step
MARGIN = 1e-3  # smallest |input| allowed at a kink: far more than H times any slope here

# ---------------------------------------------------------------------------- the table
# Everything under test, by kind, with the tests that check it. ``test_table_covers_...``
# fails when gradq.nn exports (or the job spec exposes) something missing from here.
TABLE: dict[str, dict[str, tuple[str, ...]]] = {
    "layer": {
        "dense": ("test_network_gradient",),
        "batch_norm": ("test_batch_norm_gradient_through_mean_and_variance",
                       "test_network_gradient",
                       "test_networks.py::test_batch_norm_uses_batch_statistics_in_training"
                       "_and_running_averages_at_test"),
        "dropout": ("test_dropout_gradient_with_a_fixed_mask", "test_network_gradient",
                    "test_networks.py::test_inverted_dropout_keeps_the_expected_input"),
        "prelu": ("test_activation_gradient", "test_network_gradient"),
    },
    "activation": {name: ("test_activation_gradient",
                          "test_derivative_at_zero_is_the_documented_one_sided_value",
                          "test_network_gradient")
                   for name in ("relu", "leaky_relu", "prelu", "abs", "tanh", "sigmoid",
                                "linear")},
    "output": {
        "softmax": ("test_output_loss_gradient", "test_softmax_cross_entropy_at_logits_of_1000",
                    "test_network_gradient"),
        "sigmoid": ("test_output_loss_gradient", "test_sigmoid_cross_entropy_at_logits_of_1000",
                    "test_network_gradient"),
        "linear": ("test_output_loss_gradient", "test_network_gradient"),
    },
    "initializer": {
        "glorot_uniform": ("test_initializer_distribution",),
        "glorot_normal": ("test_initializer_distribution",),
        "he_normal": ("test_initializer_distribution",),
        "zeros": ("test_initializer_distribution",),
        "lsuv": ("test_initializer_distribution",
                 "test_networks.py::test_lsuv_gives_unit_variance_in_every_layer"),
    },
    "regularizer": {
        "l2": ("test_penalty_gradient", "test_networks.py::test_ridge_from_closed_form_equals"
                                        "_sklearn_ridge_on_diabetes"),
        "l1": ("test_penalty_gradient", "test_networks.py::test_l1_shrinks_irrelevant_weights"
                                        "_to_the_lasso_zeros"),
        "l1_proximal": ("test_networks.py::test_proximal_l1_sets_the_lasso_zeros_exactly",
                        "test_networks.py::test_proximal_l1_needs_sgd"),
        "clip_grad_norm": ("test_clip_by_global_norm",),
        "early_stopping": ("test_networks.py::test_early_stopping_restores_the_best_epoch",),
        "bagging": ("test_methods.py::test_bagging_reports_members_and_the_error"
                    "_decomposition",),
    },
    "hessian": {"hvp": ("test_complex_step_hvp_matches_finite_difference_hessian",)},
}

# Which layer each kind of slot of the flat buffer (network.layout) belongs to, and which
# layer each optional field of an Architecture switches on.
SLOT_ROLE_LAYER = {"weight": "dense", "bias": "dense", "bn_scale": "batch_norm",
                   "bn_shift": "batch_norm", "prelu": "prelu"}
ARCH_FIELD_LAYER = {"batch_norm": "batch_norm", "dropout_input": "dropout",
                    "dropout_hidden": "dropout"}
ARCH_STRUCTURE = {"n_in", "hidden", "n_out", "activations", "output"}


def test_table_covers_everything_exported() -> None:
    from gradq.service.spec import ACTIVATIONS as SPEC_ACTIVATIONS
    from gradq.service.spec import validate

    assert set(NAMES) <= set(TABLE["activation"]), "an activation is missing from TABLE"
    assert set(SPEC_ACTIVATIONS) <= set(TABLE["activation"])
    assert set(OUTPUTS) <= set(TABLE["output"]), "an output is missing from TABLE"
    assert set(INITIALIZERS) <= set(TABLE["initializer"]), "an initializer is missing"
    spec = validate({"data": {"dataset": "digits"}})
    assert set(spec["regularization"]) <= set(TABLE["regularizer"]), "a regularizer is missing"
    everything = Architecture(3, (4, 4), 2, ("prelu", "relu"), "softmax", batch_norm=True,
                              dropout_input=0.1, dropout_hidden=0.1)
    slots, _, _ = layout(everything)
    assert {s.role for s in slots} <= set(SLOT_ROLE_LAYER), "a kind of slot is missing"
    layer_fields = {f.name for f in fields(Architecture)} - ARCH_STRUCTURE
    assert layer_fields <= set(ARCH_FIELD_LAYER), "an Architecture option is missing"
    assert {*SLOT_ROLE_LAYER.values(), *ARCH_FIELD_LAYER.values()} <= set(TABLE["layer"])


def test_every_test_the_table_names_exists() -> None:
    here = Path(__file__).parent
    for kind, entries in TABLE.items():
        for name, tests in entries.items():
            for test in tests:
                module, _, func = test.rpartition("::")
                source = (here / (module or Path(__file__).name)).read_text()
                assert f"def {func}(" in source, f"{kind} {name}: {test} does not exist"


# ---------------------------------------------------------------------------- helpers
def rel_err(a: Any, b: Any) -> float:
    """‖a − b‖ / max(‖a‖, ‖b‖): 0 for identical arrays, small when they agree."""
    a, b = to_numpy(a).ravel(), to_numpy(b).ravel()
    scale = max(np.linalg.norm(a), np.linalg.norm(b), 1e-300)
    return float(np.linalg.norm(a - b) / scale)


def numeric_grad(f: Callable[[Any], float], x: Any, h: float = H) -> Any:
    """Central differences of the scalar ``f`` at the float64 array ``x``, entry by entry."""
    flat = x.reshape(-1)
    g = np.zeros(flat.shape[0])
    for j in range(flat.shape[0]):
        plus, minus = flat.copy(), flat.copy()
        plus[j] += h
        minus[j] -= h
        g[j] = (f(plus.reshape(x.shape)) - f(minus.reshape(x.shape))) / (2 * h)
    return g.reshape(x.shape)


def away_from_zero(xp: Any, rng: np.random.Generator, shape: tuple[int, ...],
                   low: float = 0.05, scale: float = 2.0) -> Any:
    """Normal-looking float64 draws with |x| ≥ ``low``: no kink within reach of the FD step."""
    x = rng.normal(scale=scale, size=shape)
    return xp.asarray(np.sign(x) * (low + np.abs(x)))


def scalar(a: Any) -> float:
    return float(to_numpy(a))


# ----------------------------------------------------------------------- activations
@pytest.mark.parametrize("name", NAMES)
def test_activation_gradient(xp: ModuleType, name: str) -> None:
    # Given points away from the kinks and a random weighting w of the outputs
    rng = np.random.default_rng(0)
    z = away_from_zero(xp, rng, (6, 5))
    w = xp.asarray(rng.normal(size=(6, 5)))
    slope = xp.asarray(rng.uniform(0.05, 0.5, size=(1, 5)))  # prelu's learned a, per unit

    def L(z_: Any, a_: Any = slope) -> float:  # L = Σ w ⊙ g(z)
        out = prelu(z_, a_) if name == "prelu" else ACTIVATIONS[name].forward(z_)
        return scalar((w * out).sum())

    # When the backward rule gives ∂L/∂z (and, for prelu, ∂L/∂a)
    if name == "prelu":
        dz, da = prelu_backward(z, slope, w)
        assert rel_err(da, numeric_grad(lambda a_: L(z, a_), slope)) <= TOL
    else:
        g = ACTIVATIONS[name]
        dz = w * g.derivative(z, g.forward(z))
    # Then it matches central differences
    assert rel_err(dz, numeric_grad(L, z)) <= TOL


# At 0 the rectifiers have no derivative. gradq uses, and documents in activations.py:
#   relu'(0) = 0 and leaky_relu'(0) = 0.01 and prelu'(0) = a: the derivative from the left;
#   abs'(0) = 0: sign(0), the middle of the subdifferential [−1, 1] (the left derivative
#   would be −1); it is the subgradient that makes 0 a stationary point of |z|.
# Each value must lie between the one-sided difference quotients, i.e. be a subgradient.
ONE_SIDED_AT_ZERO = {"relu": 0.0, "leaky_relu": activations.LEAKY_SLOPE, "abs": 0.0,
                     "prelu": 0.25, "tanh": 1.0, "sigmoid": 0.25, "linear": 1.0}


@pytest.mark.parametrize("name", NAMES)
def test_derivative_at_zero_is_the_documented_one_sided_value(xp: ModuleType, name: str) -> None:
    z = xp.zeros((1, 3))
    slope = xp.full((1, 3), 0.25)
    if name == "prelu":
        d, _ = prelu_backward(z, slope, xp.ones_like(z))
        g = lambda t: prelu(t, slope)  # noqa: E731
    else:
        act = ACTIVATIONS[name]
        d = act.derivative(z, act.forward(z))
        g = act.forward
    h = 1e-7
    left = to_numpy((g(z) - g(z - h)) / h)
    right = to_numpy((g(z + h) - g(z)) / h)
    d = to_numpy(d)
    np.testing.assert_allclose(d, ONE_SIDED_AT_ZERO[name], rtol=0, atol=1e-12)
    assert np.all(np.minimum(left, right) - 1e-6 <= d)
    assert np.all(d <= np.maximum(left, right) + 1e-6)
    if name in ("relu", "leaky_relu", "prelu"):  # the left derivative exactly
        np.testing.assert_allclose(d, left, atol=1e-6)


# ---------------------------------------------------------------------- outputs, losses
def _targets(xp: Any, output: str, rng: np.random.Generator, n: int, k: int) -> Any:
    if output == "softmax":
        return xp.asarray(rng.integers(0, k, size=n))
    if output == "sigmoid":
        return xp.asarray(rng.integers(0, 2, size=(n, k)).astype(np.float64))
    return xp.asarray(rng.normal(size=(n, k)))


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_output_loss_gradient(xp: ModuleType, output: str) -> None:
    # Given logits z and targets, the mean loss over samples and its gradient ∂L/∂z
    rng = np.random.default_rng(1)
    n, k = 7, 4 if output != "sigmoid" else 1
    z = xp.asarray(rng.normal(scale=3.0, size=(n, k)))
    y = _targets(xp, output, rng, n, k)
    out = OUTPUTS[output]
    # Then the gradient matches central differences of the loss
    assert rel_err(out.gradient(z, y), numeric_grad(lambda z_: scalar(out.forward(z_, y)),
                                                    z)) <= TOL
    # And the loss is the documented mean over samples
    p = to_numpy(out.link(z))
    yh = to_numpy(y)
    if output == "softmax":
        expected = -np.log(p[np.arange(n), yh]).mean()
    elif output == "sigmoid":
        expected = -(yh * np.log(p) + (1 - yh) * np.log(1 - p)).sum(axis=1).mean()
    else:
        expected = ((p - yh) ** 2).sum(axis=1).mean()
    assert scalar(out.forward(z, y)) == pytest.approx(expected, rel=1e-12)


def test_softmax_cross_entropy_at_logits_of_1000(xp: ModuleType) -> None:
    # Given logits of ±1000, where a naive exp overflows
    z = xp.asarray([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 0.0], [1000.0, 999.0, -1000.0]])
    y = xp.asarray([1, 1, 1])
    out = OUTPUTS["softmax"]
    # When the loss and its gradient are evaluated
    with np.errstate(over="raise", invalid="raise"):
        loss = scalar(out.forward(z, y))
        grad = to_numpy(out.gradient(z, y))
    # Then both are finite and exact: −log p(y) = log Σ exp(z − z_y)
    expected = (2000.0 + 0.0 + (1.0 + math.log1p(math.exp(-1.0)))) / 3
    assert loss == pytest.approx(expected, rel=1e-15)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-15)  # p − onehot sums to 0
    np.testing.assert_allclose(grad[0], [1 / 3, -1 / 3, 0.0], atol=1e-15)
    np.testing.assert_allclose(grad[1], [0.0, 0.0, 0.0], atol=1e-15)


def test_sigmoid_cross_entropy_at_logits_of_1000(xp: ModuleType) -> None:
    z = xp.asarray([[1000.0], [-1000.0], [1000.0], [-1000.0]])
    y = xp.asarray([[0.0], [0.0], [1.0], [1.0]])
    out = OUTPUTS["sigmoid"]
    with np.errstate(over="raise", invalid="raise"):
        loss = scalar(out.forward(z, y))
        grad = to_numpy(out.gradient(z, y))
    assert loss == pytest.approx((1000.0 + 0.0 + 0.0 + 1000.0) / 4, rel=1e-15)
    np.testing.assert_allclose(grad[:, 0], [0.25, 0.0, 0.0, -0.25], atol=1e-15)


# ------------------------------------------------------------------------ regularizers
@pytest.mark.parametrize(("l2", "l1"), [(0.3, 0.0), (0.0, 0.2), (0.3, 0.2)])
def test_penalty_gradient(xp: ModuleType, l2: float, l1: float) -> None:
    # Given a flat buffer whose first n_weights entries are weights, away from 0 (|w|'s kink)
    rng = np.random.default_rng(2)
    n_weights, size = 12, 17
    p = away_from_zero(xp, rng, (size,))

    def f(p_: Any) -> float:
        return scalar(penalty(p_, n_weights, l2, l1))

    # When the penalty's gradient is added to a zero gradient
    g = xp.zeros_like(p)
    add_penalty_gradient(g, p, n_weights, l2, l1)
    # Then it matches central differences, and biases are never penalised
    assert rel_err(g, numeric_grad(f, p)) <= TOL
    assert not to_numpy(g[n_weights:]).any()
    w = to_numpy(p[:n_weights])
    assert f(p) == pytest.approx(0.5 * l2 * (w**2).sum() + l1 * np.abs(w).sum(), rel=1e-14)


def test_clip_by_global_norm(xp: ModuleType) -> None:
    g = xp.asarray([3.0, 4.0, 0.0])  # ‖g‖ = 5
    norm = clip_by_global_norm(g, 2.5)
    assert scalar(norm) == pytest.approx(5.0)
    np.testing.assert_allclose(to_numpy(g), [1.5, 2.0, 0.0], rtol=1e-15)  # rescaled to 2.5
    small = xp.asarray([0.3, 0.4])
    clip_by_global_norm(small, 2.5)
    np.testing.assert_array_equal(to_numpy(small), [0.3, 0.4])  # under the limit: untouched


# ------------------------------------------------------------------------------ layers
def _net(xp: Any, arch: Architecture, seed: int = 0) -> Network:
    net = Network(arch, dtype="float64", xp=xp)
    rng = np.random.default_rng(seed)
    flat = initial_parameters(arch, rng, init="glorot_normal", bias_init=0.1)
    flat = flat + 0.1 * rng.normal(size=flat.shape)  # every parameter non-trivial
    net.set_flat(flat)
    return net


def _data(xp: Any, arch: Architecture, n: int = 9, seed: int = 3) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    X = xp.asarray(rng.normal(size=(n, arch.n_in)))
    return X, _targets(xp, arch.output, rng, n, arch.n_out)


def _assert_away_from_kinks(net: Network, X: Any, rng_seed: int | None) -> None:
    """Documents the precondition of a finite-difference check: no rectifier input sits
    within MARGIN of 0, so ±H on a parameter cannot cross a kink."""
    rng = net.xp.random.RandomState(rng_seed) if rng_seed is not None else None
    _, cache = net.forward(X, train=True, rng=rng, dropout=rng is not None)
    for name, zin in zip(net.arch.activations, cache.act_in, strict=True):
        if name in ("relu", "leaky_relu", "abs", "prelu"):
            assert float(to_numpy(abs(zin)).min()) > MARGIN, f"{name} input too near 0"


def _check_network(net: Network, X: Any, y: Any, dropout_seed: int | None) -> float:
    """Relative error of backward() against central differences of the training loss.

    With dropout, every evaluation draws its mask from a fresh RandomState(dropout_seed):
    the same mask each time, so the objective is a fixed, differentiable function.
    """
    xp = net.xp

    def rng() -> Any:
        return xp.random.RandomState(dropout_seed) if dropout_seed is not None else None

    _assert_away_from_kinks(net, X, dropout_seed)
    p0 = net.params.copy()
    g = xp.zeros_like(p0)
    net.loss_and_grad(X, y, train=True, rng=rng(), params=p0, grads=g)

    def f(p: Any) -> float:
        return scalar(net.loss(X, y, train=True, rng=rng(), params=p))

    return rel_err(g, numeric_grad(f, p0))


ARCHITECTURES = {
    "logistic": Architecture(4, (), 1, (), "sigmoid"),
    "tanh-sigmoid-softmax": Architecture(4, (5, 4), 3, ("tanh", "sigmoid"), "softmax"),
    "relu-leaky-abs-linear": Architecture(4, (5, 4, 3), 2, ("relu", "leaky_relu", "abs"),
                                          "linear"),
    "bn-prelu-dropout": Architecture(4, (6, 5), 3, ("prelu", "relu"), "softmax",
                                     batch_norm=True, dropout_input=0.2, dropout_hidden=0.3),
    "prelu-linear-sigmoid": Architecture(3, (4, 4), 1, ("prelu", "linear"), "sigmoid",
                                         dropout_hidden=0.5),
}


@pytest.mark.parametrize("arch_name", list(ARCHITECTURES))
def test_network_gradient(xp: ModuleType, arch_name: str) -> None:
    # Given a whole network (every layer, PReLU slopes, BN's γ and β included)
    arch = ARCHITECTURES[arch_name]
    net = _net(xp, arch)
    X, y = _data(xp, arch)
    has_dropout = arch.dropout_input > 0 or arch.dropout_hidden > 0
    # Then back-propagation matches central differences of the training-mode loss
    assert _check_network(net, X, y, dropout_seed=11 if has_dropout else None) <= TOL


def test_dropout_gradient_with_a_fixed_mask(xp: ModuleType) -> None:
    # Given dropout on the input and on hidden units, its mask fixed by the rng seed
    arch = Architecture(5, (6,), 2, ("tanh",), "linear", dropout_input=0.4, dropout_hidden=0.5)
    net = _net(xp, arch)
    X, y = _data(xp, arch)
    _, cache = net.forward(X, train=True, rng=xp.random.RandomState(5))
    assert not to_numpy(cache.input_mask).all() and not to_numpy(cache.masks[0]).all()
    # Then the gradient through the masks matches central differences
    assert _check_network(net, X, y, dropout_seed=5) <= TOL


def test_batch_norm_gradient_through_mean_and_variance(xp: ModuleType) -> None:
    # Given batch norm in training mode, which normalises with the batch's own μ and σ²
    arch = Architecture(4, (5,), 2, ("linear",), "linear", batch_norm=True)
    net = _net(xp, arch)
    X, y = _data(xp, arch, n=8)
    # Then back-propagation through μ(W) and σ(W) matches central differences
    assert _check_network(net, X, y, dropout_seed=None) <= TOL
    # And a backward pass that treated μ and σ as constants would not: the check can tell
    z, cache = net.forward(X, train=True)
    exact = net.backward(cache, net.output.gradient(z, y), grads=xp.zeros_like(net.params))
    cache.bn_stats = [None] * len(cache.bn_stats)  # backward then uses ∂x̂/∂z = 1/σ only
    naive = net.backward(cache, net.output.gradient(z, y), grads=xp.zeros_like(net.params))
    assert rel_err(naive, exact) > 1e-3


# ------------------------------------------------------------------------------ Hessian
@pytest.mark.parametrize("arch_name", ["tanh-sigmoid-softmax", "relu-leaky-abs-linear",
                                       "bn-prelu-dropout", "logistic"])
def test_complex_step_hvp_matches_finite_difference_hessian(xp: ModuleType, arch_name: str) -> None:
    # Given the deterministic objective that hvp differentiates (dropout off, batch
    # statistics where there is batch norm)
    arch = ARCHITECTURES[arch_name]
    net = _net(xp, arch)
    X, y = _data(xp, arch)
    _assert_away_from_kinks(net, X, None)

    def grad(p: Any) -> Any:
        g = xp.zeros_like(p)
        z, cache = net.forward(X, train=arch.batch_norm, params=p, dropout=False)
        return net.backward(cache, net.output.gradient(z, y), params=p, grads=g)

    # When the Hessian is built column by column from differences of exact gradients
    p0 = net.params.copy()
    n = p0.shape[0]
    h = 1e-5
    Hm = np.zeros((n, n))
    for j in range(n):
        e = xp.zeros_like(p0)
        e[j] = h
        Hm[:, j] = to_numpy(grad(p0 + e) - grad(p0 - e)) / (2 * h)
    assert rel_err(Hm, Hm.T) <= TOL  # a Hessian is symmetric
    # Then the complex-step product H v agrees with it for random directions
    rng = np.random.default_rng(4)
    for _ in range(3):
        v = rng.normal(size=n)
        hv = hvp(net, X, y, xp.asarray(v), params=p0)
        assert rel_err(hv, Hm @ v) <= TOL


# ------------------------------------------------------------------------- initializers
# Initializers draw on the host (NumPy) by design, so that a seed gives the same initial
# parameters on every backend; there is no CuPy variant to run.
@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_initializer_distribution(name: str) -> None:
    m, n = 300, 200
    W = INITIALIZERS[name](m, n, np.random.default_rng(0))
    assert W.shape == (m, n)
    np.testing.assert_array_equal(W, INITIALIZERS[name](m, n, np.random.default_rng(0)))
    if name == "zeros":
        assert not W.any()
        return
    if name == "lsuv":  # LSUV starts from orthonormal columns (m ≥ n) or rows
        np.testing.assert_allclose(W.T @ W, np.eye(n), atol=1e-12)
        Wt = INITIALIZERS[name](n, m, np.random.default_rng(0))
        np.testing.assert_allclose(Wt @ Wt.T, np.eye(n), atol=1e-12)
        return
    expected_var = {"glorot_uniform": 2.0 / (m + n), "glorot_normal": 2.0 / (m + n),
                    "he_normal": 2.0 / m}[name]
    assert abs(W.mean()) < 4 * math.sqrt(expected_var / W.size)
    assert W.var() == pytest.approx(expected_var, rel=0.02)  # 60,000 draws: ±1% s.d.
    if name == "glorot_uniform":
        limit = math.sqrt(6.0 / (m + n))  # U(−√(6/(m+n)), √(6/(m+n)))
        assert np.abs(W).max() <= limit and np.abs(W).max() > 0.99 * limit

