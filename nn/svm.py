"""Kernel support vector machine for classification, trained in the dual with SMO.

For labels ``y_i ∈ {−1, +1}`` the soft-margin SVM (Goodfellow et al. section 5.7.2) solves
the dual problem

    min_α  ½ αᵀQα − eᵀα    subject to  0 ≤ α_i ≤ C,  yᵀα = 0,     Q_ij = y_i y_j K(x_i, x_j)

and predicts with ``f(x) = Σ_i α_i y_i K(x_i, x) − ρ``; only the support vectors
(``α_i > 0``) enter the sum. The solver is Platt's sequential minimal optimisation as
libsvm implements it: each step changes two multipliers, chosen by the second-order
working-set selection of Fan, Chen & Lin (JMLR 2005, "WSS 2"), and it stops when the
maximal violation ``m(α) − M(α)`` falls below ``tol``. Several classes are handled
one-vs-one with voting, like libsvm and scikit-learn's ``SVC``.

Kernels: ``linear`` x·x', ``poly`` (γ x·x' + coef0)^degree, ``rbf`` exp(−γ‖x − x'‖²).
Kernel matrices and predictions are computed on ``xp`` (NumPy or CuPy); the SMO loop
runs on the host (see ``_smo``).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy

from .backend import array_module, to_numpy

KERNELS = ("linear", "poly", "rbf")
TAU = 1e-12  # libsvm's stand-in for a non-positive curvature a_ij = K_ii + K_jj − 2K_ij
FULL_KERNEL_MAX = 10_000  # precompute the whole n × n kernel matrix up to this many samples
CACHE_BYTES = 256 * 2**20  # kernel rows kept by the on-demand cache beyond that size


@dataclass(frozen=True)
class Kernel:
    """A kernel function with its hyperparameters; ``gamma`` is already a number."""

    name: str
    gamma: float
    degree: int
    coef0: float

    def __call__(self, A: Any, B: Any) -> Any:
        """The Gram matrix ``K[i, j] = K(a_i, b_j)``, shape (len(A), len(B)), on ``xp``."""
        xp = array_module(A, B)
        dot = A @ B.T
        if self.name == "linear":
            return dot  # x·x'
        if self.name == "poly":
            return (self.gamma * dot + self.coef0) ** self.degree  # (γ x·x' + c₀)^p
        # ‖a − b‖² = ‖a‖² + ‖b‖² − 2a·b, clipped at 0 against rounding
        sq = (A * A).sum(axis=1)[:, None] + (B * B).sum(axis=1)[None, :] - 2.0 * dot
        return xp.exp(-self.gamma * xp.maximum(sq, 0.0))  # exp(−γ‖x − x'‖²)

    def diagonal(self, A: Any) -> Any:
        """``K(a_i, a_i)`` for each row, without forming the matrix."""
        xp = array_module(A)
        sq = (A * A).sum(axis=1)
        if self.name == "linear":
            return sq
        if self.name == "poly":
            return (self.gamma * sq + self.coef0) ** self.degree
        return xp.ones_like(sq)


def _host_kernel(X: Any, kernel: Kernel) -> numpy.ndarray:
    """The whole kernel matrix, computed on ``xp`` and copied to the host once (float64)."""
    return numpy.ascontiguousarray(to_numpy(kernel(X, X)), dtype=numpy.float64)


def _lazy_rows(X: Any, kernel: Kernel) -> tuple[Callable[[int], numpy.ndarray], numpy.ndarray]:
    """Kernel rows computed on ``xp`` when first asked for, kept in an LRU cache.

    For training sets whose n × n matrix would not fit (libsvm's kernel cache, simplified).
    """
    n = X.shape[0]
    capacity = max(2, CACHE_BYTES // (8 * n))
    cache: OrderedDict[int, numpy.ndarray] = OrderedDict()

    def row(i: int) -> numpy.ndarray:
        r = cache.get(i)
        if r is not None:
            cache.move_to_end(i)
            return r
        r = to_numpy(kernel(X[i : i + 1], X))[0].astype(numpy.float64)
        cache[i] = r
        if len(cache) > capacity:
            cache.popitem(last=False)
        return r

    return row, to_numpy(kernel.diagonal(X)).astype(numpy.float64)


def _smo(
    row: Callable[[int], numpy.ndarray],
    diag: numpy.ndarray,
    y: numpy.ndarray,
    C: float,
    tol: float,
    max_iter: int,
) -> tuple[numpy.ndarray, float, int, bool]:
    """Solve the binary dual; return ``(α, ρ, iterations, converged)``.

    ``row(t)`` is row t of the kernel matrix K (a NumPy array), ``diag`` is K's diagonal,
    ``y`` holds ±1. This loop runs on the host on NumPy arrays: SMO is inherently
    sequential (each pair depends on the previous update), so a GPU would only add a
    synchronisation per step. Each step costs O(n), all of it vectorised: the pair
    selection scans n candidates, the gradient update is two scaled kernel rows.

    Notation (Fan, Chen & Lin 2005): ``G = Qα − e`` is the gradient and we track
    ``v = −y∘G``. With I_up = {t: α_t < C, y_t = 1 or α_t > 0, y_t = −1} and
    I_low = {t: α_t < C, y_t = −1 or α_t > 0, y_t = 1},

        i = argmax_{t ∈ I_up} v_t,                     m = v_i,   M = min_{t ∈ I_low} v_t
        j = argmin_{t ∈ I_low, v_t < m} −b_t² / a_t,   b_t = m − v_t,  a_t = K_ii + K_tt − 2K_it

    and the iteration stops when m − M < tol (the KKT conditions to within tol).
    """
    n = y.shape[0]
    yf = y.astype(numpy.float64)
    pos = y > 0
    alpha = numpy.zeros(n)
    v = yf.copy()  # α = 0: G = −e, so v = −y∘G = y
    up = pos.copy()  # at α = 0, I_up is the positives
    low = ~pos  # and I_low the negatives
    ninf = numpy.full(n, -numpy.inf)
    pinf = numpy.full(n, numpy.inf)
    n_iter = 0
    converged = False
    while n_iter < max_iter:
        # --- working set: i maximises the violation, j the second-order decrease
        vu = numpy.where(up, v, ninf)
        i = int(vu.argmax())
        m = vu[i]
        vl = numpy.where(low, v, pinf)
        if m - vl.min() < tol:  # m(α) − M(α) < tol: optimal to within tol
            converged = True
            break
        Ki = row(i)
        a = (diag + diag[i]) - 2.0 * Ki  # a_it = K_ii + K_tt − 2K_it
        a[a <= 0.0] = TAU
        b = m - v  # b_it = m − v_t, > 0 exactly on the candidates
        gain = numpy.where(vl < m, b * b / a, -1.0)  # b²/a = 2 × the decrease of the step
        j = int(gain.argmax())
        Kj = row(j)
        n_iter += 1

        # --- analytic two-variable update with clipping to the box (libsvm's Solver::Solve)
        yi, yj = yf[i], yf[j]
        Gi, Gj = -yi * v[i], -yj * v[j]  # G = −y∘v
        ai_old, aj_old = alpha[i], alpha[j]
        quad = diag[i] + diag[j] - 2.0 * Ki[j]  # a_ij, the same for both label cases
        if quad <= 0.0:
            quad = TAU
        if yi != yj:
            delta = (-Gi - Gj) / quad
            diff = ai_old - aj_old
            ai, aj = ai_old + delta, aj_old + delta
            if diff > 0.0:
                if aj < 0.0:
                    aj, ai = 0.0, diff
            elif ai < 0.0:
                ai, aj = 0.0, -diff
            if diff > 0.0:  # C_i − C_j = 0: one C for both classes
                if ai > C:
                    ai, aj = C, C - diff
            elif aj > C:
                aj, ai = C, C + diff
        else:
            delta = (Gi - Gj) / quad
            total = ai_old + aj_old
            ai, aj = ai_old - delta, aj_old + delta
            if total > C:
                if ai > C:
                    ai, aj = C, total - C
            elif aj < 0.0:
                aj, ai = 0.0, total
            if total > C:
                if aj > C:
                    aj, ai = C, total - C
            elif ai < 0.0:
                ai, aj = 0.0, total
        alpha[i], alpha[j] = ai, aj

        # --- gradient: G += Q_i Δα_i + Q_j Δα_j, i.e. v −= y_i Δα_i K_i + y_j Δα_j K_j
        v -= (yi * (ai - ai_old)) * Ki + (yj * (aj - aj_old)) * Kj
        for t, at in ((i, ai), (j, aj)):
            up[t] = at < C if pos[t] else at > 0.0
            low[t] = at > 0.0 if pos[t] else at < C
    return alpha, _rho(alpha, v, y, C), n_iter, converged


def _rho(alpha: numpy.ndarray, v: numpy.ndarray, y: numpy.ndarray, C: float) -> float:
    """The offset ρ of ``f(x) = Σ α_i y_i K(x_i, x) − ρ`` (libsvm's calculate_rho).

    For a free multiplier (0 < α_t < C) the KKT conditions give ρ = y_t G_t = −v_t; ρ is
    their mean. With none free, ρ is the middle of the interval the bounded ones allow.
    """
    yG = -v
    at_upper, at_lower = alpha >= C, alpha <= 0.0
    free = ~(at_upper | at_lower)
    if free.any():
        return float(yG[free].mean())
    pos = y > 0
    upper = (at_upper & ~pos) | (at_lower & pos)  # bound ρ from above
    lower = (at_upper & pos) | (at_lower & ~pos)  # bound ρ from below
    ub = yG[upper].min() if upper.any() else numpy.inf
    lb = yG[lower].max() if lower.any() else -numpy.inf
    return float((ub + lb) / 2.0)


class KernelSVM:
    """Soft-margin kernel SVM classifier (C-SVC), one-vs-one for more than two classes.

    ``KernelSVM("rbf", C=1.0).fit(X, y).predict(X_new)``. ``gamma='scale'`` is
    ``1 / (d · Var(X))`` over all entries of the training X, like scikit-learn; ``'auto'`` is
    ``1 / d``. After ``fit``: ``classes_`` (host array), ``support_`` (indices into the
    training X), ``support_vectors_`` (on ``xp``), ``n_support_`` (how many), ``gamma_``.
    """

    def __init__(
        self,
        kernel: str = "rbf",
        C: float = 1.0,
        gamma: float | str = "scale",
        degree: int = 3,
        coef0: float = 0.0,
        tol: float = 1e-3,
        max_iter: int | None = None,
    ) -> None:
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        if not C > 0:
            raise ValueError(f"C must be > 0, got {C}")
        if isinstance(gamma, str) and gamma not in ("scale", "auto"):
            raise ValueError(f"gamma must be 'scale', 'auto' or a number, got {gamma!r}")
        if not isinstance(gamma, str) and not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if int(degree) != degree or degree < 1:
            raise ValueError(f"degree must be a positive integer, got {degree}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        self.kernel = kernel
        self.C = float(C)
        self.gamma = gamma
        self.degree = int(degree)
        self.coef0 = float(coef0)
        self.tol = float(tol)
        self.max_iter = max_iter

    # ------------------------------------------------------------------ training
    def _resolve_gamma(self, X: Any) -> float:
        if self.gamma == "scale":
            var = float(X.var())
            return 1.0 / (X.shape[1] * var) if var > 0 else 1.0
        if self.gamma == "auto":
            return 1.0 / X.shape[1]
        return float(self.gamma)

    def fit(self, X: Any, y: Any) -> KernelSVM:
        """Train one SMO problem per pair of classes on (X, y); keep only the support vectors.

        Pair (a, b) of sorted classes a < b is trained with y = −1 for a and +1 for b, so
        its decision value is positive for b.
        """
        xp = array_module(X)
        X = xp.asarray(X)
        if X.dtype not in (numpy.float32, numpy.float64):
            X = X.astype(numpy.float64)
        y_host = to_numpy(y).ravel()
        if X.ndim != 2 or y_host.shape[0] != X.shape[0]:
            raise ValueError(f"X must be (n, d) and y (n,), got {X.shape} and {y_host.shape}")
        classes, y_index = numpy.unique(y_host, return_inverse=True)
        if classes.size < 2:
            raise ValueError("KernelSVM needs at least two classes")
        n = X.shape[0]
        self.classes_ = classes
        self.gamma_ = self._resolve_gamma(X)
        kern = Kernel(self.kernel, self.gamma_, self.degree, self.coef0)
        max_iter = self.max_iter if self.max_iter is not None else max(10_000_000, 100 * n)

        K_full = _host_kernel(X, kern) if n <= FULL_KERNEL_MAX else None

        pairs = [(a, b) for a in range(classes.size) for b in range(a + 1, classes.size)]
        sv_of_pair, coef_of_pair, rho, n_iter, unconverged = [], [], [], [], 0
        for a, b in pairs:
            idx = numpy.flatnonzero((y_index == a) | (y_index == b))
            ys = numpy.where(y_index[idx] == b, 1, -1)
            if K_full is not None or idx.size <= FULL_KERNEL_MAX:
                if K_full is None:
                    K = _host_kernel(X[xp.asarray(idx)], kern)
                else:
                    K = K_full if idx.size == n else K_full[numpy.ix_(idx, idx)]
                row, diag = K.__getitem__, numpy.diagonal(K).copy()
            else:  # too big to hold: rows on demand
                row, diag = _lazy_rows(X[xp.asarray(idx)], kern)
            alpha, r, it, converged = _smo(row, diag, ys, self.C, self.tol, max_iter)
            unconverged += not converged
            sv = numpy.flatnonzero(alpha > 0.0)
            sv_of_pair.append(idx[sv])
            coef_of_pair.append(alpha[sv] * ys[sv])  # α_i y_i
            rho.append(r)
            n_iter.append(it)

        if unconverged:
            warnings.warn(
                f"SMO stopped at max_iter={max_iter} before reaching tol={self.tol} "
                f"in {unconverged} of {len(pairs)} problems",
                RuntimeWarning,
                stacklevel=2,
            )

        # Keep the union of the support vectors; pair p's coefficients sit in column p.
        support = numpy.unique(numpy.concatenate(sv_of_pair))
        coef = numpy.zeros((support.size, len(pairs)))
        for p, (sv, c) in enumerate(zip(sv_of_pair, coef_of_pair, strict=True)):
            coef[numpy.searchsorted(support, sv), p] = c
        vote_a = numpy.zeros((len(pairs), classes.size))
        vote_b = numpy.zeros((len(pairs), classes.size))
        for p, (a, b) in enumerate(pairs):
            vote_a[p, a] = vote_b[p, b] = 1.0

        self.pairs_ = pairs
        self.support_ = support
        self.support_vectors_ = X[xp.asarray(support)]
        self.n_support_ = int(support.size)
        self.n_iter_ = n_iter
        self._kernel = kern
        self._coef = xp.asarray(coef, dtype=X.dtype)  # (n_sv, n_pairs): α_i y_i per pair
        self._rho = xp.asarray(numpy.asarray(rho), dtype=X.dtype)  # (n_pairs,)
        self._vote_a = xp.asarray(vote_a, dtype=X.dtype)
        self._vote_b = xp.asarray(vote_b, dtype=X.dtype)
        return self

    # ------------------------------------------------------------------ prediction
    def _pair_decisions(self, X: Any) -> Any:
        """``f_p(x) = Σ_{i ∈ SV} α_i^p y_i K(x_i, x) − ρ_p`` for every pair p: (n, n_pairs)."""
        if not hasattr(self, "_coef"):
            raise RuntimeError("KernelSVM is not fitted: call fit(X, y) first")
        xp = array_module(self.support_vectors_)
        X = xp.asarray(X, dtype=self.support_vectors_.dtype)
        return self._kernel(X, self.support_vectors_) @ self._coef - self._rho

    def decision_function(self, X: Any) -> Any:
        """Binary: ``f(x)`` of shape (n,), positive for ``classes_[1]`` (like ``SVC``).

        More classes: one column per pair of ``pairs_`` (a, b), positive for class b.
        """
        dec = self._pair_decisions(X)
        return dec[:, 0] if len(self.pairs_) == 1 else dec

    def predict(self, X: Any) -> Any:
        """The class with the most one-vs-one votes (ties to the lowest class)."""
        dec = self._pair_decisions(X)
        xp = array_module(dec)
        wins_b = (dec > 0).astype(dec.dtype)
        votes = wins_b @ self._vote_b + (1.0 - wins_b) @ self._vote_a  # (n, n_classes)
        winner = xp.argmax(votes, axis=1)
        if self.classes_.dtype.kind in "biuf":  # numeric labels stay on the device
            return xp.asarray(self.classes_)[winner]
        return self.classes_[to_numpy(winner)]
