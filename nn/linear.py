"""Closed-form linear regression: least squares and ridge from the normal equations.

The objective is the one every gradq model minimises (docs/spec.md), for a linear
model ``ŷ = x W + b`` with a linear output:

    J(W, b) = (1/n) Σ_i ‖y_i − (x_i W + b)‖²  +  (l2/2)·‖W‖²_F

(the data loss is the mean over samples of the squared error summed over outputs, no
1/2; the bias is not penalised). Setting ∂J/∂b = 0 gives ``b = ȳ − x̄ W``; substituting
it leaves least squares on the centred data ``Xc = X − x̄``, ``Yc = Y − ȳ``, whose
normal equations (Goodfellow et al. eq. 5.12 with weight decay, eq. 7.17) are

    (Xcᵀ Xc + (n·l2/2)·I) W = Xcᵀ Yc.
"""

from __future__ import annotations

from typing import Any

import numpy

from .backend import array_module


def _float_dtype(*arrays: Any) -> numpy.dtype:
    """The floating dtype the solution is computed in: float32 only if every input is."""
    dtype = numpy.result_type(*(a.dtype for a in arrays))
    return dtype if dtype in (numpy.float32, numpy.float64) else numpy.dtype(numpy.float64)


def _cholesky_or_none(xp: Any, A: Any, check_rank: bool) -> Any:
    """The Cholesky factor ``L`` (``A = L Lᵀ``), or ``None`` when ``A`` is not positive
    definite (NumPy raises; CuPy may return NaNs instead of raising) or, with
    ``check_rank``, only positive definite by rounding."""
    try:
        L = xp.linalg.cholesky(A)
    except Exception:  # numpy.linalg.LinAlgError, or CuPy's own linalg error
        return None
    diag = xp.diagonal(L)
    if not bool(xp.all(xp.isfinite(diag))):
        return None
    # A pivot of ‖A‖·eps means XcᵀXc is rank deficient up to rounding: refuse it rather
    # than return a huge, meaningless W (lstsq gives the minimum-norm solution instead).
    if not check_rank:
        return L
    eps = numpy.finfo(A.dtype).eps
    scale = float(xp.max(xp.diagonal(A))) if A.shape[0] else 0.0
    if float(xp.min(diag)) ** 2 <= A.shape[0] * eps * scale:
        return None
    return L


def closed_form(X: Any, Y: Any, l2: float = 0.0) -> tuple[Any, Any]:
    """Exact minimiser ``(W, b)`` of ``(1/n)Σ‖y_i − x_i W − b‖² + (l2/2)‖W‖²``.

    ``X`` is (n, d); ``Y`` is (n,) or (n, m), a 1-D target counting as one output. Returns
    ``W`` of shape (d, m) (inputs, outputs, like every gradq layer) and ``b`` of shape (m,),
    on ``X``'s array module, in float32 when the inputs are float32, else float64.

    Solves ``(XcᵀXc + (n·l2/2)·I) W = XcᵀYc`` and sets ``b = ȳ − x̄W``. With ``l2 > 0`` the
    matrix is positive definite; with ``l2 == 0`` and a rank-deficient ``Xc`` the
    minimum-norm least-squares solution (``lstsq``) is returned instead.
    """
    xp = array_module(X, Y)
    X, Y = xp.asarray(X), xp.asarray(Y)
    dtype = _float_dtype(X, Y)
    X, Y = X.astype(dtype, copy=False), Y.astype(dtype, copy=False)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, d), got shape {X.shape}")
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y must be (n,) or (n, m) with n = {X.shape[0]}, got {Y.shape}")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    n, d = X.shape

    x_mean = X.mean(axis=0)  # x̄
    y_mean = Y.mean(axis=0)  # ȳ
    Xc = X - x_mean
    Yc = Y - y_mean

    A = Xc.T @ Xc + (n * l2 / 2.0) * xp.eye(d, dtype=dtype)  # XcᵀXc + (n·l2/2)·I
    B = Xc.T @ Yc  # XcᵀYc
    if not bool(xp.all(xp.isfinite(A))) or not bool(xp.all(xp.isfinite(B))):
        raise ValueError("X and Y must be finite")
    L = _cholesky_or_none(xp, A, check_rank=(l2 == 0))
    if L is not None:
        # A = L Lᵀ: forward then back substitution (general solves: d is small, and
        # NumPy has no triangular solver of its own).
        W = xp.linalg.solve(L.T, xp.linalg.solve(L, B))
    elif l2 == 0:
        W = xp.linalg.lstsq(Xc, Yc, rcond=None)[0]  # minimum-norm least squares
    else:  # l2 > 0 makes A positive definite in exact arithmetic; LU copes with rounding
        W = xp.linalg.solve(A, B)
    b = y_mean - x_mean @ W  # b = ȳ − x̄W
    return W, b
