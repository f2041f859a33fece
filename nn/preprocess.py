"""Data preparation: split, standardize, project — fitted on the training part only.

The split depends only on the seed (and fold), so every arm of a comparison sees the same
training, validation and test sets for a given seed (the paired design).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Splits:
    """Host arrays for the three parts, plus what was fitted on the training part."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: str
    n_classes: int | None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])


def split_indices(y: np.ndarray, task: str, validation: float, test: float, seed: int,
                  fold: tuple[int, int] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) index arrays; stratified by class for classification.

    With ``fold=(k, i)`` the test part is the i-th of k folds (k-fold cross-validation) and
    ``test`` is ignored; the validation part is then drawn from the rest.
    """
    rng = np.random.default_rng([seed, 7919])
    n = len(y)
    groups = ([np.flatnonzero(y == c) for c in np.unique(y)] if task == "classification"
              else [np.arange(n)])
    tr, va, te = [], [], []
    for g in groups:
        g = rng.permutation(g)
        if fold is not None:
            k, i = fold
            parts = np.array_split(g, k)
            g_test = parts[i]
            rest = np.concatenate([p for j, p in enumerate(parts) if j != i])
            n_val = int(round(validation * len(g)))
            te.append(g_test)
            va.append(rest[:n_val])
            tr.append(rest[n_val:])
        else:
            n_test = int(round(test * len(g)))
            n_val = int(round(validation * len(g)))
            te.append(g[:n_test])
            va.append(g[n_test:n_test + n_val])
            tr.append(g[n_test + n_val:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in (tr, va, te))


def prepare(X: np.ndarray, y: np.ndarray, task: str, *, validation: float, test: float,
            seed: int, standardize: bool = True, pca: int | None = None,
            fold: tuple[int, int] | None = None) -> Splits:
    """Split, then standardize and project with statistics of the training part only."""
    tr, va, te = split_indices(y, task, validation, test, seed, fold)
    if len(tr) == 0:
        raise ValueError("the training part is empty: lower data.validation or data.test")
    Xtr, Xva, Xte = X[tr], X[va], X[te]
    info: dict[str, Any] = {"n_train": len(tr), "n_val": len(va), "n_test": len(te)}
    if standardize:
        mean = Xtr.mean(axis=0)
        std = Xtr.std(axis=0)
        std[std == 0] = 1.0  # constant features stay constant (zero) rather than dividing by 0
        Xtr, Xva, Xte = ((a - mean) / std for a in (Xtr, Xva, Xte))
    if pca is not None:
        from .pca import fit as pca_fit

        model = pca_fit(Xtr, pca)
        Xtr, Xva, Xte = (model.transform(a) for a in (Xtr, Xva, Xte))
        info["pca_explained_variance_ratio"] = [float(v) for v in
                                                np.asarray(model.explained_variance_ratio)]
    n_classes = int(y.max()) + 1 if task == "classification" else None
    return Splits(Xtr, y[tr], Xva, y[va], Xte, y[te], task, n_classes, info)
