"""Principal component analysis by SVD of the centred data (Goodfellow et al. section 5.8.1).

With ``Xc = X − x̄ = U S Vᵀ`` (thin SVD, n samples), the principal directions are the rows
of ``Vᵀ`` and the variance of the data along direction k is ``S_k² / (n − 1)``. The code
``z = (x − x̄) V_k`` has a diagonal covariance: ``Zᵀ Z / (n−1) = S_k² / (n−1)``, the
decorrelated representation of the book's eq. 5.95.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy

from .backend import array_module


def _flip_signs(xp: Any, Vt: Any) -> Any:
    """Make each row of ``Vt`` have its largest-magnitude entry positive.

    An SVD fixes each singular vector only up to sign; this is scikit-learn's
    ``svd_flip(..., u_based_decision=False)``, so components are deterministic and
    comparable with ``sklearn.decomposition.PCA``.
    """
    if Vt.shape[0] == 0:
        return Vt
    rows = xp.arange(Vt.shape[0])
    biggest = xp.argmax(xp.abs(Vt), axis=1)
    signs = xp.sign(Vt[rows, biggest])
    signs = xp.where(signs == 0, 1, signs).astype(Vt.dtype)
    return Vt * signs[:, None]


@dataclass(frozen=True)
class PCA:
    """A fitted projection onto the first k principal components.

    ``mean`` (d,) is x̄; ``components`` (k, d) holds the unit principal directions as rows,
    by decreasing variance; ``explained_variance`` (k,) is ``S²/(n−1)``;
    ``explained_variance_ratio`` (k,) is ``S_k² / Σ_all S²`` (the share of the total
    variance, so it sums to 1 only when every component is kept).
    """

    mean: Any
    components: Any
    explained_variance: Any
    explained_variance_ratio: Any

    @classmethod
    def fit(cls, X: Any, k: int | None = None) -> PCA:
        """Fit on ``X`` (n, d): ``X − x̄ = U S Vᵀ``, keep the first ``k`` rows of ``Vᵀ``.

        ``k=None`` keeps ``min(n, d)`` components. Float32 input stays float32; anything
        else is computed in float64, on ``X``'s array module.
        """
        xp = array_module(X)
        X = xp.asarray(X)
        if X.dtype not in (numpy.float32, numpy.float64):
            X = X.astype(numpy.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n, d), got shape {X.shape}")
        n, d = X.shape
        if n < 2:
            raise ValueError("PCA needs at least 2 samples")
        rank = min(n, d)
        k = rank if k is None else int(k)
        if not 1 <= k <= rank:
            raise ValueError(f"k must be between 1 and min(n, d) = {rank}, got {k}")

        mean = X.mean(axis=0)  # x̄
        _, S, Vt = xp.linalg.svd(X - mean, full_matrices=False)  # Xc = U S Vᵀ
        Vt = _flip_signs(xp, Vt[:k])
        variance = S**2 / (n - 1)  # variance along each principal direction
        total = variance.sum()
        ratio = variance[:k] / total if float(total) > 0 else xp.zeros_like(variance[:k])
        return cls(
            mean=mean,
            components=Vt,
            explained_variance=variance[:k],
            explained_variance_ratio=ratio,
        )

    @property
    def n_components(self) -> int:
        """k, the number of kept components."""
        return int(self.components.shape[0])

    def transform(self, X: Any) -> Any:
        """Project: ``z = (x − x̄) Vₖ``, shape (n, k)."""
        xp = array_module(X, self.components)
        X = xp.asarray(X, dtype=self.components.dtype)
        return (X - self.mean) @ self.components.T

    def inverse_transform(self, Z: Any) -> Any:
        """Reconstruct: ``x̂ = z Vₖᵀ + x̄``, shape (n, d)."""
        xp = array_module(Z, self.components)
        Z = xp.asarray(Z, dtype=self.components.dtype)
        return Z @ self.components + self.mean


def fit(X: Any, k: int | None = None) -> PCA:
    """``PCA.fit(X, k)``: the first ``k`` principal components of ``X``."""
    return PCA.fit(X, k)
