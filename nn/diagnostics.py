"""The book's optimization diagnostics (Goodfellow et al., §4.3.1, §8.2.1).

- curvature gᵀHg / gᵀg along the gradient: a second-order step of size ε changes the loss
  by −ε gᵀg + ½ε² gᵀHg, so ill-conditioning shows as ½ε²gᵀHg outgrowing ε gᵀg;
- the extreme eigenvalues of the Hessian by Lanczos iteration on Hessian–vector products:
  a negative smallest eigenvalue marks a saddle point or a non-convex region.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .backend import array_module

Array = Any


def curvature(g: Array, hg: Array) -> float:
    """gᵀHg / gᵀg (0 when g = 0)."""
    gg = float((g * g).sum())
    return float((g * hg).sum()) / gg if gg > 0 else 0.0


def lanczos_extremes(matvec: Callable[[Array], Array], v0: Array, iterations: int = 30
                     ) -> tuple[float, float]:
    """(largest, smallest) eigenvalue of the symmetric operator ``matvec`` by Lanczos.

    Full reorthogonalization keeps the Krylov basis orthogonal in floating point; the
    extreme Ritz values of the tridiagonal matrix converge first.
    """
    xp = array_module(v0)
    n = v0.size
    m = min(iterations, n)
    q = v0 / xp.sqrt((v0 * v0).sum())
    basis = [q]
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(m):
        w = matvec(basis[j])
        a = float((w * basis[j]).sum())
        alphas.append(a)
        w = w - a * basis[j] - (betas[-1] * basis[j - 1] if j > 0 else 0)
        for b in basis:  # full reorthogonalization (the projections stay on the device)
            w = w - (w * b).sum() * b
        beta = float(xp.sqrt((w * w).sum()))
        if j == m - 1 or beta < 1e-10:
            break
        betas.append(beta)
        basis.append(w / beta)
    k = len(alphas)
    T = np.diag(alphas) + np.diag(betas[: k - 1], 1) + np.diag(betas[: k - 1], -1)
    ev = np.linalg.eigvalsh(T)
    return float(ev[-1]), float(ev[0])
