"""When a job's checkpoint is no longer needed (issue 13): the one rule, in one place.

A checkpoint exists so that a job can resume: after its worker is lost, or when a failed or
cancelled job is retried. A job that succeeded never resumes, so its checkpoint is dropped
in the same transaction that records its success (unless ``GRADQ_KEEP_CHECKPOINTS=1``).
One exception: a search trial (``_phase: "search"``) that succeeded a rung may be promoted
to the next rung and resume from it, so it keeps its checkpoint until its comparison is
finished; when the comparison settles, its trials' checkpoints go. ``gradq gc`` drops the
checkpoints of every other finished job too (failed, diverged, cancelled).

Imports nothing but the models and settings, so that ``jobs`` (which applies the rule when
a job or a comparison ends) and ``retention`` (``gc``) can both use it.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from gradq.service.settings import get_settings
from gradq.service.status import FINISHED, JobStatus
from gradq.service.store.models import Checkpoint, Job
from sqlalchemy.orm import Session


def checkpoint_needed(status: JobStatus | str, spec: dict[str, Any],
                      parent_status: JobStatus | str | None) -> bool:
    """Whether a job may still resume from its checkpoint.

    True while the job is not finished (queued, running: a lost worker's job resumes from
    it), and for a finished search trial whose comparison has not succeeded (it waits at a
    rung and may be promoted, also after ``gradq retry`` of a cancelled or failed search).
    False otherwise.
    """
    if JobStatus(status) not in FINISHED:
        return True
    waiting_at_rung = spec.get("_phase") == "search"
    return waiting_at_rung and parent_status is not None and (
        JobStatus(parent_status) is not JobStatus.SUCCEEDED)


def drop_after_success(session: Session, job_id: str) -> int:
    """Inside a transaction that has just marked ``job_id`` succeeded: delete its
    checkpoints unless the rule (or ``GRADQ_KEEP_CHECKPOINTS``) keeps them. Returns the
    number deleted."""
    if get_settings().keep_checkpoints:
        return 0
    row = session.execute(sa.select(Job.status, Job.spec, Job.parent_id)
                          .where(Job.id == job_id)).first()
    if row is None or JobStatus(row.status) is not JobStatus.SUCCEEDED:
        return 0
    parent_status = None
    if row.parent_id is not None:
        parent_status = session.execute(sa.select(Job.status)
                                        .where(Job.id == row.parent_id)).scalar()
    if checkpoint_needed(row.status, json.loads(row.spec), parent_status):
        return 0
    return session.execute(sa.delete(Checkpoint).where(Checkpoint.job_id == job_id)
                           ).rowcount or 0


def drop_after_settling(session: Session, parent_id: str) -> int:
    """Inside the transaction that has just finished comparison ``parent_id`` as succeeded:
    delete the checkpoints of its succeeded children (the search trials that waited at a rung).
    Returns the number deleted."""
    if get_settings().keep_checkpoints:
        return 0
    done = sa.select(Job.id).where(Job.parent_id == parent_id,
                                   Job.status == JobStatus.SUCCEEDED)
    return session.execute(sa.delete(Checkpoint).where(Checkpoint.job_id.in_(done))
                           ).rowcount or 0
