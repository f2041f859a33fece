"""Storing new jobs (and their dataset) in one transaction, and finding what to publish."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from gradq.service.status import JobStatus
from gradq.service.store.clock import db_now, read_now
from gradq.service.store.db import session_scope
from gradq.service.store.encoding import dumps, new_id
from gradq.service.store.models import Dataset, Job
from gradq.service.store.newjob import NewJob
from sqlalchemy.orm import Session

PARENT_KINDS = ("compare", "suite")  # no worker runs these: their children (docs/suites.md)


def store_dataset(session: Session, digest: str, data: bytes, source: str) -> None:
    """Store dataset bytes under their content hash (once)."""
    if session.get(Dataset, digest) is None:
        session.add(Dataset(hash=digest, format="npz", source=source[:512], n_bytes=len(data),
                            data=data))
        session.flush()


def create_jobs(job: NewJob, *, dataset: tuple[str, bytes, str] | None, priority: int,
                max_attempts: int, dataset_hash: str | None = None,
                url: str | None = None) -> list[str]:
    """Store a job (and its children) in one transaction; return the ids that run.

    A train job returns ``[id]``; a comparison returns ``[parent, child, …]`` and only the
    children are run by workers.
    """
    ids: list[str] = []
    with session_scope(url) as s:
        if dataset is not None:
            dataset_hash = dataset[0]
            store_dataset(s, *dataset)
        add_job(s, job, None, dataset_hash, priority, max_attempts, ids)
    return ids


def add_job(s: Session, j: NewJob, parent: str | None, digest: str | None, priority: int,
            max_attempts: int, ids: list[str], now: datetime | None = None) -> None:
    """Add ``j`` (and its children) under ``parent`` in ``s``; append the new ids.

    ``created_at`` is the database's time (read once, ``now``), a microsecond apart per job
    in the order they are added: a job's queued time (its start, on the same clock, minus
    this) does not depend on the submitting host's clock."""
    now = now if now is not None else read_now(s)
    jid = new_id()
    s.add(Job(id=jid, created_at=now + timedelta(microseconds=len(ids)), kind=j.kind,
              name=j.name, status=JobStatus.QUEUED, parent_id=parent,
              spec=dumps(j.spec), dataset_hash=digest, seed=j.seed,
              optimizer=dumps(j.optimizer), queue=j.queue, priority=priority, attempts=0,
              max_attempts=max_attempts, lease_token=0, cancel_requested=False,
              progress=dumps(j.progress)))
    s.flush()
    ids.append(jid)
    for c in j.children:
        add_job(s, c, jid, digest, priority, max_attempts, ids, now)


def mark_enqueued(job_ids: Iterable[str], url: str | None = None) -> None:
    """Record that the jobs' messages were sent just now (the sweeper reads it)."""
    ids = list(job_ids)
    if not ids:
        return
    with session_scope(url) as s:
        s.execute(sa.update(Job).where(Job.id.in_(ids)).values(enqueued_at=db_now(s)))


def runnable(job_ids: Sequence[str], url: str | None = None) -> list[tuple[str, str, int]]:
    """(id, queue, priority) of the given jobs that a worker should run (no parents)."""
    with session_scope(url) as s:
        rows = s.execute(sa.select(Job.id, Job.queue, Job.priority)
                         .where(Job.id.in_(list(job_ids)), Job.kind.not_in(PARENT_KINDS))).all()
    return [(r.id, r.queue, r.priority) for r in rows]


def queued_children(parent_id: str, url: str | None = None) -> list[str]:
    """Runs of a comparison (or of a suite's comparisons) still waiting to run (``gradq
    run`` works through them), oldest first."""
    return [job_id for job_id, _ in queued_children_phases(parent_id, url)]


def queued_children_phases(parent_id: str, url: str | None = None
                           ) -> list[tuple[str, str | None]]:
    """``queued_children`` with each one's phase (``_phase`` of its spec: tune, search,
    final, or None for a plain comparison's runs)."""
    with session_scope(url) as s:
        under = sa.select(Job.id).where(Job.parent_id == parent_id,
                                        Job.kind.in_(PARENT_KINDS)).scalar_subquery()
        rows = s.execute(sa.select(Job.id, Job.spec).where(
            sa.or_(Job.parent_id == parent_id, Job.parent_id.in_(under)),
            Job.status == JobStatus.QUEUED, Job.kind.not_in(PARENT_KINDS))
            .order_by(Job.created_at, Job.id)).all()
    return [(r.id, json.loads(r.spec).get("_phase")) for r in rows]


def delete_jobs(job_ids: Sequence[str], url: str | None = None) -> None:
    """Remove jobs that were never enqueued (a submit that could not reach the broker)."""
    with session_scope(url) as s:
        s.execute(sa.delete(Job).where(Job.parent_id.in_(list(job_ids))))
        s.execute(sa.delete(Job).where(Job.id.in_(list(job_ids))))

