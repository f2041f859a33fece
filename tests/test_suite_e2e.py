"""A suite through the queue: PostgreSQL, Redis and two ``gradq worker --cpu`` processes
(``test_compare_e2e``'s pool). Skips without the services on a laptop; fails under CI."""

from __future__ import annotations

from pathlib import Path

import pytest
from _cli import cli_json, write_spec
from test_compare_e2e import (  # noqa: F401 - the pool fixture, used by name
    Pool,
    assert_ran_once_on_a_worker,
    pool,
    wait_finished,
)

pytestmark = pytest.mark.services

SUITE = {"kind": "suite", "name": "e2e-suite", "seed": 0,
         "suite": {"workloads": [
             {"name": "iris", "metric": "val_loss", "target": 0.8,
              "spec": {"data": {"dataset": "iris"}, "model": {"hidden": [4]},
                       "training": {"epochs": 3, "batch_size": 16}}},
             {"name": "moons", "metric": "val_accuracy", "target": "auto",
              "reference": ["adam"],
              "spec": {"data": {"dataset": "moons"}, "model": {"hidden": [4]},
                       "training": {"epochs": 3, "batch_size": 64}}}],
             "optimizers": [{"name": "sgd", "lr": {"loguniform": [0.01, 1.0]}},
                            {"name": "adam", "lr": {"loguniform": [0.001, 0.1]}}],
             "search": {"method": "tpe", "trials": 4, "wave": 2}, "seeds": 2}}


def test_a_suite_with_tpe_runs_across_two_workers(
        pool: Pool, tmp_path: Path) -> None:  # noqa: F811 - the fixture above
    pytest.importorskip("optuna")
    # Given a suite of two workloads (one with target: auto), searched by tpe in waves
    sub = cli_json("submit", str(write_spec(tmp_path, SUITE)))
    suite = sub["id"]
    # When the workers are done with it
    doc = wait_finished(suite, pool, timeout_s=240)
    # Then it succeeded: 3 comparisons, each run once on a worker
    assert doc["status"] == "succeeded", doc
    assert doc["progress"]["comparisons"]["succeeded"] == 3
    comps = cli_json("ls", "--parent", suite)
    runs = [r for c in comps for r in cli_json("ls", "--parent", c["id"], "--limit", "100")]
    # per workload: 2 arms × (4 tpe trials + 2 seeds); the reference: adam on 2 seeds
    assert len(runs) == 2 * 2 * (4 + 2) + 2
    assert_ran_once_on_a_worker([cli_json("results", r["id"]) for r in runs])
    rep = cli_json("report", suite)
    assert rep["scored"] == ["iris", "moons"] and rep["failed"] == []
    assert rep["workloads"][1]["target_set_by"] == "reference"
    assert rep["workloads"][1]["target"] is not None
    assert rep["win_probability"]["k"] == [1, 2, 3, 4]
    for w in rep["workloads"]:
        cmp = cli_json("report", w["comparison"])
        for arm in cmp["arms"]:
            assert arm["search"]["method"] == "tpe" and arm["search"]["trials"] == 4
            assert "pending" not in arm["search"] and arm["n"] == 2
