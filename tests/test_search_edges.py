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
