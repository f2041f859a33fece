"""A cancelled job ends ``cancelled`` whoever holds it, also when its worker dies before it
reads the cancellation (docs/guarantees.md): the sweep that finds its lease lapsed ends it,
and its comparison settles. The worker is a real process, stopped then killed with -9."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _cli import invoke
from faultkit import job_row, statuses, wait_for
from gradq.service.store import db, sweeper

LEASE_S = 1.0
COMPARE = {"name": "doomed", "kind": "compare", "device": "cpu", "data": {"dataset": "iris"},
           "model": {"hidden": [8]}, "training": {"epochs": 100_000, "batch_size": 8,
                        # no log point after step 0: a cancellation is read at log points
                        "log_every": 10_000_000, "checkpoint_every": 100_000},
           "compare": {"optimizers": ["sgd", "adam"], "seeds": 2}}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        request.getfixturevalue("pg_url")
    assert invoke("db", "upgrade")[0] == 0
    return request.param


def running_children(parent: str) -> list[str]:
    import sqlalchemy as sa
    from gradq.service.store.models import Job, Metric

    with db.get_engine().connect() as c:
        return list(c.execute(
            sa.select(Job.id).where(Job.parent_id == parent, Job.status == "running",
                                    sa.exists().where(Metric.job_id == Job.id))).scalars())


def test_a_cancelled_job_whose_worker_dies_ends_cancelled_and_its_comparison_settles(
        database: str, tmp_path: Path) -> None:
    spec = tmp_path / "compare.json"
    spec.write_text(json.dumps(COMPARE))
    # Given a comparison that a real process (gradq run) is training
    victim = subprocess.Popen([sys.executable, "-m", "gradq.cli.main", "run", str(spec)],
                              env={**os.environ, "GRADQ_LEASE_S": str(LEASE_S)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        parent = wait_for(lambda: _the_comparison(), 60, "the comparison to be stored")
        held = wait_for(lambda: running_children(parent), 60, "a child to train")
        # When the comparison is cancelled and the process killed -9 before its next log
        # point, where it would have read the cancellation
        code, _, err = invoke("cancel", parent)
        assert code == 0, err
        assert all(job_row(j)["cancel_requested"] for j in held)
        victim.kill()  # SIGKILL
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)
    assert statuses(held) == {j: "running" for j in held}
    # Then, a lease later, one sweep ends every held job cancelled
    time.sleep(LEASE_S + 0.3)
    assert sweeper.sweep(LEASE_S) == []  # nothing to publish: nothing runs again
    kids = statuses(_children(parent))
    assert set(kids.values()) == {"cancelled"}, kids
    assert "lost its lease" in job_row(held[0])["error"]
    # And the comparison has settled
    assert job_row(parent)["status"] == "cancelled"
    # And a later sweep changes nothing
    time.sleep(LEASE_S + 0.3)
    assert sweeper.sweep(LEASE_S) == [] and statuses(list(kids)) == kids


def _the_comparison() -> str | None:
    import sqlalchemy as sa
    from gradq.service.store.models import Job

    with db.get_engine().connect() as c:
        return c.execute(sa.select(Job.id).where(Job.kind == "compare")).scalar()


def _children(parent: str) -> list[str]:
    import sqlalchemy as sa
    from gradq.service.store.models import Job

    with db.get_engine().connect() as c:
        return list(c.execute(sa.select(Job.id).where(Job.parent_id == parent)).scalars())
