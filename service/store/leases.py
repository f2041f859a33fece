"""Leases: a worker claims a queued job by compare-and-set and renews its hold.

The job row is the truth (docs: storage and queue guarantees). A claim bumps the job's
fencing token; every later write by that worker runs in a transaction that first renews
the lease with ``UPDATE jobs … WHERE id = :id AND lease_token = :token AND status =
'running'`` (``fence``). If that touches no row, the lease was lost (swept, cancelled and
finished, or claimed again) and the write is refused with ``LeaseLost``. On PostgreSQL the
UPDATE also locks the row until the transaction ends, so a sweeper cannot hand the job over
in the middle of a write.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from gradq.service.settings import get_settings
from gradq.service.status import JobStatus
from gradq.service.store.clock import db_now
from gradq.service.store.db import session_scope
from gradq.service.store.models import Checkpoint, Job
from sqlalchemy.orm import Session


class LeaseLost(RuntimeError):
    """This worker no longer holds the job: its writes are refused."""


@dataclass(frozen=True)
class Lease:
    """A worker's hold on a running job; ``token`` fences its writes."""

    job_id: str
    token: int
    worker: str
    attempt: int



def _claim_row(s: Session, job_id: str, worker: str) -> sa.Row | None:
    """queued → running by compare-and-set, bumping the fencing token. Returns the won
    row's new (lease_token, attempts, parent_id), or None if it was not there to win."""
    now = db_now(s)
    return s.execute(
        sa.update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED,
               Job.cancel_requested.is_(False))
        .values(status=JobStatus.RUNNING, lease_token=Job.lease_token + 1, worker=worker,
                heartbeat_at=now, attempts=Job.attempts + 1,
                started_at=sa.func.coalesce(Job.started_at, now))
        .returning(Job.lease_token, Job.attempts, Job.parent_id)
        .execution_options(synchronize_session=False)).first()


def claim(job_id: str, worker: str, url: str | None = None) -> Lease | None:
    """queued → running by compare-and-set; None if another worker won or it is not queued."""
    with session_scope(url) as s:
        won = _claim_row(s, job_id, worker)
        if won is None:
            return None
        if won.parent_id:
            # the comparison, and the suite above it (if any), start with their first run
            above = sa.select(Job.parent_id).where(Job.id == won.parent_id).scalar_subquery()
            s.execute(sa.update(Job).where(sa.or_(Job.id == won.parent_id, Job.id == above),
                                           Job.status == JobStatus.QUEUED)
                      .values(status=JobStatus.RUNNING, started_at=db_now(s))
                      .execution_options(synchronize_session=False))
        return Lease(job_id, won.lease_token, worker, won.attempts)


def claim_siblings(parent_id: str, worker: str, match: Callable[[dict[str, Any]], bool],
                   limit: int, url: str | None = None) -> list[Lease]:
    """Claim up to ``limit`` queued children of ``parent_id`` whose spec ``match`` accepts.

    For batched replicas (``workers.replicas``): a worker that runs one child of a
    comparison takes siblings that can train beside it. Each claim is the same
    compare-and-set as ``claim``, so each sibling gets its own lease and fencing token and
    one that another worker won in the meantime is simply skipped. A child with a
    checkpoint is left alone: it resumes on its own.
    """
    if limit <= 0:
        return []
    leases: list[Lease] = []
    with session_scope(url) as s:
        has_checkpoint = sa.exists().where(Checkpoint.job_id == Job.id)
        rows = s.execute(sa.select(Job.id, Job.spec)
                         .where(Job.parent_id == parent_id, Job.status == JobStatus.QUEUED,
                                Job.kind == "train", Job.cancel_requested.is_(False),
                                ~has_checkpoint)
                         .order_by(Job.created_at, Job.id)).all()
        for row in rows:
            if len(leases) >= limit:
                break
            if not match(json.loads(row.spec)):
                continue
            won = _claim_row(s, row.id, worker)
            if won is not None:
                leases.append(Lease(row.id, won.lease_token, worker, won.attempts))
    return leases


def _bound_idle_lock(session: Session) -> None:
    """On PostgreSQL, let the server end this transaction's session if it idles for a
    lease (once per transaction).

    The fencing UPDATE holds the job's row lock until commit. A worker frozen in between
    (SIGSTOP, a paused VM) would hold it forever, and the sweeper's hand-over UPDATE — and
    with it every later sweep — would wait on it. Ended by the server, the frozen writes roll
    back, the job is handed over, and the woken worker finds its lease lost.
    """
    if session.info.get("gradq_idle_bound") or session.get_bind().dialect.name != "postgresql":
        return
    ms = max(1000, int(get_settings().lease_s * 1000))
    session.execute(sa.text(f"SET LOCAL idle_in_transaction_session_timeout = {ms}"))
    session.info["gradq_idle_bound"] = True


def fence(session: Session, lease: Lease) -> bool:
    """Renew the lease inside ``session``'s transaction; return whether cancel was requested.

    Raises ``LeaseLost`` if the job is no longer running under this token.
    """
    held = fence_many(session, [lease])
    if lease.job_id not in held:
        raise LeaseLost(f"job {lease.job_id}: lease {lease.token} is no longer held")
    return held[lease.job_id]


def renew(lease: Lease, url: str | None = None) -> bool:
    """Heartbeat; returns whether cancellation was requested. Raises ``LeaseLost``."""
    with session_scope(url) as s:
        return fence(s, lease)


def set_device(lease: Lease, device: str, url: str | None = None) -> None:
    """Record the device the job trains on (fenced). Raises ``LeaseLost``."""
    with session_scope(url) as s:
        fence(s, lease)
        s.execute(sa.update(Job).where(Job.id == lease.job_id).values(device=device)
                  .execution_options(synchronize_session=False))


def fence_many(session: Session, leases: Sequence[Lease]) -> dict[str, bool]:
    """``fence`` for several leases in one statement: {job id: cancel flag} of those held."""
    if not leases:
        return {}
    _bound_idle_lock(session)
    rows = session.execute(
        sa.update(Job)
        .where(sa.tuple_(Job.id, Job.lease_token).in_([(x.job_id, x.token) for x in leases]),
               Job.status == JobStatus.RUNNING)
        .values(heartbeat_at=db_now(session))
        .returning(Job.id, Job.cancel_requested)
        .execution_options(synchronize_session=False)).all()
    return {r.id: bool(r.cancel_requested) for r in rows}

