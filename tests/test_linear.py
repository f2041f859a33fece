"""closed_form (nn/linear.py) against scikit-learn's Ridge and NumPy's lstsq."""

from __future__ import annotations

import numpy as np
import pytest
from _backends import xp_fixture
from gradq.nn.backend import to_numpy
from gradq.nn.linear import closed_form
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

xp_backend = xp_fixture()


def _regression(n: int = 200, d: int = 8, m: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d) + rng.normal(size=d)
    W = rng.normal(size=(d, m))
    Y = X @ W + rng.normal(size=m) + 0.3 * rng.normal(size=(n, m))
    return X, Y


def _objective_gradient(X, Y, W, b, l2):
    """∂J/∂W and ∂J/∂b of J = (1/n)Σ‖y − xW − b‖² + (l2/2)‖W‖², in float64 on the host."""
    n = X.shape[0]
    R = Y - X @ W - b
    return -2.0 / n * X.T @ R + l2 * W, -2.0 / n * R.sum(axis=0)


@pytest.mark.parametrize("l2", [1e-3, 0.1, 2.0])
@pytest.mark.parametrize("outputs", [1, 3])
def test_ridge_matches_sklearn(xp, l2, outputs):
    # Given a multi-output regression problem
    X, Y = _regression(m=outputs)
    n = X.shape[0]
    # When solved in closed form, and by Ridge on the same objective (sum ·n: alpha = n·l2/2)
    W, b = closed_form(xp.asarray(X), xp.asarray(Y), l2=l2)
    ref = Ridge(alpha=n * l2 / 2, solver="cholesky").fit(X, Y)
    # Then the parameters agree to 1e-8 and live on the input's backend
    assert isinstance(W, xp.ndarray) and W.shape == (8, outputs) and b.shape == (outputs,)
    assert W.dtype == xp.float64
    coef = np.reshape(ref.coef_, (outputs, -1)).T  # sklearn drops the axis of one output
    np.testing.assert_allclose(to_numpy(W), coef, rtol=0, atol=1e-8)
    np.testing.assert_allclose(to_numpy(b), np.reshape(ref.intercept_, -1), rtol=0, atol=1e-8)


def test_ridge_on_diabetes_matches_sklearn(xp):
    X, y = load_diabetes(return_X_y=True)
    l2 = 0.01
    W, b = closed_form(xp.asarray(X), xp.asarray(y), l2=l2)
    ref = Ridge(alpha=X.shape[0] * l2 / 2, solver="svd").fit(X, y)
    assert W.shape == (X.shape[1], 1)  # a 1-D target counts as one output
    np.testing.assert_allclose(to_numpy(W)[:, 0], ref.coef_, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(to_numpy(b)[0], ref.intercept_, rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize("outputs", [1, 4])
def test_least_squares_matches_lstsq_with_bias_column(xp, outputs):
    X, Y = _regression(m=outputs, seed=1)
    W, b = closed_form(xp.asarray(X), xp.asarray(Y))
    Xb = np.hstack([X, np.ones((X.shape[0], 1))])
    theta = np.linalg.lstsq(Xb, Y, rcond=None)[0]
    np.testing.assert_allclose(to_numpy(W), theta[:-1], rtol=0, atol=1e-8)
    np.testing.assert_allclose(to_numpy(b), theta[-1], rtol=0, atol=1e-8)


def test_multi_output_is_columnwise(xp):
    X, Y = _regression(m=3, seed=2)
    W, b = closed_form(xp.asarray(X), xp.asarray(Y), l2=0.5)
    for k in range(3):
        Wk, bk = closed_form(xp.asarray(X), xp.asarray(Y[:, k]), l2=0.5)
        np.testing.assert_allclose(to_numpy(W)[:, k], to_numpy(Wk)[:, 0], atol=1e-12)
        np.testing.assert_allclose(to_numpy(b)[k], to_numpy(bk)[0], atol=1e-12)


@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_gradient_vanishes_at_the_solution(xp, l2):
    X, Y = _regression(seed=3)
    W, b = closed_form(xp.asarray(X), xp.asarray(Y), l2=l2)
    gW, gb = _objective_gradient(X, Y, to_numpy(W), to_numpy(b), l2)
    assert np.abs(gW).max() < 1e-10 and np.abs(gb).max() < 1e-10


def test_float32_stays_float32_and_close(xp):
    X, Y = _regression(seed=4)
    W64, b64 = closed_form(xp.asarray(X), xp.asarray(Y), l2=0.1)
    W32, b32 = closed_form(xp.asarray(X, dtype=xp.float32), xp.asarray(Y, dtype=xp.float32), 0.1)
    assert W32.dtype == xp.float32 and b32.dtype == xp.float32
    np.testing.assert_allclose(to_numpy(W32), to_numpy(W64), rtol=0, atol=1e-3)
    np.testing.assert_allclose(to_numpy(b32), to_numpy(b64), rtol=0, atol=1e-3)


def test_rank_deficient_least_squares_falls_back_to_min_norm(xp):
    # Given a duplicated feature, XcᵀXc is singular
    X, Y = _regression(d=4, m=2, seed=5)
    X = np.hstack([X, X[:, :1]])
    # When l2 = 0 the minimum-norm least-squares solution is returned
    W, b = closed_form(xp.asarray(X), xp.asarray(Y))
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    np.testing.assert_allclose(to_numpy(W), np.linalg.pinv(Xc) @ Yc, atol=1e-8)
    # Then the duplicated columns share the weight equally, and ridge still solves
    np.testing.assert_allclose(to_numpy(W)[0], to_numpy(W)[-1], atol=1e-8)
    Wr, _ = closed_form(xp.asarray(X), xp.asarray(Y), l2=1e-2)
    assert bool(xp.all(xp.isfinite(Wr)))


def test_bad_input_is_refused(xp):
    X, Y = _regression()
    with pytest.raises(ValueError, match="l2"):
        closed_form(xp.asarray(X), xp.asarray(Y), l2=-1.0)
    with pytest.raises(ValueError, match="Y must be"):
        closed_form(xp.asarray(X), xp.asarray(Y[:-1]))
    with pytest.raises(ValueError, match="X must be 2-D"):
        closed_form(xp.asarray(X[:, 0]), xp.asarray(Y))
