"""One clock (docs/guarantees.md): a job's lease is written and judged on PostgreSQL's
``now()``, so a worker or sweeper host whose clock is five minutes off changes nothing.

Each worker and sweeper here is a real process run under ``faketime`` (only its realtime
clock moves: ``FAKETIME_DONT_FAKE_MONOTONIC=1``). Before the database clock, a worker five
minutes behind had every healthy job handed over at the next sweep, and one five minutes
ahead kept a dead worker's job for five minutes more. SQLite is embedded: its clock is the
process's own, and it serves one host, so only PostgreSQL is tried.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from gradq.service.store import create, db, leases
from gradq.service.store.clock import read_now
from gradq.service.store.db import session_scope
from gradq.service.store.models import Job
from gradq.service.store.newjob import NewJob

LEASE_S = 3.0

_CLAIM = """
import json, sys
from gradq.service.store import leases
lease = leases.claim(sys.argv[1], "w@skewed")
for _ in range(3):
    leases.renew(lease)
print(json.dumps({"token": lease.token}))
"""

_SWEEP = """
import json, sys
from gradq.service.store import sweeper
print(json.dumps(sweeper.sweep(float(sys.argv[1]), republish_after_s=3600)))
"""


@pytest.fixture
def faketime() -> str:
    path = shutil.which("faketime")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("faketime is missing, and CI=true requires it")
        pytest.skip("faketime is missing (apt-get install faketime)")
    return path


def _run(faketime: str, offset: str, url: str, script: str, *args: str) -> object:
    env = {**os.environ, "GRADQ_DATABASE_URL": url, "GRADQ_LEASE_S": str(LEASE_S),
           "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    cmd = [sys.executable, "-c", script, *args]
    if offset:
        cmd = [faketime, "-f", offset, *cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _job(url: str) -> str:
    job = NewJob({"kind": "train", "seed": 0}, "train", "t", 0, {"name": "sgd"}, "cpu")
    return create.create_jobs(job, dataset=None, priority=0, max_attempts=3, url=url)[0]


def _row(url: str, job_id: str) -> tuple[str, int, int]:
    with session_scope(url) as s:
        job = s.get(Job, job_id)
        return str(job.status.value if hasattr(job.status, "value") else job.status), \
            job.attempts, job.lease_token


@pytest.mark.parametrize("worker, sweeper", [("-5m", ""), ("+5m", ""), ("", "+5m"),
                                             ("", "-5m")])
def test_a_skewed_host_neither_loses_a_live_lease_nor_keeps_a_dead_one(
        pg_url: str, faketime: str, worker: str, sweeper: str) -> None:
    db.upgrade(pg_url)
    job_id = _job(pg_url)
    # Given a worker that claimed the job and renewed its lease just now
    token = _run(faketime, worker, pg_url, _CLAIM, job_id)["token"]  # type: ignore[index]
    assert _row(pg_url, job_id) == ("running", 1, token)
    # When a sweeper runs at once: the lease is live, whatever either host's clock says
    assert _run(faketime, sweeper, pg_url, _SWEEP, str(LEASE_S)) == []
    assert _row(pg_url, job_id) == ("running", 1, token)
    # and the worker is gone: one lease later the job is handed over, not five minutes later
    time.sleep(LEASE_S + 0.5)
    handed = _run(faketime, sweeper, pg_url, _SWEEP, str(LEASE_S))
    assert [h[0] for h in handed] == [job_id]  # type: ignore[union-attr]
    assert _row(pg_url, job_id) == ("queued", 1, token + 1)
    # and the old holder can write nothing
    with pytest.raises(leases.LeaseLost):
        leases.renew(leases.Lease(job_id, token, "w@skewed", 1), url=pg_url)


_CREATE = """
import json
from gradq.service.store import create
from gradq.service.store.newjob import NewJob
kids = [NewJob({"kind": "train", "seed": i}, "train", "t", i, {"name": "sgd"}, "cpu")
        for i in range(3)]
job = NewJob({"kind": "compare", "seed": 0}, "compare", "t", 0, {"name": "sgd"}, "cpu", kids)
print(json.dumps(create.create_jobs(job, dataset=None, priority=0, max_attempts=3)))
"""


@pytest.mark.parametrize("submitter", ["+5m", "-5m"])
def test_a_skewed_submitter_stamps_jobs_with_the_database_time(
        pg_url: str, faketime: str, submitter: str) -> None:
    """A job's queued time (its start minus its creation) is measured on one clock: a
    laptop five minutes off that submits it does not make it negative or five minutes long;
    its children keep the order they were added in."""
    db.upgrade(pg_url)
    ids = _run(faketime, submitter, pg_url, _CREATE)
    with session_scope(pg_url) as s:
        now = read_now(s)
        created = [s.get(Job, i).created_at for i in ids]  # type: ignore[union-attr]
    assert all(abs((now - c).total_seconds()) < 30 for c in created), (now, created)
    assert created == sorted(created) and len(set(created)) == len(created)
    lease = leases.claim(ids[1], "w", url=pg_url)
    assert lease is not None
    with session_scope(pg_url) as s:
        job = s.get(Job, ids[1])
        queued_s = (job.started_at - job.created_at).total_seconds()
    assert 0 <= queued_s < 30
