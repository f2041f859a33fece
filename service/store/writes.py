"""Fenced writes: a running job's metrics, checkpoints, artifacts and end.

Each call is one transaction that first renews the writer's lease (``leases.fence``), so a
worker that lost its job writes nothing (``LeaseLost``). A job's end settles its comparison
in the same transaction (``settle``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from gradq.service.failure_policy import Action, Failure, decide
from gradq.service.status import JobStatus
from gradq.service.store import checkpoint_policy
from gradq.service.store.clock import db_now
from gradq.service.store.db import session_scope
from gradq.service.store.encoding import dumps
from gradq.service.store.leases import Lease, LeaseLost, fence, fence_many
from gradq.service.store.models import Artifact, Checkpoint, Job, Metric, Result
from gradq.service.store.settle import settle_parent
from sqlalchemy.orm import Session


def _metric_rows(job_id: str, rows: Iterable[tuple[str, int, float, float, float]]
                 ) -> list[dict[str, Any]]:
    out = []
    for name, step, epoch, time_s, value in rows:
        v = float(value)
        special = None
        if math.isnan(v):
            special, v = "nan", None
        elif math.isinf(v):
            special, v = ("inf" if v > 0 else "-inf"), None
        out.append({"job_id": job_id, "name": name, "step": int(step), "epoch": float(epoch),
                    "time_s": float(time_s), "value": v, "special": special})
    return out


def insert_metrics(session: Session, job_id: str,
                   rows: Iterable[tuple[str, int, float, float, float]]) -> None:
    """Insert metric points, ignoring (job, name, step) already stored (a resumed job)."""
    _insert_metric_values(session, _metric_rows(job_id, rows))


_METRIC_COLUMNS = ("job_id", "name", "step", "epoch", "time_s", "value", "special")
_COPY_FROM = 64  # rows from which PostgreSQL gets them by COPY rather than INSERTs


def _insert_metric_values(session: Session, values: list[dict[str, Any]]) -> None:
    if not values:
        return
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        if bind.dialect.driver == "psycopg" and len(values) >= _COPY_FROM:
            _copy_metric_values(session, values)
            return
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(Metric).on_conflict_do_nothing(index_elements=["job_id", "name", "step"])
    session.execute(stmt, values)


def _copy_metric_values(session: Session, values: list[dict[str, Any]]) -> None:
    """Many points into PostgreSQL at COPY speed, still idempotent on (job, name, step).

    First a plain COPY into ``metrics`` under a savepoint: the common case, where no point
    is stored yet. If some are (a resumed job writes its last interval again), the COPY
    fails on the unique constraint, the savepoint is rolled back and the points go the
    idempotent way: COPY into a temporary table of this connection, then one
    INSERT … SELECT … ON CONFLICT DO NOTHING. All inside the caller's transaction.
    """
    import psycopg

    cols = ", ".join(_METRIC_COLUMNS)
    rows = [tuple(v[c] for c in _METRIC_COLUMNS) for v in values]
    raw = session.connection().connection.driver_connection  # psycopg.Connection
    with raw.cursor() as cur:
        cur.execute("SAVEPOINT gradq_metrics_copy")
        try:
            with cur.copy(f"COPY metrics ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        except psycopg.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT gradq_metrics_copy")
        else:
            cur.execute("RELEASE SAVEPOINT gradq_metrics_copy")
            return
        cur.execute("CREATE TEMPORARY TABLE IF NOT EXISTS metrics_incoming ("
                    "job_id varchar(32), name varchar(64), step integer, "
                    "epoch double precision, time_s double precision, "
                    "value double precision, special varchar(8)) ON COMMIT DELETE ROWS")
        with cur.copy(f"COPY metrics_incoming ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(f"INSERT INTO metrics ({cols}) SELECT {cols} FROM metrics_incoming "
                    "ON CONFLICT (job_id, name, step) DO NOTHING")
        cur.execute("DELETE FROM metrics_incoming")  # a second call in this transaction


def log(lease: Lease, rows: Sequence[tuple[str, int, float, float, float]],
        progress: dict[str, Any], url: str | None = None) -> bool:
    """One log interval in one transaction: metric points and progress. Returns cancel flag."""
    with session_scope(url) as s:
        cancel = fence(s, lease)
        insert_metrics(s, lease.job_id, rows)
        s.execute(sa.update(Job).where(Job.id == lease.job_id)
                  .values(progress=dumps(progress)).execution_options(synchronize_session=False))
        return cancel


def log_many(entries: Sequence[tuple[Lease, Sequence[tuple[str, int, float, float, float]],
                                      dict[str, Any]]],
             url: str | None = None) -> list[bool | None]:
    """``log`` for several jobs (batched replicas) in one transaction.

    Each entry is (lease, rows, progress) and is fenced by its own lease; one whose lease
    was lost writes nothing and gets None, the others their cancel flag.
    """
    with session_scope(url) as s:
        held = fence_many(s, [lease for lease, _, _ in entries])
        values: list[dict[str, Any]] = []
        progress: list[dict[str, Any]] = []
        for lease, rows, prog in entries:
            if lease.job_id in held:
                values.extend(_metric_rows(lease.job_id, rows))
                progress.append({"b_id": lease.job_id, "b_progress": dumps(prog)})
        _insert_metric_values(s, values)
        if progress:
            jobs_table = Job.__table__
            s.execute(sa.update(jobs_table).where(jobs_table.c.id == sa.bindparam("b_id"))
                      .values(progress=sa.bindparam("b_progress")), progress)
    return [held.get(lease.job_id) for lease, _, _ in entries]


def save_checkpoint(lease: Lease, epoch: int, step: int, data: bytes, keep: int = 1,
                    url: str | None = None) -> None:
    """Store a checkpoint and drop all but the newest ``keep``."""
    with session_scope(url) as s:
        fence(s, lease)
        _save_checkpoint(s, lease, epoch, step, data, keep)


def save_checkpoints(entries: Sequence[tuple[Lease, int, int, bytes]], keep: int = 1,
                     url: str | None = None) -> list[bool]:
    """``save_checkpoint`` for several jobs in one transaction, each (lease, epoch, step,
    data) fenced by its own lease; returns per entry whether it was stored (False: lost)."""
    with session_scope(url) as s:
        held = fence_many(s, [lease for lease, _, _, _ in entries])
        for lease, epoch, step, data in entries:
            if lease.job_id in held:
                _save_checkpoint(s, lease, epoch, step, data, keep)
    return [lease.job_id in held for lease, _, _, _ in entries]


def _save_checkpoint(s: Session, lease: Lease, epoch: int, step: int, data: bytes,
                     keep: int) -> None:
    s.execute(sa.delete(Checkpoint).where(Checkpoint.job_id == lease.job_id,
                                          Checkpoint.step == step))
    s.add(Checkpoint(job_id=lease.job_id, epoch=epoch, step=step, data=data))
    s.flush()
    old = s.execute(sa.select(Checkpoint.id).where(Checkpoint.job_id == lease.job_id)
                    .order_by(Checkpoint.step.desc()).offset(keep)).scalars().all()
    if old:
        s.execute(sa.delete(Checkpoint).where(Checkpoint.id.in_(old)))


def latest_checkpoint(job_id: str, url: str | None = None) -> tuple[int, int, bytes] | None:
    """(epoch, step, data) of the newest checkpoint, or None."""
    with session_scope(url) as s:
        row = s.execute(sa.select(Checkpoint.epoch, Checkpoint.step, Checkpoint.data)
                        .where(Checkpoint.job_id == job_id)
                        .order_by(Checkpoint.step.desc()).limit(1)).first()
        return (row.epoch, row.step, row.data) if row else None


def save_artifact(lease: Lease, name: str, data: bytes, url: str | None = None) -> None:
    with session_scope(url) as s:
        fence(s, lease)
        _put_artifact(s, lease.job_id, name, data)


def _put_artifact(s: Session, job_id: str, name: str, data: bytes) -> None:
    s.execute(sa.delete(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))
    s.add(Artifact(job_id=job_id, name=name, data=data))


def finish(lease: Lease, status: JobStatus, *, result: dict[str, Any] | None = None,
           artifacts: dict[str, bytes] | None = None, error: str | None = None,
           traceback: str | None = None, metrics: Sequence[tuple] = (),
           progress: dict[str, Any] | None = None, url: str | None = None) -> list[str]:
    """End a running job in one fenced transaction: last metrics, result, artifacts, status.

    Returns the ids of jobs this ending created (a grid's final runs), to be published."""
    with session_scope(url) as s:
        fence(s, lease)
        insert_metrics(s, lease.job_id, metrics)
        if result is not None:
            s.execute(sa.delete(Result).where(Result.job_id == lease.job_id))
            s.add(Result(job_id=lease.job_id, final=dumps(result["final"]),
                         timing=dumps(result["timing"]), params=int(result["params"]),
                         extra=dumps(result.get("extra", {}))))
        for name, data in (artifacts or {}).items():
            _put_artifact(s, lease.job_id, name, data)
        values: dict[str, Any] = {"status": status, "finished_at": db_now(s), "error": error,
                                  "traceback": traceback}
        if progress is not None:
            values["progress"] = dumps(progress)
        s.execute(sa.update(Job).where(Job.id == lease.job_id).values(**values)
                  .execution_options(synchronize_session=False))
        if status is JobStatus.SUCCEEDED:
            checkpoint_policy.drop_after_success(s, lease.job_id)
        s.flush()
        return settle_parent(s, lease.job_id)


def end_failed(lease: Lease, failure: Failure, error: str, traceback: str | None = None,
               url: str | None = None) -> JobStatus:
    """End an attempt that failed, as the failure policy decides on the job's attempts
    (``failure_policy.decide``): queued again for another attempt, or failed with
    ``error`` and ``traceback`` kept. Returns the new status; raises ``LeaseLost``."""
    with session_scope(url) as s:
        fence(s, lease)
        job = s.get(Job, lease.job_id)
        decision = decide(failure, error, job.attempts, job.max_attempts)
        if decision.action is Action.ABANDON:
            raise LeaseLost(f"job {lease.job_id}: {error}")
        retry = decision.action is Action.RETRY
        status = JobStatus.QUEUED if retry else JobStatus.FAILED
        values: dict[str, Any] = {"status": status, "error": decision.error,
                                  "traceback": traceback}
        if retry or failure is not Failure.PERMANENT:
            values["worker"] = None  # a permanent failure keeps who met it
        if not retry:
            values["finished_at"] = db_now(s)
        s.execute(sa.update(Job).where(Job.id == lease.job_id).values(**values)
                  .execution_options(synchronize_session=False))
        s.flush()
        if not retry:
            settle_parent(s, lease.job_id)
        return status
