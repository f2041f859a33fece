"""Deleting jobs and reclaiming space (docs/guarantees.md): ``gradq rm`` and ``gradq gc``.

``remove`` deletes whole job trees (a job, or a comparison with its children) with all
they own — metrics, results, checkpoints, artifacts — in one transaction for all the
trees named, so an interrupted or refused ``rm`` leaves every job or none. ``collect``
(``gc``) deletes what finished jobs no longer need (their checkpoints, by
``checkpoint_policy``), datasets no job or name refers to, and rows whose job is gone.

Concurrency with workers. A running tree is never deleted: ``rm`` refuses it, or with
``force`` cancels it and waits until every job of the tree is finished (or queued with
cancel requested, which no worker will claim). The delete then locks the tree's rows in
the order the lifecycle code does — children first (by creation, as ``claim_siblings``),
then the parent (as a child's end settles its parent) — with NOWAIT on PostgreSQL: a row
that a claim, a write or a settle holds makes the delete back off and try again, so it
never waits inside a worker's lock order, and whatever that transaction did is seen (and
re-checked) on the next try. On SQLite the transaction starts with a write, which takes
the database's one write lock first, so every check and delete sees the latest state.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from gradq.service.errors import InvalidTransition
from gradq.service.settings import get_settings
from gradq.service.status import FINISHED, JobStatus
from gradq.service.store import checkpoint_policy
from gradq.service.store.actions import cancel
from gradq.service.store.db import get_engine, session_scope
from gradq.service.store.models import (
    Artifact,
    Checkpoint,
    Dataset,
    DatasetName,
    Job,
    Metric,
    Result,
)
from gradq.service.store.queries import resolve
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

KINDS = ("jobs", "metrics", "results", "checkpoints", "artifacts")
"""What a job owns, in the order ``rm`` reports it."""


class ChildOfComparison(InvalidTransition):
    """``rm`` of one child of a comparison: its parent's report depends on it."""


class JobBusy(InvalidTransition):
    """``rm`` of a job that runs, without ``--force``."""


class StillRunning(InvalidTransition):
    """``rm --force`` cancelled a job, but its worker did not let go in time."""


# ------------------------------------------------------------------- sizes
def _payload(kind: str) -> tuple[Any, Any]:
    """(table, SQL expression of one row's payload bytes) for a kind of row.

    Payload: the bytes of its data columns — blobs, JSON text, and 4 numbers of 8 bytes
    per metric point; page and index overhead is not counted (see benchmarks/footprint.py
    for what a job costs on disk)."""
    n = sa.func.length
    if kind == "checkpoints":
        return Checkpoint, n(Checkpoint.data)
    if kind == "artifacts":
        return Artifact, n(Artifact.data)
    if kind == "datasets":
        return Dataset, n(Dataset.data)
    if kind == "results":
        return Result, n(Result.final) + n(Result.timing) + n(Result.extra)
    if kind == "metrics":
        return Metric, n(Metric.name) + 32
    if kind == "jobs":
        c = sa.func.coalesce
        return Job, (n(Job.spec) + n(Job.progress) + n(Job.optimizer)
                     + c(n(Job.error), 0) + c(n(Job.traceback), 0))
    raise ValueError(f"unknown kind {kind!r}")


def _usage(s: Session, kind: str, where: Any) -> dict[str, int]:
    """Rows and payload bytes of ``kind`` matching ``where``."""
    _, size = _payload(kind)
    rows, size_sum = s.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(size), 0))
                               .where(where)).one()
    return {"rows": int(rows), "bytes": int(size_sum)}


def _owned(kind: str, ids: Sequence[str]) -> Any:
    """The condition selecting the rows of ``kind`` that belong to the jobs ``ids``."""
    table, _ = _payload(kind)
    return (Job.id.in_(ids)) if kind == "jobs" else table.job_id.in_(ids)


# --------------------------------------------------------------------- rm
def remove(job_refs: Sequence[str], *, force: bool = False, wait_s: float | None = None,
           poll_s: float = 0.2, on_wait: Callable[[str], None] | None = None,
           url: str | None = None) -> list[dict[str, Any]]:
    """``gradq rm``: delete each job (id or unique prefix) with all it owns.

    All or nothing: every id is checked before anything is deleted (an unknown id, a child
    of a comparison, or without ``force`` a job that runs refuses the whole command), and
    the trees are deleted in one transaction. With ``force``, every running tree is
    cancelled, then all are waited for, at most ``wait_s`` seconds in all (default two
    leases: long enough for a lost worker's lease to lapse); one that does not let go
    leaves every job in place. Returns per job
    ``{"id", "kind", "deleted": {kind: {"rows", "bytes"}}}``.
    """
    wait_s = 2 * get_settings().lease_s if wait_s is None else wait_s
    roots = list(dict.fromkeys(_check_root(ref, force, url) for ref in job_refs))
    deadline = time.monotonic() + wait_s
    while True:
        if force:
            _cancel_and_wait(roots, deadline, poll_s, on_wait, url)
        try:
            return _delete_trees(roots, url)
        except _Busy as busy:  # claimed, written or settled meanwhile: look again
            if not force and busy.running:
                raise _refusal(busy.job_id, busy.status) from None
            if time.monotonic() > deadline:
                raise StillRunning(f"job {busy.job_id}: its rows stayed busy for {wait_s:g} s; "
                                   "nothing was deleted, run gradq rm again") from None
            time.sleep(poll_s)


def _check_root(ref: str, force: bool, url: str | None) -> str:
    with session_scope(url) as s:
        job = resolve(s, ref)
        if job.parent_id is not None:
            if job.kind == "compare":  # a suite's workload (docs/suites.md)
                raise ChildOfComparison(
                    f"job {job.id} is a workload of suite {job.parent_id}: delete the suite "
                    f"(gradq rm {job.parent_id}), or the suite's report would lose it")
            raise ChildOfComparison(
                f"job {job.id} is a child of comparison {job.parent_id}: delete the parent "
                f"(gradq rm {job.parent_id}), or the comparison's report would lose a run")
        busy = _running(s, job.id)
        if busy is not None and not force:
            raise _refusal(job.id, busy)
        return job.id


def _refusal(job_id: str, status: str) -> JobBusy:
    return JobBusy(f"job {job_id} is {status}: cancel it first (gradq cancel {job_id}), or "
                   f"gradq rm --force {job_id} to cancel it and wait")


def _in_tree(job_id: str) -> Any:
    """The rows of ``job_id``'s tree: itself, its children and (a suite's comparisons')
    grandchildren."""
    kids = sa.select(Job.id).where(Job.parent_id == job_id).scalar_subquery()
    return sa.or_(Job.id == job_id, Job.parent_id == job_id, Job.parent_id.in_(kids))


def _running(s: Session, job_id: str) -> str | None:
    """"running" if a job of the tree of ``job_id`` runs (which keeps it from being
    deleted), else None. A queued tree can go: under the tree's locks no claim is in
    flight, and a claim afterwards finds no row."""
    hit = s.execute(sa.select(Job.id).where(_in_tree(job_id),
                                            Job.status == JobStatus.RUNNING).limit(1)).first()
    return None if hit is None else JobStatus.RUNNING.value


def _let_go(s: Session, job_id: str) -> bool:
    """Whether no worker holds or can claim a job of the tree: each is finished, or queued
    with cancellation requested (a lost worker's job, which ``claim`` refuses)."""
    rows = s.execute(sa.select(Job.status, Job.cancel_requested)
                     .where(_in_tree(job_id))).all()
    return all(JobStatus(st) in FINISHED or (JobStatus(st) is JobStatus.QUEUED and cancelled)
               for st, cancelled in rows)


def _cancel_and_wait(roots: Sequence[str], deadline: float, poll_s: float,
                     on_wait: Callable[[str], None] | None, url: str | None) -> None:
    """Cancel every tree of ``roots`` that a worker holds, then wait until all let go."""
    waiting = []
    for job_id in roots:
        with session_scope(url) as s:
            if _let_go(s, job_id):
                continue
        with contextlib.suppress(InvalidTransition):  # it finished in between
            cancel(job_id, url)
        waiting.append(job_id)
    told: set[str] = set()
    while waiting:
        with session_scope(url) as s:
            waiting = [j for j in waiting if not _let_go(s, j)]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise StillRunning(
                f"job {waiting[0]}: cancel requested, but its worker has not let go in time "
                "(it stops at its next log interval; a lost worker's lease lapses after "
                "GRADQ_LEASE_S); nothing was deleted: run gradq rm --force again later, "
                "or give --wait more seconds")
        for job_id in waiting:
            if on_wait is not None and job_id not in told:
                on_wait(f"job {job_id}: cancel requested; waiting for its worker to stop")
                told.add(job_id)
        time.sleep(poll_s)


class _Busy(Exception):
    """The tree cannot be deleted right now (a row is locked, or a job runs again)."""

    def __init__(self, job_id: str, status: str = "locked", running: bool = False) -> None:
        super().__init__(status)
        self.job_id, self.status, self.running = job_id, status, running


def _lock_tree(s: Session, job_id: str) -> list[str]:
    """Lock the rows of ``job_id``'s tree, children first; return the tree's ids (root
    first). Raises ``_Busy`` where a row is locked by another transaction (PostgreSQL)."""
    if s.get_bind().dialect.name == "sqlite":
        # a write first: the one write lock, so nothing changes until this transaction ends
        s.execute(sa.update(Job).where(Job.id == job_id).values(lease_token=Job.lease_token)
                  .execution_options(synchronize_session=False))
        kids = list(s.execute(sa.select(Job.id).where(_in_tree(job_id), Job.id != job_id))
                    .scalars())
        return [job_id, *kids]
    try:
        below = sa.and_(_in_tree(job_id), Job.id != job_id)
        kids = list(s.execute(sa.select(Job.id).where(below)
                              .order_by(Job.created_at, Job.id)
                              .with_for_update(nowait=True)).scalars())
        root = s.execute(sa.select(Job.id).where(Job.id == job_id)
                         .with_for_update(nowait=True)).scalar()
        again = set(s.execute(sa.select(Job.id).where(below)).scalars())
    except OperationalError as exc:
        if "lock" in str(exc).lower():
            raise _Busy(job_id) from None
        raise
    if root is None:
        return []
    if again != set(kids):  # a settle added children before the parent was locked
        raise _Busy(job_id)
    return [job_id, *kids]


def _delete_trees(roots: Sequence[str], url: str | None) -> list[dict[str, Any]]:
    """One transaction for all the trees: lock each, check nothing in it runs, count,
    delete. A tree that is busy rolls back every one (``_Busy``)."""
    job_id = roots[0] if roots else ""
    try:
        with session_scope(url) as s:
            out = []
            for job_id in roots:
                out.append(_delete_tree(s, job_id))
            return out
    except OperationalError as exc:  # NOWAIT refused inside a statement of the delete
        if "lock" in str(exc).lower():
            raise _Busy(job_id) from None
        raise


def _delete_tree(s: Session, job_id: str) -> dict[str, Any]:
    """Lock one tree, check nothing in it runs, count, delete (in the caller's
    transaction)."""
    ids = _lock_tree(s, job_id)
    if not ids:
        return {"id": job_id, "kind": None, "deleted": {k: {"rows": 0, "bytes": 0}
                                                        for k in KINDS}}
    busy = _running(s, job_id)
    if busy is not None:  # claimed (or retried and claimed) since the check
        raise _Busy(job_id, busy, running=True)
    kind = s.execute(sa.select(Job.kind).where(Job.id == job_id)).scalar()
    deleted = {k: _usage(s, k, _owned(k, ids)) for k in KINDS}
    for table in (Metric, Result, Checkpoint, Artifact):
        s.execute(sa.delete(table).where(table.job_id.in_(ids)))
    s.execute(sa.delete(Job).where(Job.id.in_(ids[1:]), Job.kind == "train"))
    s.execute(sa.delete(Job).where(Job.id.in_(ids[1:])))  # a suite's comparisons
    s.execute(sa.delete(Job).where(Job.id == job_id))
    return {"id": job_id, "kind": kind, "deleted": deleted}


# --------------------------------------------------------------------- gc
def collect(*, dry_run: bool = False, vacuum: bool = False,
            url: str | None = None) -> dict[str, Any]:
    """``gradq gc``: delete what finished jobs no longer need, in one transaction.

    - ``checkpoints``: of finished jobs that ``checkpoint_policy`` says will not resume
      (not a search trial waiting at a rung of an unfinished comparison);
    - ``datasets``: stored datasets that no job and no registered name refers to;
    - ``orphans``: rows whose job is gone (an interrupted delete, or rows deleted by hand
      with foreign keys off), and children whose parent is gone.

    Job rows that another transaction holds are skipped (PostgreSQL: SKIP LOCKED); a job
    that is queued or running is never touched, so a resuming job keeps its checkpoint.
    Returns ``{"dry_run", "freed": {kind: {"rows", "bytes"}}, "database", "vacuum"}``.
    """
    with session_scope(url) as s:
        dialect = s.get_bind().dialect.name
        if dialect == "sqlite":  # take the write lock before reading (see the module doc)
            s.execute(sa.update(Job).where(sa.false()).values(lease_token=Job.lease_token)
                      .execution_options(synchronize_session=False))
        freed: dict[str, dict[str, int]] = {}
        spent = _spent_checkpoints(s, dialect)
        freed["checkpoints"] = _usage(s, "checkpoints", Checkpoint.job_id.in_(spent))
        unused = ~Dataset.hash.in_(sa.select(Job.dataset_hash)
                                   .where(Job.dataset_hash.is_not(None))) & \
            ~Dataset.hash.in_(sa.select(DatasetName.hash))
        freed["datasets"] = _usage(s, "datasets", unused)
        orphan_jobs = Job.parent_id.is_not(None) & ~Job.parent_id.in_(
            sa.select(Job.id).scalar_subquery())
        orphans = {"jobs": orphan_jobs}
        live = sa.select(Job.id)
        for kind, table in (("metrics", Metric), ("results", Result),
                            ("checkpoints", Checkpoint), ("artifacts", Artifact)):
            orphans[kind] = ~table.job_id.in_(live)
        counted = {k: _usage(s, k, w) for k, w in orphans.items()}
        freed["orphans"] = {"rows": sum(c["rows"] for c in counted.values()),
                            "bytes": sum(c["bytes"] for c in counted.values())}
        if not dry_run:
            s.execute(sa.delete(Checkpoint).where(Checkpoint.job_id.in_(spent)))
            s.execute(sa.delete(Dataset).where(unused))
            # an orphaned child's own rows go with it (they are orphans once it is gone)
            gone = list(s.execute(sa.select(Job.id).where(orphan_jobs)).scalars())
            for table in (Metric, Result, Checkpoint, Artifact):
                s.execute(sa.delete(table).where(table.job_id.in_(gone)
                                                 | ~table.job_id.in_(live)))
            s.execute(sa.delete(Job).where(Job.id.in_(gone)))
    report: dict[str, Any] = {"dry_run": dry_run, "freed": freed, "database": dialect}
    report["vacuum"] = _vacuum(url, dialect, run=vacuum and not dry_run)
    return report


def _spent_checkpoints(s: Session, dialect: str) -> list[str]:
    """Ids of finished jobs holding checkpoints that will never be resumed from."""
    q = (sa.select(Job.id, Job.status, Job.spec, Job.parent_id)
         .where(Job.status.in_(list(FINISHED)),
                Job.id.in_(sa.select(Checkpoint.job_id).distinct())))
    if dialect == "postgresql":
        q = q.with_for_update(skip_locked=True, key_share=True)
    rows = s.execute(q).all()
    parents = {r.parent_id for r in rows if r.parent_id}
    parent_status = dict(s.execute(sa.select(Job.id, Job.status)
                                   .where(Job.id.in_(parents))).all()) if parents else {}
    return [r.id for r in rows if not checkpoint_policy.checkpoint_needed(
        r.status, json.loads(r.spec), parent_status.get(r.parent_id))]


def _vacuum(url: str | None, dialect: str, run: bool) -> dict[str, Any]:
    """SQLite: the free pages inside the file, and VACUUM when asked. PostgreSQL: what to
    run (space freed by DELETE is reused by later rows; only a rewrite returns it)."""
    engine = get_engine(url)
    if dialect == "sqlite":
        with engine.connect() as conn:
            page = conn.exec_driver_sql("PRAGMA page_size").scalar()
            free = conn.exec_driver_sql("PRAGMA freelist_count").scalar() * page
            size = conn.exec_driver_sql("PRAGMA page_count").scalar() * page
        out: dict[str, Any] = {"ran": False, "free_bytes": int(free), "file_bytes": int(size)}
        if run:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM")
                after = conn.exec_driver_sql("PRAGMA page_count").scalar() * page
            out.update(ran=True, file_bytes_after=int(after))
        else:
            out["hint"] = ("gradq gc --vacuum rewrites the SQLite file and returns its free "
                           "pages to the file system")
        return out
    out = {"ran": False, "hint": (
        "PostgreSQL reuses the freed space for new rows; to return it to the operating "
        "system run VACUUM FULL (it locks each table while it rewrites it) or pg_repack "
        "(online), e.g. psql -c 'VACUUM FULL metrics, checkpoints, artifacts, datasets'")}
    if run:  # plain VACUUM: marks the space reusable and updates statistics, no long lock
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("checkpoints", "artifacts", "datasets", "metrics", "results",
                          "jobs"):
                conn.exec_driver_sql(f"VACUUM (ANALYZE) {table}")
        out["ran"] = True
    return out
