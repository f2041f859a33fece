"""KernelSVM (nn/svm.py) against scikit-learn's SVC (libsvm) on the same problems."""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import pytest
from _backends import xp_fixture
from gradq.nn import svm
from gradq.nn.backend import to_numpy
from gradq.nn.svm import KernelSVM
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

xp_backend = xp_fixture()

DATASETS = {"digits": load_digits, "breast_cancer": load_breast_cancer}
KERNELS = ["linear", "poly", "rbf"]
C = 1.0


@cache
def _split(name: str):
    """Standardized features (fit on the training part), a fixed stratified 75/25 split."""
    X, y = DATASETS[name](return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    scaler = StandardScaler().fit(Xtr)
    return scaler.transform(Xtr), scaler.transform(Xte), ytr, yte


@cache
def _reference(name: str, kernel: str) -> SVC:
    Xtr, _, ytr, _ = _split(name)
    return SVC(kernel=kernel, C=C).fit(Xtr, ytr)


@cache
def _ours_numpy(name: str, kernel: str) -> KernelSVM:
    Xtr, _, ytr, _ = _split(name)
    return KernelSVM(kernel, C=C).fit(Xtr, ytr)


def _fit(xp, name: str, kernel: str) -> KernelSVM:
    """Train once per backend (NumPy models are cached across tests)."""
    if xp is np:
        return _ours_numpy(name, kernel)
    Xtr, _, ytr, _ = _split(name)
    return KernelSVM(kernel, C=C).fit(xp.asarray(Xtr), xp.asarray(ytr))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", list(DATASETS))
def test_accuracy_and_support_vectors_match_svc(xp, name, kernel):
    # Given the same split, kernel and C for both solvers
    _, Xte, _, yte = _split(name)
    ref = _reference(name, kernel)
    # When our SMO model is trained
    model = _fit(xp, name, kernel)
    pred = model.predict(xp.asarray(Xte))
    # Then test accuracy is within 0.01 of SVC's and the support sets are about the same size
    assert isinstance(pred, xp.ndarray)
    ours_acc = float((to_numpy(pred) == yte).mean())
    ref_acc = float((ref.predict(Xte) == yte).mean())
    assert abs(ours_acc - ref_acc) <= 0.01, (ours_acc, ref_acc)
    n_ref = int(ref.n_support_.sum())
    assert abs(model.n_support_ - n_ref) <= max(3, 0.03 * n_ref), (model.n_support_, n_ref)


@pytest.mark.parametrize("kernel", KERNELS)
def test_binary_decision_function_agrees_with_svc(xp, kernel):
    _, Xte, _, _ = _split("breast_cancer")
    ref = _reference("breast_cancer", kernel).decision_function(Xte)
    ours = to_numpy(_fit(xp, "breast_cancer", kernel).decision_function(xp.asarray(Xte)))
    assert ours.shape == ref.shape
    assert np.mean(np.sign(ours) == np.sign(ref)) >= 0.98
    # Both solve the dual to tol = 1e-3, so the values themselves are close too
    assert np.max(np.abs(ours - ref)) < 0.05 * np.max(np.abs(ref))


def test_prediction_uses_only_the_support_vectors(xp):
    # Given a fitted binary model, f(x) = Σ_SV α_i y_i K(x_i, x) − ρ over its kept vectors
    Xtr, Xte, _, _ = _split("breast_cancer")
    model = _fit(xp, "breast_cancer", "rbf")
    sv = to_numpy(model.support_vectors_)
    assert sv.shape == (model.n_support_, Xtr.shape[1])
    np.testing.assert_array_equal(sv, Xtr[model.support_])
    # Then the decision function is that sum (rebuilt here by hand, on the host)
    K = np.exp(-model.gamma_ * ((Xte[:, None, :] - sv[None, :, :]) ** 2).sum(axis=2))
    coef, rho = to_numpy(model._coef)[:, 0], float(to_numpy(model._rho)[0])
    np.testing.assert_allclose(
        to_numpy(model.decision_function(xp.asarray(Xte))), K @ coef - rho, atol=1e-10
    )
    assert model.gamma_ == pytest.approx(1.0 / (Xtr.shape[1] * Xtr.var()))


def test_multiclass_decision_function_has_one_column_per_pair(xp):
    _, Xte, _, _ = _split("digits")
    model = _fit(xp, "digits", "rbf")
    dec = model.decision_function(xp.asarray(Xte[:7]))
    assert dec.shape == (7, 45) and len(model.pairs_) == 45


def test_row_cache_path_gives_the_same_model(xp, monkeypatch):
    # Given a kernel matrix "too big" to precompute, rows come from the on-demand cache
    Xtr, Xte, ytr, _ = _split("breast_cancer")
    full = _fit(xp, "breast_cancer", "rbf")
    monkeypatch.setattr(svm, "FULL_KERNEL_MAX", 50)
    monkeypatch.setattr(svm, "CACHE_BYTES", 8 * Xtr.shape[0] * 40)  # 40 rows
    lazy = KernelSVM("rbf", C=C).fit(xp.asarray(Xtr), xp.asarray(ytr))
    # Then the solver takes the same steps
    assert lazy.n_support_ == full.n_support_ and lazy.n_iter_ == full.n_iter_
    np.testing.assert_allclose(
        to_numpy(lazy.decision_function(xp.asarray(Xte))),
        to_numpy(full.decision_function(xp.asarray(Xte))),
        atol=1e-10,
    )


def test_string_labels_and_float32(xp):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 2))
    labels = np.where(X[:, 0] * X[:, 1] > 0, "same", "diff")  # XOR: needs a kernel
    model = KernelSVM("rbf", C=10.0, gamma=1.0).fit(xp.asarray(X, dtype=xp.float32), labels)
    pred = model.predict(xp.asarray(X, dtype=xp.float32))
    assert list(model.classes_) == ["diff", "same"]
    assert np.mean(pred == labels) > 0.95
    assert model.decision_function(xp.asarray(X, dtype=xp.float32)).dtype == xp.float32


def test_max_iter_warns_once(xp):
    Xtr, _, ytr, _ = _split("digits")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        KernelSVM("rbf", max_iter=5).fit(xp.asarray(Xtr[:300]), xp.asarray(ytr[:300]))
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "max_iter=5" in messages[0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kernel": "sigmoid"}, "kernel"),
        ({"C": 0.0}, "C must"),
        ({"gamma": "big"}, "gamma"),
        ({"gamma": -1.0}, "gamma"),
        ({"degree": 0}, "degree"),
    ],
)
def test_bad_hyperparameters_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KernelSVM(**kwargs)


def test_one_class_is_refused(xp):
    with pytest.raises(ValueError, match="two classes"):
        KernelSVM().fit(xp.asarray(np.zeros((5, 2))), np.ones(5))
