"""What a user does to stored jobs: cancel and retry (each settles the comparison)."""

from __future__ import annotations

import json

import sqlalchemy as sa
from gradq.service.errors import InvalidTransition, JobNotFound
from gradq.service.status import FINISHED, RETRYABLE, JobStatus
from gradq.service.store.db import session_scope
from gradq.service.store.models import Job, utcnow
from gradq.service.store.settle import settle


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
        now = utcnow()
        s.execute(sa.update(Job).where(Job.id.in_(ids), Job.status == JobStatus.QUEUED)
                  .values(status=JobStatus.CANCELLED, finished_at=now, cancel_requested=True,
                          error="cancelled by the user")
                  .execution_options(synchronize_session=False))
        s.execute(sa.update(Job).where(Job.id.in_(ids), Job.status == JobStatus.RUNNING)
                  .values(cancel_requested=True).execution_options(synchronize_session=False))
        s.flush()
        if job.parent_id:
            settle(s, job.parent_id)
        if job.kind == "compare" and len(ids) > 1:  # ids[1:] are its children
            settle(s, job_id)
        return ids


def retry(job_id: str, url: str | None = None) -> list[tuple[str, str, int]]:
    """Queue a failed, diverged or cancelled job again (a comparison: its unfinished
    children). Returns (id, queue, priority) to publish."""
    again = RETRYABLE
    with session_scope(url) as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        if JobStatus(job.status) not in again:
            raise InvalidTransition(
                f"job {job_id} is {JobStatus(job.status).value}; only failed, diverged or "
                "cancelled jobs can be retried")
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
                 "enqueued_at": utcnow()}
        s.execute(sa.update(Job).where(Job.id.in_(ids)).values(**reset)
                  .execution_options(synchronize_session=False))
        if job.kind == "compare" or job.parent_id:
            pid = job_id if job.kind == "compare" else job.parent_id
            s.execute(sa.update(Job).where(Job.id == pid)
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

