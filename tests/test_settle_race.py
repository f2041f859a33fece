"""Two search trials of one rung ending at once on PostgreSQL: exactly one decides the rung.

Under READ COMMITTED each transaction sees the other's trial still running until it
commits, so the count of unfinished siblings must be taken under the comparison's row
lock; counted before it, both ends skipped the decision and the comparison finished with
no promotions and no final runs.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from gradq.service.status import JobStatus
from gradq.service.store import create, db, settle
from gradq.service.store.db import session_scope
from gradq.service.store.models import Job
from gradq.service.store.newjob import NewJob


def _trial(n: int) -> NewJob:
    spec = {"kind": "train", "seed": 10 + n, "_arm": "adam", "_arm_index": 0,
            "_phase": "search", "_trial": n}
    return NewJob(spec, "train", None, 10 + n, {"name": "adam"}, "cpu")


def test_two_trials_ending_together_decide_their_rung_once(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    db.upgrade(pg_url)
    parent = NewJob({"kind": "compare"}, "compare", None, 0, {}, "cpu",
                    children=[_trial(0), _trial(1)])
    parent_id, first, second = create.create_jobs(parent, dataset=None, priority=0, max_attempts=3)
    decided: list[str] = []

    def advance(s: Any, p: Job) -> list[str]:
        decided.append(p.id)
        return []

    monkeypatch.setattr(settle, "_advance", advance)

    def end(s: Any, job_id: str) -> list[str]:
        s.execute(sa.update(Job).where(Job.id == job_id)
                  .values(status=JobStatus.SUCCEEDED))
        s.flush()
        return settle.settle_parent(s, job_id)

    # Given the first trial's end, its transaction still open (holding the parent's lock)
    with session_scope() as a:
        end(a, first)
        # When the second trial ends in another transaction meanwhile
        other = threading.Thread(target=lambda: _in_session(end, second))
        other.start()
        time.sleep(1.0)  # it reaches the comparison's lock and waits there
        assert other.is_alive()
    other.join(timeout=30)
    # Then the second end, which sees the first committed, decides the rung: once
    assert not other.is_alive()
    assert decided == [parent_id]


def _in_session(fn: Any, job_id: str) -> None:
    with session_scope() as s:
        fn(s, job_id)
