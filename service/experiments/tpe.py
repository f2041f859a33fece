"""``compare.search.method: tpe``: Optuna's TPESampler, asked and told in waves.

Optuna is an extra (``pip install 'gradq[tpe]'``), imported only here and only when a tpe
search proposes trials; validation refuses ``tpe`` without it (``spec/suite.py``).

**Waves.** A searched arm proposes ``wave`` trials at once (the pool trains them side by
side, stacked where they can be), and the next wave only once every trial of this one has
ended. Each wave is proposed by a fresh in-memory study: the trials told so far are added
in trial order (their setting and validation value; a failed or diverged trial as failed),
then ``wave`` trials are asked one after another with the constant liar on, so that
trials of one wave spread out instead of piling onto one point. The sampler's seed is a
function of (the comparison's seed, the wave's number). So the trials are a function of
the seed, the wave size and the values told — never of timing or of the number of
workers — and the same spec gives the same trials (``tests/test_tpe.py``). The first wave
is TPE's start-up: random points (``n_startup_trials`` = the wave size).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_WAVE = 4
_STREAM = 0x7E5  # the sampler's own seed stream, apart from random search's


def _distribution(space: Mapping[str, Any]) -> Any:
    import optuna

    (dist, arg), = space.items()
    if dist == "loguniform":
        return optuna.distributions.FloatDistribution(float(arg[0]), float(arg[1]), log=True)
    if dist == "uniform":
        return optuna.distributions.FloatDistribution(float(arg[0]), float(arg[1]))
    if dist == "int":
        return optuna.distributions.IntDistribution(int(arg[0]), int(arg[1]))
    # a choice is asked as the index of the option (options may be lists, e.g. widths)
    return optuna.distributions.CategoricalDistribution(list(range(len(arg))))


def _to_setting(space: Mapping[str, Mapping[str, Any]], params: Mapping[str, Any]
                ) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        (dist, arg), = space[key].items()
        out[key] = arg[int(value)] if dist == "choice" else value
    return out


def _to_params(space: Mapping[str, Mapping[str, Any]], setting: Mapping[str, Any]
               ) -> dict[str, Any]:
    out = {}
    for key, value in setting.items():
        (dist, arg), = space[key].items()
        out[key] = list(arg).index(value) if dist == "choice" else value
    return out


def propose(space: Mapping[str, Mapping[str, Any]], n: int, seed: int, wave_number: int,
            told: Sequence[tuple[Mapping[str, Any], float | None]], lower_is_better: bool,
            n_startup: int) -> list[dict[str, Any]]:
    """The next ``n`` settings of a TPE search over ``space`` ({key: normalised space}),
    given the ``told`` (setting, value) pairs in trial order (value None: failed)."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {k: _distribution(space[k]) for k in sorted(space)}
    with warnings.catch_warnings():  # constant_liar is marked experimental in some versions
        warnings.simplefilter("ignore")
        sampler = optuna.samplers.TPESampler(
            seed=(int(seed) * 1_000_003 + _STREAM + 7919 * wave_number) % (2**32),
            n_startup_trials=n_startup, constant_liar=True)
        study = optuna.create_study(
            sampler=sampler, direction="minimize" if lower_is_better else "maximize")
    for setting, value in told:
        params = _to_params(space, setting)
        if value is None:
            study.add_trial(create_trial(params=params, distributions=dists,
                                         state=TrialState.FAIL))
        else:
            study.add_trial(create_trial(params=params, distributions=dists,
                                         value=float(value)))
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n):
            trial = study.ask(dists)  # left running: the constant liar sees it
            out.append(_to_setting(space, trial.params))
    return out
