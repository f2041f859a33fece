"""The sweeper's queries: hand over jobs whose lease lapsed, find messages that may be lost,
and end database sessions frozen inside a transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from gradq.service.failure_policy import Action, Failure, decide
from gradq.service.status import LIVE, JobStatus
from gradq.service.store.clock import read_now
from gradq.service.store.create import PARENT_KINDS
from gradq.service.store.db import session_scope
from gradq.service.store.models import Job
from gradq.service.store.settle import settle_parent

_LIVE_SQL = "(" + ", ".join(f"'{st.value}'" for st in LIVE) + ")"


def sweep(lease_s: float, republish_after_s: float | None = None, url: str | None = None,
          queue_is_empty: Callable[[str], bool] | None = None) -> list[tuple[str, str, int]]:
    """Hand over jobs whose lease lapsed and find queued jobs whose message may be lost.

    A running job not renewed for ``lease_s`` goes back to ``queued`` (its token is bumped
    so the old holder can write nothing), or to ``failed`` when its attempts are used up,
    or to ``cancelled`` when its cancellation was requested (its worker died before it read
    it; a queued job with cancellation requested, left by an older gradq, ends so too).
    A queued job waiting longer than ``republish_after_s`` (default 2·lease) is published
    again only where ``queue_is_empty(queue)`` says its broker queue holds nothing: a
    backlog that is merely long is not flooded with duplicates, and a message lost with a
    restarted broker is found once the queue drains. Returns (id, queue, priority) of every
    job to publish; a duplicate message is harmless, since only one claim can win.
    """
    out: list[tuple[str, str, int]] = []
    with session_scope(url) as s:
        now = read_now(s)  # the database's clock, never this host's (store/clock.py)
        stale = now - timedelta(seconds=lease_s)
        republish = now - timedelta(seconds=republish_after_s if republish_after_s is not None
                                    else 2 * lease_s)
        if s.get_bind().dialect.name == "postgresql":
            # never wait long on a row lock: its holder may be frozen (end_frozen_writers)
            ms = max(1000, int(lease_s * 1000))
            s.execute(sa.text(f"SET LOCAL lock_timeout = {ms}"))
        # rows locked by a writer in mid-transaction are skipped (the next sweep sees them)
        lapsed = s.execute(sa.select(Job.id, Job.queue, Job.priority, Job.attempts,
                                     Job.max_attempts, Job.worker, Job.cancel_requested)
                           .where(Job.status == JobStatus.RUNNING,
                                  Job.kind.not_in(PARENT_KINDS),
                                  Job.heartbeat_at < stale)
                           .with_for_update(skip_locked=True, key_share=True)).all()
        for r in lapsed:
            decision = decide(Failure.LAPSED, f"worker {r.worker} lost its lease (no heartbeat "
                              f"for {lease_s:g} s)", r.attempts, r.max_attempts)
            gave_up = decision.action is Action.FAIL or r.cancel_requested
            values: dict[str, Any] = {"lease_token": Job.lease_token + 1, "worker": None,
                                      "error": decision.error}
            if r.cancel_requested:
                values.update(status=JobStatus.CANCELLED, finished_at=now,
                              error=f"cancelled by the user (worker {r.worker} lost its "
                                    "lease before it stopped)")
            elif gave_up:
                values.update(status=JobStatus.FAILED, finished_at=now)
            else:
                values.update(status=JobStatus.QUEUED, enqueued_at=now)
            res = s.execute(sa.update(Job)
                            .where(Job.id == r.id, Job.status == JobStatus.RUNNING,
                                   Job.heartbeat_at < stale)
                            .values(**values).execution_options(synchronize_session=False))
            if res.rowcount and gave_up:
                s.flush()
                settle_parent(s, r.id)
            elif res.rowcount:
                out.append((r.id, r.queue, r.priority))
        for (job_id,) in s.execute(sa.select(Job.id).where(
                Job.status == JobStatus.QUEUED, Job.kind.not_in(PARENT_KINDS),
                Job.cancel_requested.is_(True))
                .with_for_update(skip_locked=True, key_share=True)).all():
            s.execute(sa.update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                      .values(status=JobStatus.CANCELLED, finished_at=now,
                              error="cancelled by the user")
                      .execution_options(synchronize_session=False))
            s.flush()
            settle_parent(s, job_id)
        lost = s.execute(sa.select(Job.id, Job.queue, Job.priority, Job.enqueued_at).where(
            Job.status == JobStatus.QUEUED, Job.kind.not_in(PARENT_KINDS),
            Job.cancel_requested.is_(False),
            sa.or_(Job.enqueued_at.is_(None), Job.enqueued_at < republish))
            .with_for_update(skip_locked=True, key_share=True)).all()
        empty: dict[str, bool] = {}
        for r in lost:
            if r.enqueued_at is not None and queue_is_empty is not None:
                if r.queue not in empty:
                    empty[r.queue] = queue_is_empty(r.queue)
                if not empty[r.queue]:
                    continue  # its message is most likely still waiting in the queue
            out.append((r.id, r.queue, r.priority))
        out = list(dict.fromkeys(out))  # a job requeued above is published once
        if out:
            s.execute(sa.update(Job).where(Job.id.in_([t[0] for t in out]))
                      .values(enqueued_at=now).execution_options(synchronize_session=False))
    return out


def end_frozen_writers(lease_s: float, url: str | None = None) -> list[int]:
    """PostgreSQL: end the sessions that have held a live job's row lock inside one
    transaction for longer than a lease; return their server pids.

    gradq's transactions last milliseconds, so such a session belongs to a frozen process
    (SIGSTOP, a paused VM). Stopped between statements, the idle-in-transaction timeout that
    ``fence`` sets ends it; stopped in the middle of a pipelined or COPY write, its session
    is not idle and only this does. Its writes roll back, the job can be handed over, and
    the woken worker finds its lease lost.
    """
    with session_scope(url) as s:
        if s.get_bind().dialect.name != "postgresql":
            return []
        pids = list(s.execute(sa.text(
            "SELECT DISTINCT a.pid FROM jobs j "
            "JOIN pg_locks l ON l.locktype = 'transactionid' AND l.transactionid = j.xmax "
            "AND l.granted "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            f"WHERE j.status IN {_LIVE_SQL} AND a.pid <> pg_backend_pid() "
            "AND a.xact_start < now() - make_interval(secs => :lease)"),
            {"lease": float(lease_s)}).scalars())
        for pid in pids:
            s.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        return pids

