"""What a user does to stored jobs: cancel and retry (each settles the comparison, and a
suite's comparisons the suite)."""

from __future__ import annotations

import json

import sqlalchemy as sa
from gradq.service.errors import InvalidTransition, JobNotFound
from gradq.service.status import FINISHED, RETRYABLE, JobStatus
from gradq.service.store.clock import db_now
from gradq.service.store.db import session_scope
from gradq.service.store.models import Job
from gradq.service.store.settle import settle, settle_suite
from sqlalchemy.orm import Session


def cancel(job_id: str, url: str | None = None) -> list[str]:
    """Cancel a job (and a comparison's children): queued ones at once, running ones at
    their next log interval. Returns the ids affected."""
    with session_scope(url) as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        if JobStatus(job.status) in FINISHED:
            raise InvalidTransition(f"job {job_id} is already {JobStatus(job.status).value}")
        ids = [job_id, *s.execute(sa.select(Job.id).where(Job.parent_id == job_id)).scalars()]
        comparisons = [job_id] if job.kind == "compare" and len(ids) > 1 else []
        if job.kind == "suite":  # its comparisons and their runs
            comparisons = ids[1:]
            ids += list(s.execute(sa.select(Job.id).where(Job.parent_id.in_(comparisons)))
                        .scalars())
        now = db_now(s)
        s.execute(sa.update(Job).where(Job.id.in_(ids), Job.status == JobStatus.QUEUED)
                  .values(status=JobStatus.CANCELLED, finished_at=now, cancel_requested=True,
                          error="cancelled by the user")
                  .execution_options(synchronize_session=False))
        s.execute(sa.update(Job).where(Job.id.in_(ids), Job.status == JobStatus.RUNNING)
                  .values(cancel_requested=True).execution_options(synchronize_session=False))
        s.flush()
        if job.parent_id:
            settle(s, job.parent_id)
        for cid in comparisons:
            settle(s, cid)  # a suite's comparisons settle the suite with the last
        if job.kind == "suite":
            settle_suite(s, job_id)
        return ids


def retry(job_id: str, url: str | None = None) -> list[tuple[str, str, int]]:
    """Queue a failed, diverged or cancelled job again (a comparison: its unfinished
    children; a suite: its unfinished comparisons'). Returns (id, queue, priority) to
    publish."""
    with session_scope(url) as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        again = JobStatus(job.status) in RETRYABLE
        if job.kind == "suite" and JobStatus(job.status) is JobStatus.SUCCEEDED:
            # a suite succeeds with a workload failed (docs/suites.md): that workload may be retried
            again = s.execute(sa.select(Job.id).where(
                Job.parent_id == job_id, Job.status.in_(RETRYABLE))).first() is not None
        if not again:
            raise InvalidTransition(
                f"job {job_id} is {JobStatus(job.status).value}; only failed, diverged or "
                "cancelled jobs can be retried")
        if job.kind != "suite":
            return _retry(s, job)
        todo: list[tuple[str, str, int]] = []
        for child in s.execute(sa.select(Job).where(Job.parent_id == job_id,
                                                    Job.status.in_(RETRYABLE))
                               .order_by(Job.created_at, Job.id)).scalars():
            todo += _retry(s, child)
        s.execute(sa.update(Job).where(Job.id == job_id)
                  .values(status=JobStatus.RUNNING, finished_at=None, error=None,
                          cancel_requested=False)
                  .execution_options(synchronize_session=False))
        s.flush()
        settle_suite(s, job_id)  # nothing left to run: it ends again at once
        return todo


def _retry(s: Session, job: Job) -> list[tuple[str, str, int]]:
    """``retry`` of one train job or comparison inside ``s``."""
    again = RETRYABLE
    job_id = job.id
    if job.kind == "compare":
        # a search trial whose part is over (pruned, or its arm decided) stays as it is
        from gradq.service.experiments.compare import settled_trial

        progress = json.loads(job.progress or "{}")
        todo = [(r.id, r.queue, r.priority) for r in s.execute(
            sa.select(Job.id, Job.queue, Job.priority, Job.spec)
            .where(Job.parent_id == job_id, Job.status.in_(again)))
            if not settled_trial(json.loads(r.spec), progress)]
    else:
        todo = [(job.id, job.queue, job.priority)]
    ids = [t[0] for t in todo]
    reset = {"status": JobStatus.QUEUED, "attempts": 0, "error": None, "traceback": None,
             "cancel_requested": False, "finished_at": None, "worker": None,
             "enqueued_at": db_now(s)}
    s.execute(sa.update(Job).where(Job.id.in_(ids)).values(**reset)
              .execution_options(synchronize_session=False))
    if job.kind == "compare" or job.parent_id:
        pid = job_id if job.kind == "compare" else job.parent_id
        above = sa.select(Job.parent_id).where(Job.id == pid).scalar_subquery()
        s.execute(sa.update(Job).where(sa.or_(Job.id == pid, Job.id == above))  # (a suite)
                  .values(status=JobStatus.RUNNING, finished_at=None, error=None,
                          cancel_requested=False)
                  .execution_options(synchronize_session=False))
        s.flush()
        # a rung (or grid) whose last run ended while the comparison was cancelled is
        # decided now; with nothing left to run, the comparison ends again at once
        more = settle(s, pid)
        if more:
            todo += [(r.id, r.queue, r.priority) for r in s.execute(
                sa.select(Job.id, Job.queue, Job.priority).where(Job.id.in_(more)))]
    return todo
