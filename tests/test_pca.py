"""PCA (nn/pca.py) against scikit-learn's PCA, and the book's decorrelation property."""

from __future__ import annotations

import numpy as np
import pytest
from _backends import xp_fixture
from gradq.nn.backend import to_numpy
from gradq.nn.pca import PCA, fit
from sklearn.datasets import load_digits, load_wine
from sklearn.decomposition import PCA as SkPCA

xp_backend = xp_fixture()

CASES = [("digits", load_digits, 10), ("wine", load_wine, 5)]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def data(request):
    _, loader, k = request.param
    X, _ = loader(return_X_y=True)
    return X.astype(np.float64), k


def test_explained_variance_matches_sklearn(xp, data):
    X, k = data
    ours = fit(xp.asarray(X), k)
    ref = SkPCA(n_components=k, svd_solver="full").fit(X)
    assert ours.components.shape == (k, X.shape[1]) and ours.n_components == k
    np.testing.assert_allclose(to_numpy(ours.mean), ref.mean_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        to_numpy(ours.explained_variance), ref.explained_variance_, rtol=1e-10, atol=1e-8
    )
    np.testing.assert_allclose(
        to_numpy(ours.explained_variance_ratio),
        ref.explained_variance_ratio_,
        rtol=1e-10,
        atol=1e-8,
    )


def test_components_agree_up_to_sign_convention(xp, data):
    X, k = data
    ours = to_numpy(fit(xp.asarray(X), k).components)
    ref = SkPCA(n_components=k, svd_solver="full").fit(X).components_
    # The same directions: |cos| = 1 for each pair of rows, and orthonormal rows ...
    np.testing.assert_allclose(np.abs(np.sum(ours * ref, axis=1)), 1.0, atol=1e-8)
    np.testing.assert_allclose(ours @ ours.T, np.eye(k), atol=1e-10)
    # ... and, with the svd_flip convention (largest |entry| positive), the same signs.
    biggest = ours[np.arange(k), np.abs(ours).argmax(axis=1)]
    assert np.all(biggest > 0)
    np.testing.assert_allclose(ours, ref, atol=1e-8)


def test_transformed_training_features_are_uncorrelated(xp, data):
    # Given the code z = (x − x̄)V of the training data
    X, k = data
    pca = fit(xp.asarray(X), k)
    Z = to_numpy(pca.transform(xp.asarray(X)))
    # Then it is centred, its covariance is diagonal, and the diagonal is the variance
    cov = np.cov(Z, rowvar=False)
    scale = cov.diagonal().max()
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-9 * np.sqrt(scale))
    np.testing.assert_allclose(cov - np.diag(cov.diagonal()), 0.0, atol=1e-10 * scale)
    np.testing.assert_allclose(cov.diagonal(), to_numpy(pca.explained_variance), rtol=1e-10)
    ref = SkPCA(n_components=k, svd_solver="full").fit(X)
    np.testing.assert_allclose(Z, ref.transform(X), atol=1e-8)


def test_all_components_reconstruct_the_data(xp):
    X, _ = load_wine(return_X_y=True)
    pca = PCA.fit(xp.asarray(X))  # k = None keeps min(n, d)
    assert pca.n_components == X.shape[1]
    assert abs(float(pca.explained_variance_ratio.sum()) - 1.0) < 1e-12
    back = pca.inverse_transform(pca.transform(xp.asarray(X)))
    np.testing.assert_allclose(to_numpy(back), X, atol=1e-9)


def test_float32_and_frozen(xp):
    X, _ = load_digits(return_X_y=True)
    pca = fit(xp.asarray(X, dtype=xp.float32), 5)
    ref = SkPCA(n_components=5, svd_solver="full").fit(X)
    assert pca.components.dtype == xp.float32
    assert pca.transform(xp.asarray(X[:3], dtype=xp.float32)).dtype == xp.float32
    np.testing.assert_allclose(to_numpy(pca.explained_variance), ref.explained_variance_, rtol=1e-4)
    with pytest.raises(AttributeError):
        pca.mean = None  # a fitted PCA is an immutable record


@pytest.mark.parametrize("k", [0, 14])
def test_k_out_of_range_is_refused(xp, k):
    X, _ = load_wine(return_X_y=True)
    with pytest.raises(ValueError, match="k must be"):
        fit(xp.asarray(X), k)
