"""Behaviour of the networks and regularizers of the book, through ``gradq.nn`` and the
trainer: dropout and batch norm in training and test mode, early stopping, LSUV, the
marginal output bias, L1 against the LASSO, ridge against scikit-learn, PCA against
scikit-learn. NumPy always, CuPy where a GPU is (data preparation is host-only).
"""

from __future__ import annotations

from functools import cache
from types import ModuleType

import numpy as np
import pytest
from _backends import xp_fixture
from _cli import make_spec
from gradq.nn.activations import sigmoid
from gradq.nn.backend import to_numpy
from gradq.nn.datasets import load_builtin
from gradq.nn.losses import softmax
from gradq.nn.network import BN_EPS, BN_MOMENTUM, Architecture, Network, initial_parameters
from gradq.nn.preprocess import Splits, prepare
from gradq.service.spec import validate
from gradq.train.interface import NullHooks
from gradq.train.trainer import Trainer
from gradq.workers.data import prepare_splits
from sklearn.decomposition import PCA
from sklearn.linear_model import Lasso, Ridge

xp = xp_fixture()


@cache
def splits(dataset: str, validation: float = 0.2, test: float = 0.2, pca: int | None = None
           ) -> Splits:
    spec = make_spec(dataset, data={"validation": validation, "test": test, "pca": pca})
    return prepare_splits(spec, load_builtin(dataset))


# ------------------------------------------------------------------------------ dropout
def test_inverted_dropout_keeps_the_expected_input(xp: ModuleType) -> None:
    # Given one input repeated on many rows, through dropout on inputs and hidden units
    # with linear units (so the output's expectation is exactly the test-mode output)
    p_in, p_hidden, n = 0.4, 0.5, 40_000
    arch = Architecture(3, (4,), 2, ("linear",), "linear", dropout_input=p_in,
                        dropout_hidden=p_hidden)
    net = Network(arch, dtype="float64", xp=xp)
    net.set_flat(initial_parameters(arch, np.random.default_rng(0), bias_init=0.1))
    x = np.array([[0.7, -1.2, 0.4]])
    X = xp.asarray(np.repeat(x, n, axis=0))
    # When the rows go through training mode (a fresh mask each) and test mode
    z_train, cache = net.forward(X, train=True, rng=xp.random.RandomState(0))
    z_test, test_cache = net.forward(xp.asarray(x), train=False)
    z_train, z_test = to_numpy(z_train), to_numpy(z_test)
    # Then training mode drops units: kept ones scaled by 1/(1 − p), the rest zero
    mask = to_numpy(cache.input_mask)
    assert set(np.unique(mask)) == {0.0, 1 / (1 - p_in)}
    assert (mask == 0).mean() == pytest.approx(p_in, abs=0.01)
    assert (to_numpy(cache.masks[0]) == 0).mean() == pytest.approx(p_hidden, abs=0.01)
    assert z_train.std(axis=0).min() > 0.1  # outputs differ from row to row
    # And test mode is deterministic, undropped, and equals training mode's mean
    assert test_cache.input_mask is None and test_cache.masks == [None]
    se = z_train.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(z_train.mean(axis=0) - z_test[0]) < 5 * se)


# --------------------------------------------------------------------------- batch norm
def test_batch_norm_uses_batch_statistics_in_training_and_running_averages_at_test(
        xp: ModuleType) -> None:
    # Given a batch-norm layer (γ = 1, β = 0 at initialisation), fresh running statistics
    arch = Architecture(3, (4,), 2, ("linear",), "linear", batch_norm=True)
    net = Network(arch, dtype="float64", xp=xp)
    net.set_flat(initial_parameters(arch, np.random.default_rng(0)))
    rng = np.random.default_rng(1)
    batches = [rng.normal(loc=2.0, scale=3.0, size=(16, 3)) for _ in range(5)]
    W = to_numpy(net.view(net.params, "W0"))
    # When training-mode passes update the running averages
    mean, var = np.zeros(4), np.ones(4)
    for B in batches:
        _, cache = net.forward(xp.asarray(B), train=True, update_running=True)
        z = B @ W  # the preceding layer has no bias: β replaces it
        # Then training mode normalises with the batch's own statistics: mean 0, variance 1
        xhat = to_numpy(cache.bn[0][0])
        np.testing.assert_allclose(xhat.mean(axis=0), 0.0, atol=1e-12)
        np.testing.assert_allclose(xhat.var(axis=0), z.var(axis=0) / (z.var(axis=0) + BN_EPS),
                                   rtol=1e-12)
        mean = (1 - BN_MOMENTUM) * mean + BN_MOMENTUM * z.mean(axis=0)
        var = (1 - BN_MOMENTUM) * var + BN_MOMENTUM * z.var(axis=0, ddof=1)
    rm, rv = (to_numpy(a)[0] for a in net.running_view(0))
    np.testing.assert_allclose(rm, mean, rtol=1e-12)
    np.testing.assert_allclose(rv, var, rtol=1e-12)
    # And test mode uses the running averages, so an example's output is its own
    X = xp.asarray(batches[0])
    _, test_cache = net.forward(X, train=False)
    expected = (batches[0] @ W - mean) / np.sqrt(var + BN_EPS)
    np.testing.assert_allclose(to_numpy(test_cache.bn[0][0]), expected, rtol=1e-10)
    alone, _ = net.forward(X[:1], train=False)
    together, _ = net.forward(X, train=False)
    np.testing.assert_allclose(to_numpy(alone), to_numpy(together)[:1], rtol=1e-12)
    alone_train, _ = net.forward(X[:2], train=True)
    together_train, _ = net.forward(X, train=True)
    assert not np.allclose(to_numpy(alone_train), to_numpy(together_train)[:2])


def test_batch_norm_running_averages_are_learned_by_the_trainer(xp: ModuleType) -> None:
    spec = make_spec("wine", model={"hidden": [8], "batch_norm": True},
                     training={"epochs": 3, "batch_size": 16})
    tr = Trainer(spec, splits("wine"), xp)
    out = tr.run()
    assert out.status == "succeeded"
    assert {"gamma0", "beta0", "running_mean0", "running_var0"} <= set(out.arrays)
    assert "b0" not in out.arrays  # batch norm's β replaces the preceding bias
    assert np.abs(out.arrays["running_mean0"]).max() > 0.01


# ----------------------------------------------------------------------- early stopping
def test_early_stopping_restores_the_best_epoch(xp: ModuleType) -> None:
    # Given a wide network that overfits half of digits fast, with patience 3
    patience = 3
    spec = make_spec("digits", data={"validation": 0.5}, model={"hidden": [128]},
                     optimizer={"name": "adam", "lr": 0.01},
                     regularization={"early_stopping": {"patience": patience}},
                     training={"epochs": 100, "batch_size": 32})
    hooks = NullHooks()
    # When it trains until the validation loss has not improved for `patience` epochs
    out = Trainer(spec, splits("digits", validation=0.5), xp, hooks).run()
    val = {int(r[2]): r[4] for r in hooks.rows if r[0] == "val_loss"}  # epoch -> value
    best = out.final["best_epoch"]
    # Then it stopped `patience` epochs after the best one, long before 100 epochs
    assert out.status == "succeeded"
    assert 1 <= best < out.final["epochs"] == best + patience < 100
    # And the reported figures are the best epoch's, from the restored parameters
    assert val[best] == min(v for e, v in val.items() if e >= 1)
    assert out.final["val_loss"] == pytest.approx(val[best], rel=1e-12)
    assert val[out.final["epochs"]] > out.final["val_loss"]


# --------------------------------------------------------------------------------- LSUV
LSUV_ARCHS = {
    "relu-deep": Architecture(64, (50, 40, 30), 10, ("relu",) * 3, "softmax"),
    "tanh": Architecture(64, (32, 32), 10, ("tanh", "tanh"), "softmax"),
    "leaky-bn": Architecture(64, (32, 16), 1, ("leaky_relu", "relu"), "linear",
                             batch_norm=True),
}


@pytest.mark.parametrize("name", list(LSUV_ARCHS))
def test_lsuv_gives_unit_variance_in_every_layer(xp: ModuleType, name: str) -> None:
    # Given LSUV initialisation on a batch of standardized digits
    arch = LSUV_ARCHS[name]
    batch = splits("digits").X_train[:256]
    flat = initial_parameters(arch, np.random.default_rng(0), init="lsuv", bias_init=0.1,
                              lsuv_batch=batch)
    net = Network(arch, dtype="float64", xp=xp)
    net.set_flat(flat)
    # When the batch goes through the network
    _, cache = net.forward(xp.asarray(batch), train=True)
    # Then every layer's pre-activation has variance 1 within LSUV's tolerance (0.01)
    variances = [float(to_numpy(z).var()) for z in cache.pre]
    assert len(variances) == len(arch.hidden) + 1
    np.testing.assert_allclose(variances, 1.0, atol=0.01)


def test_lsuv_through_the_trainer(xp: ModuleType) -> None:
    # iris's training part (90 rows) is smaller than LSUV's batch, so the batch is all of it
    spec = make_spec("iris", model={"hidden": [16, 16], "init": "lsuv"})
    data = splits("iris")
    tr = Trainer(spec, data, xp)
    tr.net.set_flat(tr.initial_params())
    _, cache = tr.net.forward(xp.asarray(data.X_train), train=True)
    np.testing.assert_allclose([float(to_numpy(z).var()) for z in cache.pre], 1.0, atol=0.01)


# ---------------------------------------------------------------------- marginal output
@pytest.mark.parametrize("dataset", ["digits", "breast_cancer", "diabetes"])
def test_output_bias_marginal_reproduces_the_training_marginal(xp: ModuleType,
                                                               dataset: str) -> None:
    # Given output_bias: marginal (softmax for digits, sigmoid for breast_cancer, linear
    # for diabetes), and hidden units that output 0 for a zero input (bias_init 0)
    spec = make_spec(dataset, model={"hidden": [16], "output_bias": "marginal"})
    data = splits(dataset)
    tr = Trainer(spec, data, xp)
    # When the network is initialised
    tr.net.set_flat(tr.initial_params())
    b = tr.net.view(tr.net.params, "b1")
    at_zero = to_numpy(tr.net.predict(xp.zeros((1, data.n_features))))[0]
    y = data.y_train
    # Then its prediction is the training marginal
    if tr.arch.output == "softmax":
        expected = np.bincount(y, minlength=data.n_classes) / len(y)
        np.testing.assert_allclose(to_numpy(softmax(b))[0], expected, rtol=1e-12)
    elif tr.arch.output == "sigmoid":
        expected = np.array([y.mean()])
        np.testing.assert_allclose(to_numpy(sigmoid(b))[0], expected, rtol=1e-12)
    else:
        expected = np.array([y.mean()])
        np.testing.assert_allclose(to_numpy(b)[0], expected, rtol=1e-12)
    np.testing.assert_allclose(at_zero, expected, rtol=1e-12)


# ----------------------------------------------------------------------------------- L1
def test_l1_shrinks_irrelevant_weights_to_the_lasso_zeros(xp: ModuleType) -> None:
    """L1 by subgradient descent (docs/spec.md: g += l1·sign(w)) against scikit-learn's Lasso.

    Our objective (1/n)‖y − Xw − b‖² + l1‖w‖₁ is twice Lasso's (1/2n)‖y − Xw − b‖² + α‖w‖₁
    with α = l1/2, so both have the same minimiser. The Lasso's coordinate descent sets
    the irrelevant weights to exactly 0. Subgradient steps do not: sign(w) makes them
    oscillate around 0 with an amplitude of about lr·l1, so they end at 0 only by chance.
    With a learning rate decayed to 1e-7 they end up five orders of magnitude below the
    relevant weights, which match the Lasso's; that is what is checked here.
    """
    # Given 10 features of which only the first 3 matter
    rng = np.random.default_rng(0)
    X = rng.normal(size=(250, 10))
    y = 3 * X[:, 0] - 2 * X[:, 1] + 1.5 * X[:, 2] + 0.5 * rng.normal(size=250)
    data = prepare(X, y, "regression", validation=0.0, test=0.2, seed=0, standardize=False)
    l1, steps = 0.2, 2500
    spec = make_spec("diabetes", data={"validation": 0.0}, model={"hidden": []},
                     optimizer={"name": "sgd", "lr": 0.05,
                                "schedule": {"kind": "linear", "final_lr": 1e-7,
                                             "steps": steps}},
                     regularization={"l1": l1},
                     training={"epochs": steps, "batch_size": "full"})
    # When full-batch subgradient descent runs with a decaying rate
    out = Trainer(spec, data, xp).run()
    w = out.arrays["W0"][:, 0]
    lasso = Lasso(alpha=l1 / 2, tol=1e-12, max_iter=100_000).fit(data.X_train, data.y_train)
    # Then the Lasso's zeros are ours, up to the subgradient's oscillation
    zero = lasso.coef_ == 0
    assert zero.tolist() == [False] * 3 + [True] * 7
    assert np.abs(w[zero]).max() < 1e-4
    assert np.abs(w[~zero]).min() / np.abs(w[zero]).max() > 1e4
    np.testing.assert_allclose(w[~zero], lasso.coef_[~zero], atol=1e-3)


def test_proximal_l1_sets_the_lasso_zeros_exactly(xp: ModuleType) -> None:
    """``regularization.l1_proximal``: sgd's step, then w ← sign(w)·max(|w| − ε·l1, 0) (ISTA).

    Proximal gradient descent converges to the Lasso's minimiser with its exact zeros.
    """
    # Given 10 features of which only the first 3 matter
    rng = np.random.default_rng(0)
    X = rng.normal(size=(250, 10))
    y = 3 * X[:, 0] - 2 * X[:, 1] + 1.5 * X[:, 2] + 0.5 * rng.normal(size=250)
    data = prepare(X, y, "regression", validation=0.0, test=0.2, seed=0, standardize=False)
    l1 = 0.2
    spec = make_spec("diabetes", data={"validation": 0.0}, model={"hidden": []},
                     optimizer={"name": "sgd", "lr": 0.05},
                     regularization={"l1": l1, "l1_proximal": True},
                     training={"epochs": 2000, "batch_size": "full"})
    # When proximal gradient descent runs
    out = Trainer(spec, data, xp).run()
    w = out.arrays["W0"][:, 0]
    lasso = Lasso(alpha=l1 / 2, tol=1e-12, max_iter=100_000).fit(data.X_train, data.y_train)
    # Then the irrelevant weights are exactly zero, as the Lasso's, and the rest agree
    zero = lasso.coef_ == 0
    assert zero.tolist() == [False] * 3 + [True] * 7
    assert (w[zero] == 0).all() and (w[~zero] != 0).all()
    np.testing.assert_allclose(w[~zero], lasso.coef_[~zero], rtol=1e-6, atol=1e-8)


def test_proximal_l1_needs_sgd() -> None:
    from gradq.service.spec import SpecError

    with pytest.raises(SpecError, match="regularization.l1_proximal"):
        validate({"data": {"dataset": "diabetes"}, "optimizer": {"name": "adam"},
                  "regularization": {"l1": 0.1, "l1_proximal": True}})
    # a comparison's default arms (sgd, momentum, …) are checked too
    with pytest.raises(SpecError, match="needs optimizer sgd, not momentum"):
        validate({"kind": "compare", "data": {"dataset": "diabetes"},
                  "optimizer": {"name": "sgd"},
                  "regularization": {"l1": 0.1, "l1_proximal": True}})


# -------------------------------------------------------------------------------- ridge
@pytest.mark.parametrize("l2", [0.0, 0.05, 1.0])
def test_ridge_from_closed_form_equals_sklearn_ridge_on_diabetes(xp: ModuleType, l2: float) -> None:
    # Given diabetes, standardized, and closed_form with weight decay l2
    spec = make_spec("diabetes", model={"hidden": []}, optimizer={"name": "closed_form"},
                     regularization={"l2": l2})
    data = splits("diabetes")
    # When the trainer solves it
    out = Trainer(spec, data, xp).run()
    # Then it is scikit-learn's Ridge on the same objective: α = n·l2/2
    n = len(data.X_train)
    ref = Ridge(alpha=n * l2 / 2, solver="cholesky").fit(data.X_train, data.y_train)
    np.testing.assert_allclose(out.arrays["W0"][:, 0], ref.coef_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(out.arrays["b0"], [ref.intercept_], rtol=1e-8)
    assert out.final["steps"] == 1 and out.status == "succeeded"


# ---------------------------------------------------------------------------------- PCA
def test_data_pca_matches_sklearn_and_decorrelates() -> None:
    # Given digits standardized, and the same split projected on 10 components by data.pca
    k = 10
    plain = splits("digits")
    projected = splits("digits", pca=k)
    ref = PCA(n_components=k, svd_solver="full").fit(plain.X_train)
    Z = projected.X_train
    # Then the explained variances (and their ratios) are scikit-learn's
    np.testing.assert_allclose(Z.var(axis=0, ddof=1), ref.explained_variance_, rtol=1e-8)
    np.testing.assert_allclose(projected.info["pca_explained_variance_ratio"],
                               ref.explained_variance_ratio_, rtol=1e-8)
    # And the transformed training features are uncorrelated
    C = np.corrcoef(Z, rowvar=False)
    np.testing.assert_allclose(C, np.eye(k), atol=1e-10)
    # And validation and test parts are projected with the training fit (up to the sign of
    # each component)
    for part in ("val", "test"):
        ours, theirs = getattr(projected, f"X_{part}"), ref.transform(getattr(plain, f"X_{part}"))
        signs = np.sign((ours * theirs).sum(axis=0))
        np.testing.assert_allclose(ours, theirs * signs, rtol=1e-7, atol=1e-9)
