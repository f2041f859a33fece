"""Edges of a search found in review: a running search's pending trials, the pruner beside
an early stop, stacks that mix rung ends, a grid of compare.arms without validation."""

from __future__ import annotations

from typing import Any

import pytest
from gradq.service.experiments.report import _search_doc
from gradq.service.spec import SpecError, validate
from gradq.train.replicas import batch_key
from test_search import search_spec


def test_trials_still_to_report_are_pending_not_failed() -> None:
    # Given the first rung of a 4-trial search: trial 3 failed, 0–2 not reported yet
    entry = {"trials": 4, "values": [None, None, None, None], "alive": [0, 1, 2],
             "done": False, "pruned": 0}
    doc = _search_doc(entry, low=True)
    # Then only the failure counts as one, and no expected best is made of pending trials
    assert (doc["failed"], doc["pending"]) == (1, 3)
    assert len(doc["expected_best"]) == 1
    # And once the search is decided, every value is a trial's own
    done = _search_doc({**entry, "values": [0.3, 0.2, None, None], "alive": [1],
                        "done": True}, low=True)
    assert done["failed"] == 2 and "pending" not in done
    assert done["expected_best"][-1] == pytest.approx(0.2)


@pytest.mark.parametrize("stop", [
    {"regularization": {"early_stopping": {"metric": "val_loss", "patience": 2}}},
    {"training": {"epochs": 9, "batch_size": 16, "time_limit_s": 60}},
])
def test_successive_halving_refuses_an_early_stop(stop: dict[str, Any]) -> None:
    spec = {**search_spec(), **stop}
    with pytest.raises(SpecError, match="compare.search.pruner"):
        validate(spec)


def test_a_rung_end_checkpoint_never_stacks_with_a_run_that_needs_none() -> None:
    spec = validate({"kind": "train", "data": {"dataset": "iris"}, "model": {"hidden": [8]}})
    trial = {**spec, "_phase": "search", "_trial": 0, "_checkpoint_end": True}
    final = {**spec, "_phase": "final", "seed": 3}
    assert batch_key(final) == batch_key({**spec, "_phase": "search", "_trial": 1})
    assert batch_key(trial) != batch_key(final)


def test_a_grid_of_an_arm_needs_validation_samples() -> None:
    arms = [{"label": "none"}, {"label": "l2", "regularization.l2": [1e-4, 1e-2]}]
    spec = search_spec(pruner=False, arms=arms)
    spec["compare"].pop("search")
    spec["data"]["validation"] = 0.0
    with pytest.raises(SpecError, match=r"compare.arms\[1\]"):
        validate(spec)


# ------------------------------------------------ issue 19: epochs searched, tune seeds
def test_searching_the_epochs_under_successive_halving_is_refused(tmp_path) -> None:
    from _cli import invoke, write_spec

    arms = [{"label": "long", "optimizer.name": "adam",
             "training.epochs": {"int": [4, 20]}}]
    path = write_spec(tmp_path, search_spec(arms=arms))
    code, out, err = invoke("submit", path)
    [line] = err.strip().splitlines()
    assert code == 2 and out == ""
    assert "compare.arms[0]" in line and "training.epochs" in line and "halving" in line
    assert invoke("ls", "--json")[1].strip() == "[]"  # nothing stored
    # without the pruner the epochs may be searched
    validate(search_spec(arms=arms, pruner=False))


def test_under_halving_every_trial_is_ranked_on_the_mean_over_every_tuning_seed() -> None:
    from gradq.service.experiments.compare import Kid, advance, expand

    spec = search_spec(trials=3, epochs=3)
    spec["compare"]["tune_seeds"] = 2
    spec["compare"]["optimizers"] = spec["compare"]["optimizers"][:1]
    job = expand(validate(spec))
    tune = job.progress["seeds"]["tune"]
    trials = [c.spec for c in job.children if c.spec["_phase"] == "search"]
    # Given: every trial runs on both tuning seeds, the first rung's epochs
    assert sorted((t["_trial"], t["seed"]) for t in trials) == [
        (i, s) for i in range(3) for s in tune]
    assert {t["training"]["epochs"] for t in trials} == {1}
    # When trial 0 is best on the first seed alone but trial 1 is best on the mean
    val = {(0, tune[0]): 0.10, (0, tune[1]): 0.90, (1, tune[0]): 0.30,
           (1, tune[1]): 0.30, (2, tune[0]): 0.50, (2, tune[1]): 0.60}
    kids = [Kid(f"t{t['_trial']}s{t['seed']}", t, "succeeded",
                {"val_loss": val[t["_trial"], t["seed"]], "epochs": 1},
                {"run_s": 1.0, "samples_per_s": 90.0}) for t in trials]
    step = advance(job.spec, kids, job.progress)
    # Then trial 1 goes on, on both seeds; the others are pruned on both
    assert step.promote == {f"t1s{s}": 3 for s in tune}
    st = step.progress["search"][trials[0]["_arm"]]
    assert st["values"] == pytest.approx([0.5, 0.3, 0.55])
    assert st["epochs"] == [2, 2, 2] and st["budget"]["samples"] == 6 * 90
    assert sorted(step.drop_checkpoints) == sorted(f"t{i}s{s}" for i in (0, 2) for s in tune)
    # And a trial that diverged on one seed is not ranked on the other alone
    kids[-1] = Kid(kids[-1].id, kids[-1].spec, "diverged")
    assert advance(job.spec, kids, job.progress).progress["search"][
        trials[0]["_arm"]]["values"][2] is None
