"""The job lifecycle in SQL: create, claim, lease, fenced writes, finish, cancel, retry, sweep.

The job row is the truth (SPEC §8). A worker claims a queued job by compare-and-set, which
bumps the job's fencing token; every later write by that worker runs in a transaction that
first renews the lease with ``UPDATE jobs … WHERE id = :id AND lease_token = :token AND
status = 'running'``. If that touches no row, the lease was lost (swept, cancelled and
finished, or claimed again) and the write is refused with ``LeaseLost``. On PostgreSQL the
UPDATE also locks the row until the transaction ends, so a sweeper cannot hand the job over
in the middle of a write.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from gradq.service.errors import InvalidTransition, JobNotFound
from gradq.service.settings import get_settings
from gradq.service.store import checkpoint_policy
from gradq.service.store.db import session_scope
from gradq.service.store.models import (
    FINISHED,
    Artifact,
    Checkpoint,
    Dataset,
    Job,
    JobStatus,
    Metric,
    Result,
    utcnow,
)
from gradq.service.store.newjob import NewJob
from sqlalchemy.orm import Session

PARENT_KINDS = ("compare", "suite")  # jobs no worker runs: their children do (suite: SPEC §12)


class LeaseLost(RuntimeError):
    """This worker no longer holds the job: its writes are refused."""


@dataclass(frozen=True)
class Lease:
    """A worker's hold on a running job; ``token`` fences its writes."""

    job_id: str
    token: int
    worker: str
    attempt: int


def new_id() -> str:
    return uuid.uuid4().hex


def json_safe(obj: Any) -> Any:
    """JSON has no NaN or infinity: a diverged loss in a progress or result document is
    stored (and printed) as null; the metrics table keeps the exact value."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def _dumps(obj: Any) -> str:
    # spec pulls in YAML and NumPy: imported here, so the read commands never load them
    from gradq.service.spec import canonical_json

    return canonical_json(json_safe(obj))


# ------------------------------------------------------------------ creation
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
        _add_job(s, job, None, dataset_hash, priority, max_attempts, ids)
    return ids


def _add_job(s: Session, j: NewJob, parent: str | None, digest: str | None, priority: int,
             max_attempts: int, ids: list[str]) -> None:
    jid = new_id()
    s.add(Job(id=jid, kind=j.kind, name=j.name, status=JobStatus.QUEUED, parent_id=parent,
              spec=_dumps(j.spec), dataset_hash=digest, seed=j.seed,
              optimizer=_dumps(j.optimizer), queue=j.queue, priority=priority, attempts=0,
              max_attempts=max_attempts, lease_token=0, cancel_requested=False,
              progress=_dumps(j.progress)))
    s.flush()
    ids.append(jid)
    for c in j.children:
        _add_job(s, c, jid, digest, priority, max_attempts, ids)


def mark_enqueued(job_ids: Iterable[str], url: str | None = None) -> None:
    ids = list(job_ids)
    if not ids:
        return
    with session_scope(url) as s:
        s.execute(sa.update(Job).where(Job.id.in_(ids)).values(enqueued_at=utcnow()))


def runnable(job_ids: Sequence[str], url: str | None = None) -> list[tuple[str, str, int]]:
    """(id, queue, priority) of the given jobs that a worker should run (no parents)."""
    with session_scope(url) as s:
        rows = s.execute(sa.select(Job.id, Job.queue, Job.priority)
                         .where(Job.id.in_(list(job_ids)), Job.kind.not_in(PARENT_KINDS))).all()
    return [(r.id, r.queue, r.priority) for r in rows]


def queued_children(parent_id: str, url: str | None = None) -> list[str]:
    """Runs of a comparison (or of a suite's comparisons) still waiting to run (``gradq
    run`` works through them), oldest first."""
    with session_scope(url) as s:
        under = sa.select(Job.id).where(Job.parent_id == parent_id,
                                        Job.kind.in_(PARENT_KINDS)).scalar_subquery()
        return list(s.execute(sa.select(Job.id).where(
            sa.or_(Job.parent_id == parent_id, Job.parent_id.in_(under)),
            Job.status == JobStatus.QUEUED, Job.kind.not_in(PARENT_KINDS))
            .order_by(Job.created_at, Job.id)).scalars())


def delete_jobs(job_ids: Sequence[str], url: str | None = None) -> None:
    """Remove jobs that were never enqueued (a submit that could not reach the broker)."""
    with session_scope(url) as s:
        s.execute(sa.delete(Job).where(Job.parent_id.in_(list(job_ids))))
        s.execute(sa.delete(Job).where(Job.id.in_(list(job_ids))))


# ------------------------------------------------------------------- leases
def _claim_row(s: Session, job_id: str, worker: str, now: datetime) -> sa.Row | None:
    """queued → running by compare-and-set, bumping the fencing token. Returns the won
    row's new (lease_token, attempts, parent_id), or None if it was not there to win."""
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
        now = utcnow()
        won = _claim_row(s, job_id, worker, now)
        if won is None:
            return None
        if won.parent_id:
            # the comparison, and the suite above it (if any), start with their first run
            above = sa.select(Job.parent_id).where(Job.id == won.parent_id).scalar_subquery()
            s.execute(sa.update(Job).where(sa.or_(Job.id == won.parent_id, Job.id == above),
                                           Job.status == JobStatus.QUEUED)
                      .values(status=JobStatus.RUNNING, started_at=now)
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
        now = utcnow()
        for row in rows:
            if len(leases) >= limit:
                break
            if not match(json.loads(row.spec)):
                continue
            won = _claim_row(s, row.id, worker, now)
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
    held = _fence_many(session, [lease])
    if lease.job_id not in held:
        raise LeaseLost(f"job {lease.job_id}: lease {lease.token} is no longer held")
    return held[lease.job_id]


def renew(lease: Lease, url: str | None = None) -> bool:
    """Heartbeat; returns whether cancellation was requested. Raises ``LeaseLost``."""
    with session_scope(url) as s:
        return fence(s, lease)


def set_device(lease: Lease, device: str, url: str | None = None) -> None:
    with session_scope(url) as s:
        fence(s, lease)
        s.execute(sa.update(Job).where(Job.id == lease.job_id).values(device=device)
                  .execution_options(synchronize_session=False))


# ------------------------------------------------------------ fenced writes
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
                  .values(progress=_dumps(progress)).execution_options(synchronize_session=False))
        return cancel


def log_many(entries: Sequence[tuple[Lease, Sequence[tuple[str, int, float, float, float]],
                                      dict[str, Any]]],
             url: str | None = None) -> list[bool | None]:
    """``log`` for several jobs (batched replicas) in one transaction.

    Each entry is (lease, rows, progress) and is fenced by its own lease; one whose lease
    was lost writes nothing and gets None, the others their cancel flag.
    """
    with session_scope(url) as s:
        held = _fence_many(s, [lease for lease, _, _ in entries])
        values: list[dict[str, Any]] = []
        progress: list[dict[str, Any]] = []
        for lease, rows, prog in entries:
            if lease.job_id in held:
                values.extend(_metric_rows(lease.job_id, rows))
                progress.append({"b_id": lease.job_id, "b_progress": _dumps(prog)})
        _insert_metric_values(s, values)
        if progress:
            jobs_table = Job.__table__
            s.execute(sa.update(jobs_table).where(jobs_table.c.id == sa.bindparam("b_id"))
                      .values(progress=sa.bindparam("b_progress")), progress)
    return [held.get(lease.job_id) for lease, _, _ in entries]


def _fence_many(session: Session, leases: Sequence[Lease]) -> dict[str, bool]:
    """``fence`` for several leases in one statement: {job id: cancel flag} of those held."""
    if not leases:
        return {}
    _bound_idle_lock(session)
    rows = session.execute(
        sa.update(Job)
        .where(sa.tuple_(Job.id, Job.lease_token).in_([(x.job_id, x.token) for x in leases]),
               Job.status == JobStatus.RUNNING)
        .values(heartbeat_at=utcnow())
        .returning(Job.id, Job.cancel_requested)
        .execution_options(synchronize_session=False)).all()
    return {r.id: bool(r.cancel_requested) for r in rows}


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
        held = _fence_many(s, [lease for lease, _, _, _ in entries])
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
            s.add(Result(job_id=lease.job_id, final=_dumps(result["final"]),
                         timing=_dumps(result["timing"]), params=int(result["params"]),
                         extra=_dumps(result.get("extra", {}))))
        for name, data in (artifacts or {}).items():
            _put_artifact(s, lease.job_id, name, data)
        values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error,
                                  "traceback": traceback}
        if progress is not None:
            values["progress"] = _dumps(progress)
        s.execute(sa.update(Job).where(Job.id == lease.job_id).values(**values)
                  .execution_options(synchronize_session=False))
        if status is JobStatus.SUCCEEDED:
            checkpoint_policy.drop_after_success(s, lease.job_id)
        s.flush()
        return _settle_parent(s, lease.job_id)


def release(lease: Lease, error: str, traceback: str | None = None,
            url: str | None = None) -> JobStatus:
    """Give a job back after a transient error: queued again, or failed if out of attempts."""
    with session_scope(url) as s:
        fence(s, lease)
        job = s.get(Job, lease.job_id)
        status = JobStatus.FAILED if job.attempts >= job.max_attempts else JobStatus.QUEUED
        values: dict[str, Any] = {"status": status, "error": error, "traceback": traceback,
                                  "worker": None}
        if status is JobStatus.FAILED:
            values["finished_at"] = utcnow()
            values["error"] = f"{error} (gave up after {job.attempts} attempts)"
        s.execute(sa.update(Job).where(Job.id == lease.job_id).values(**values)
                  .execution_options(synchronize_session=False))
        s.flush()
        if status is JobStatus.FAILED:
            _settle_parent(s, lease.job_id)
        return status


def _settle_parent(s: Session, job_id: str) -> list[str]:
    """``_settle`` the comparison ``job_id`` belongs to, if any. Returns new job ids.

    Only the end of a tuning run or search trial can decide something, and only once no
    sibling of the same arm and phase is still to end: that is checked first, in SQL on
    the stored (canonical) spec text, so that the other ends skip the decision step."""
    row = s.execute(sa.select(Job.parent_id, Job.spec).where(Job.id == job_id)).first()
    if row is None or row.parent_id is None:
        return []
    spec = json.loads(row.spec)
    decide = False
    if spec.get("_phase") in ("tune", "search"):
        # the parent's lock first: on PostgreSQL two siblings ending at once would each
        # count the other as unfinished (neither committed), and neither would decide
        _lock_parent(s, row.parent_id)
        same = [Job.spec.contains(f'"_arm_index":{int(spec["_arm_index"])},', autoescape=True),
                Job.spec.contains(f'"_phase":"{spec["_phase"]}"', autoescape=True)]
        waiting = s.execute(sa.select(sa.func.count()).select_from(Job).where(
            Job.parent_id == row.parent_id, Job.status.not_in(list(FINISHED)), *same)).scalar()
        decide = not waiting
    return _settle(s, row.parent_id, decide)


def _lock_parent(s: Session, parent_id: str) -> Job:
    """The comparison's row, locked for this transaction and read afresh (see ``_settle``)."""
    return s.execute(sa.select(Job).where(Job.id == parent_id)
                     .with_for_update(key_share=True)
                     .execution_options(populate_existing=True)).scalar_one()


def _settle(s: Session, parent_id: str, decide: bool = True) -> list[str]:
    """Finish a comparison when its last child has finished (determined in SQL), or, when
    that child ends a grid's tuning phase, add the final runs. Returns new job ids."""
    # lock the parent row so that two children finishing at once serialize here. FOR NO KEY
    # UPDATE, not FOR UPDATE: each child's own status update already holds a KEY SHARE lock
    # on the parent (PostgreSQL's foreign-key check on parent_id), which FOR UPDATE would
    # wait on, so two children finishing together deadlocked.
    # populate_existing: read the locked row afresh, not the session's copy (cancel() has
    # the parent loaded from before its own UPDATE, and settled a cancelled one as failed)
    parent = _lock_parent(s, parent_id)
    if JobStatus(parent.status) in FINISHED:
        return []
    new = [] if parent.cancel_requested or not decide else _advance(s, parent)
    counts = dict(s.execute(sa.select(Job.status, sa.func.count())
                            .where(Job.parent_id == parent_id).group_by(Job.status)).all())
    counts = {JobStatus(k): v for k, v in counts.items()}
    if new or any(st not in FINISHED for st in counts):
        return new
    if parent.cancel_requested:
        status = JobStatus.CANCELLED
    elif counts.get(JobStatus.SUCCEEDED):
        status = JobStatus.SUCCEEDED
    else:
        status = JobStatus.FAILED
    error = None
    bad = {k.value: v for k, v in counts.items() if k is not JobStatus.SUCCEEDED}
    if bad:
        error = "children not succeeded: " + ", ".join(f"{v} {k}" for k, v in sorted(bad.items()))
    s.execute(sa.update(Job).where(Job.id == parent_id)
              .values(status=status, finished_at=utcnow(), error=error)
              .execution_options(synchronize_session=False))
    if status is JobStatus.SUCCEEDED:  # a cancelled or failed search may be retried
        checkpoint_policy.drop_after_settling(s, parent_id)
    if parent.parent_id is not None:  # a suite's comparison: the suite may end with it
        _settle_suite(s, parent.parent_id)
    return []


def _settle_suite(s: Session, suite_id: str) -> None:
    """Finish a suite when its last comparison has finished (SPEC §12): succeeded if any
    workload's comparison succeeded, failed if none did, cancelled if it was cancelled."""
    from gradq.service.experiments.suite import settle_status

    suite = _lock_parent(s, suite_id)
    if JobStatus(suite.status) in FINISHED:
        return
    counts = dict(s.execute(sa.select(Job.status, sa.func.count())
                            .where(Job.parent_id == suite_id).group_by(Job.status)).all())
    counts = {JobStatus(k).value: v for k, v in counts.items()}
    if any(JobStatus(k) not in FINISHED for k in counts):
        return
    status, error = settle_status(counts, bool(suite.cancel_requested))
    s.execute(sa.update(Job).where(Job.id == suite_id)
              .values(status=JobStatus(status), finished_at=utcnow(), error=error)
              .execution_options(synchronize_session=False))


def _advance(s: Session, parent: Job) -> list[str]:
    """Apply what the comparison's tuning can now decide (``compare.advance``), under the
    parent's row lock held by ``_settle``: add final runs, promote search trials to their
    next rung (succeeded → queued, a larger epoch budget; they resume from their
    checkpoint), drop pruned trials' checkpoints, and record it all in the parent's
    progress. Returns the ids to publish (new and promoted jobs)."""
    # compare (planning, with spec validation) is loaded only where a comparison decides
    # something, so that read commands stay light; compare never imports jobs (no cycle)
    from gradq.service.experiments.compare import Kid, advance, tunes

    spec = json.loads(parent.spec)
    if not tunes(spec):
        return []
    rows = s.execute(sa.select(Job.id, Job.spec, Job.status, Result.final, Result.timing)
                     .outerjoin(Result, Result.job_id == Job.id)
                     .where(Job.parent_id == parent.id)).all()
    kids = [Kid(r.id, json.loads(r.spec), JobStatus(r.status).value,
                json.loads(r.final) if r.final else None,
                json.loads(r.timing) if r.timing else None) for r in rows]
    plan = advance(spec, kids, json.loads(parent.progress or "{}"))
    if not plan.changed:
        return []
    s.execute(sa.update(Job).where(Job.id == parent.id).values(progress=_dumps(plan.progress))
              .execution_options(synchronize_session=False))
    specs = {k.id: k.spec for k in kids}
    ids: list[str] = []
    for job_id, epochs in sorted(plan.promote.items()):
        child = specs[job_id]
        child["training"]["epochs"] = epochs
        won = s.execute(sa.update(Job)
                        .where(Job.id == job_id, Job.parent_id == parent.id,
                               Job.status == JobStatus.SUCCEEDED)
                        .values(status=JobStatus.QUEUED, spec=_dumps(child), attempts=0,
                                finished_at=None, error=None, traceback=None, worker=None,
                                enqueued_at=None)
                        .execution_options(synchronize_session=False))
        if won.rowcount:
            ids.append(job_id)
    if plan.drop_checkpoints:
        s.execute(sa.delete(Checkpoint).where(Checkpoint.job_id.in_(plan.drop_checkpoints)))
    for j in plan.new:
        _add_job(s, j, parent.id, parent.dataset_hash, parent.priority, parent.max_attempts,
                 ids)
    return ids


# ------------------------------------------------------------ user actions
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
        comparisons = [job_id] if job.kind == "compare" else []
        if job.kind == "suite":  # its comparisons and their runs
            comparisons = ids[1:]
            ids += list(s.execute(sa.select(Job.id).where(Job.parent_id.in_(comparisons)))
                        .scalars())
        now = utcnow()
        s.execute(sa.update(Job).where(Job.id.in_(ids), Job.status == JobStatus.QUEUED)
                  .values(status=JobStatus.CANCELLED, finished_at=now, cancel_requested=True,
                          error="cancelled by the user")
                  .execution_options(synchronize_session=False))
        s.execute(sa.update(Job).where(Job.id.in_(ids), Job.status == JobStatus.RUNNING)
                  .values(cancel_requested=True).execution_options(synchronize_session=False))
        s.flush()
        if job.parent_id:
            _settle(s, job.parent_id)
        for cid in comparisons:
            _settle(s, cid)  # a suite's comparisons settle the suite with the last
        if job.kind == "suite":
            _settle_suite(s, job_id)
        return ids


def retry(job_id: str, url: str | None = None) -> list[tuple[str, str, int]]:
    """Queue a failed, diverged or cancelled job again (a comparison: its unfinished
    children; a suite: its unfinished comparisons'). Returns (id, queue, priority) to
    publish."""
    with session_scope(url) as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        again = JobStatus(job.status) in _AGAIN
        if job.kind == "suite" and JobStatus(job.status) is JobStatus.SUCCEEDED:
            # a suite succeeds with a workload failed (SPEC §12): that workload may be retried
            again = s.execute(sa.select(Job.id).where(Job.parent_id == job_id,
                                                      Job.status.in_(_AGAIN))).first() is not None
        if not again:
            raise InvalidTransition(
                f"job {job_id} is {JobStatus(job.status).value}; only failed, diverged or "
                "cancelled jobs can be retried")
        if job.kind != "suite":
            return _retry(s, job)
        todo: list[tuple[str, str, int]] = []
        for child in s.execute(sa.select(Job).where(Job.parent_id == job_id,
                                                    Job.status.in_(_AGAIN))
                               .order_by(Job.created_at, Job.id)).scalars():
            todo += _retry(s, child)
        s.execute(sa.update(Job).where(Job.id == job_id)
                  .values(status=JobStatus.RUNNING, finished_at=None, error=None,
                          cancel_requested=False)
                  .execution_options(synchronize_session=False))
        s.flush()
        _settle_suite(s, job_id)  # nothing left to run: it ends again at once
        return todo


_AGAIN = (JobStatus.FAILED, JobStatus.DIVERGED, JobStatus.CANCELLED)


def _retry(s: Session, job: Job) -> list[tuple[str, str, int]]:
    """``retry`` of one train job or comparison inside ``s``."""
    job_id = job.id
    if job.kind == "compare":
        # a search trial whose part is over (pruned, or its arm decided) stays as it is
        from gradq.service.experiments.compare import settled_trial

        progress = json.loads(job.progress or "{}")
        todo = [(r.id, r.queue, r.priority) for r in s.execute(
            sa.select(Job.id, Job.queue, Job.priority, Job.spec)
            .where(Job.parent_id == job_id, Job.status.in_(_AGAIN)))
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
        above = sa.select(Job.parent_id).where(Job.id == pid).scalar_subquery()
        s.execute(sa.update(Job).where(sa.or_(Job.id == pid, Job.id == above))  # (a suite)
                  .values(status=JobStatus.RUNNING, finished_at=None, error=None,
                          cancel_requested=False)
                  .execution_options(synchronize_session=False))
        s.flush()
        # a rung (or grid) whose last run ended while the comparison was cancelled is
        # decided now; with nothing left to run, the comparison ends again at once
        more = _settle(s, pid)
        if more:
            todo += [(r.id, r.queue, r.priority) for r in s.execute(
                sa.select(Job.id, Job.queue, Job.priority).where(Job.id.in_(more)))]
    return todo


# ------------------------------------------------------------------ sweeper
def sweep(lease_s: float, republish_after_s: float | None = None, url: str | None = None,
          queue_is_empty: Callable[[str], bool] | None = None) -> list[tuple[str, str, int]]:
    """Hand over jobs whose lease lapsed and find queued jobs whose message may be lost.

    A running job not renewed for ``lease_s`` goes back to ``queued`` (its token is bumped
    so the old holder can write nothing), or to ``failed`` when its attempts are used up.
    A queued job waiting longer than ``republish_after_s`` (default 2·lease) is published
    again only where ``queue_is_empty(queue)`` says its broker queue holds nothing: a
    backlog that is merely long is not flooded with duplicates, and a message lost with a
    restarted broker is found once the queue drains. Returns (id, queue, priority) of every
    job to publish; a duplicate message is harmless, since only one claim can win.
    """
    now = utcnow()
    stale = now - timedelta(seconds=lease_s)
    republish = now - timedelta(seconds=republish_after_s if republish_after_s is not None
                                else 2 * lease_s)
    out: list[tuple[str, str, int]] = []
    with session_scope(url) as s:
        if s.get_bind().dialect.name == "postgresql":
            # never wait long on a row lock: its holder may be frozen (end_frozen_writers)
            ms = max(1000, int(lease_s * 1000))
            s.execute(sa.text(f"SET LOCAL lock_timeout = {ms}"))
        # rows locked by a writer in mid-transaction are skipped (the next sweep sees them)
        lapsed = s.execute(sa.select(Job.id, Job.queue, Job.priority, Job.attempts,
                                     Job.max_attempts, Job.worker)
                           .where(Job.status == JobStatus.RUNNING,
                                  Job.kind.not_in(PARENT_KINDS),
                                  Job.heartbeat_at < stale)
                           .with_for_update(skip_locked=True, key_share=True)).all()
        for r in lapsed:
            gave_up = r.attempts >= r.max_attempts
            values: dict[str, Any] = {
                "lease_token": Job.lease_token + 1, "worker": None,
                "error": f"worker {r.worker} lost its lease (no heartbeat for {lease_s:g} s)"}
            if gave_up:
                values.update(status=JobStatus.FAILED, finished_at=now,
                              error=f"worker lost {r.attempts} times; gave up after "
                                    f"{r.attempts} attempts")
            else:
                values.update(status=JobStatus.QUEUED, enqueued_at=now)
            res = s.execute(sa.update(Job)
                            .where(Job.id == r.id, Job.status == JobStatus.RUNNING,
                                   Job.heartbeat_at < stale)
                            .values(**values).execution_options(synchronize_session=False))
            if res.rowcount and gave_up:
                s.flush()
                _settle_parent(s, r.id)
            elif res.rowcount:
                out.append((r.id, r.queue, r.priority))
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
            "WHERE j.status IN ('queued', 'running') AND a.pid <> pg_backend_pid() "
            "AND a.xact_start < now() - make_interval(secs => :lease)"),
            {"lease": float(lease_s)}).scalars())
        for pid in pids:
            s.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        return pids


def to_utc(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes: they are UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
