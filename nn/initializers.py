"""Weight initializers (Goodfellow et al., §8.4), drawn on the host from a seeded generator.

Drawing on the host with NumPy makes the initial parameters of a seed identical on every
device and backend, which the paired design of a comparison relies on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def glorot_uniform(fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """W ~ U(−√(6/(m+n)), √(6/(m+n))) — the normalized initialization (Glorot & Bengio 2010)."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def glorot_normal(fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """W ~ N(0, 2/(m+n))."""
    return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), size=(fan_in, fan_out))


def he_normal(fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """W ~ N(0, 2/m), for rectified units (He et al. 2015)."""
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out))


def zeros(fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """W = 0 (convex models only: hidden units would stay identical)."""
    return np.zeros((fan_in, fan_out))


def orthonormal(fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """A random matrix with orthonormal rows or columns (Saxe et al. 2013), LSUV's start."""
    a = rng.normal(size=(max(fan_in, fan_out), min(fan_in, fan_out)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))  # a uniform (Haar) draw, not biased by the QR's sign convention
    return q if fan_in >= fan_out else q.T


INITIALIZERS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_normal": he_normal,
    "zeros": zeros,
    # lsuv starts from orthonormal weights and then rescales each layer on a batch of data;
    # the data-dependent part lives in network.Network.lsuv.
    "lsuv": orthonormal,
}
