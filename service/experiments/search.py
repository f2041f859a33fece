"""Search spaces sampled into trials, and successive halving's rungs and decisions.

Pure functions, no database: ``compare`` plans the trials and decides each rung, and
``service.store.settle`` applies the decisions under the comparison's row lock.

**Sampling.** Every arm gets the same number of trials, drawn from the comparison's seed:
the same spec gives the same trials. An arm's space of d keys (sorted by name) is sampled
as points u of the unit cube [0, 1)^d, then mapped key by key through the inverse of each
distribution's CDF. ``random`` draws u from NumPy's ``Generator`` seeded by (seed, d);
``qmc`` takes the first ``trials`` points of a scrambled Sobol sequence
(``scipy.stats.qmc.Sobol``) seeded likewise. Arms whose spaces have the same number of
keys so see the same u: trial i of ``sgd`` and trial i of ``adam`` sit at the same quantile
of their learning-rate ranges (common random numbers, which pairs the trials too).

**Successive halving** (Jamieson & Talwalkar 2016; Li et al.'s ASHA without its
asynchrony). Rungs are at ``min_epochs·eta^k`` epochs for every k where that is below
``training.epochs``, and the last rung is ``training.epochs``. Every trial of an arm
trains to the first rung; when all of them have reported (finished: succeeded, failed or
diverged), the top ``max(1, ⌊n/eta⌋)`` of the n by the validation metric go on to the
next rung and the others are pruned. Failed or diverged trials rank last and never go on;
ties go to the lower trial index. Because a rung is decided only once all its trials
have reported, the decisions depend on the values alone, never on timing, faults or the
number of workers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

_STREAM = 0x5EA2C4  # the search's own random stream, apart from splits, inits, minibatches


def unit_points(d: int, trials: int, method: str, seed: int) -> np.ndarray:
    """(trials, d) points of [0, 1)^d, a function of (method, seed, d, trials) alone."""
    if method == "random":
        return np.random.default_rng([seed, _STREAM, d]).random((trials, d))
    if method == "qmc":
        from scipy.stats import qmc

        sobol = qmc.Sobol(d, scramble=True, seed=np.random.default_rng([seed, _STREAM, d]))
        with warnings.catch_warnings():  # balance properties want 2^m points; any n works
            warnings.simplefilter("ignore", UserWarning)
            return sobol.random(trials)
    raise ValueError(f"unknown search method {method!r}")


def value_at(space: Mapping[str, Any], u: float) -> Any:
    """The value of a normalised space at quantile ``u`` in [0, 1)."""
    (dist, arg), = space.items()
    if dist == "loguniform":
        lo, hi = math.log(arg[0]), math.log(arg[1])
        return float(min(arg[1], max(arg[0], math.exp(lo + u * (hi - lo)))))
    if dist == "uniform":
        return float(min(arg[1], max(arg[0], arg[0] + u * (arg[1] - arg[0]))))
    if dist == "int":
        return int(min(arg[1], arg[0] + math.floor(u * (arg[1] - arg[0] + 1))))
    if dist == "choice":
        return arg[min(len(arg) - 1, math.floor(u * len(arg)))]
    raise ValueError(f"unknown distribution {dist!r}")


def sample(space: Mapping[str, Mapping[str, Any]], trials: int, method: str, seed: int
           ) -> list[dict[str, Any]]:
    """``trials`` settings {key: value} drawn from ``space`` ({key: normalised space})."""
    keys = sorted(space)
    u = unit_points(len(keys), trials, method, seed)
    return [{k: value_at(space[k], float(u[t, j])) for j, k in enumerate(keys)}
            for t in range(trials)]


def rungs(epochs: int, eta: int, min_epochs: int) -> list[int]:
    """The epoch budgets at which successive halving decides: ``min_epochs·eta^k`` below
    ``epochs``, then ``epochs`` itself."""
    out, r = [], min_epochs
    while r < epochs:
        out.append(r)
        r *= eta
    return [*out, epochs]


def promote(values: Mapping[int, float | None], eta: int, lower_is_better: bool) -> list[int]:
    """The trials that go on from a rung: the top ``max(1, ⌊n/eta⌋)`` of the n reported,
    finite values only, ties to the lower trial index. Sorted by trial index."""
    finite = [(v if lower_is_better else -v, t) for t, v in values.items()
              if v is not None and math.isfinite(v)]
    keep = max(1, len(values) // eta)
    return sorted(t for _, t in sorted(finite)[:keep])


def best(values: Mapping[int, float | None], lower_is_better: bool) -> int | None:
    """The trial with the best finite value (ties to the lower index), or None."""
    top = promote(values, len(values) + 1, lower_is_better)
    return top[0] if top else None


def space_label(space: Mapping[str, Any]) -> str:
    """``loguniform[0.0001, 1]``: a space as an arm's label shows it."""
    (dist, arg), = space.items()
    return f"{dist}[{', '.join(f'{x:g}' if isinstance(x, float) else str(x) for x in arg)}]"
