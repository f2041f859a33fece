"""Applying a comparison's decisions under its row lock, in the transaction of a child's end.

What to decide is ``service.experiments.settling``'s (and ``compare.advance``'s); here the
comparison's row is locked, its children read, and the answer written: final runs added,
search trials promoted, pruned checkpoints dropped, the comparison ended.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from gradq.service.experiments import settling
from gradq.service.status import FINISHED, JobStatus
from gradq.service.store import checkpoint_policy
from gradq.service.store.clock import db_now, read_now
from gradq.service.store.create import add_job
from gradq.service.store.encoding import dumps
from gradq.service.store.models import Checkpoint, Job, Result
from sqlalchemy.orm import Session


def settle_parent(s: Session, job_id: str) -> list[str]:
    """``settle`` the comparison ``job_id`` belongs to, if any. Returns new job ids.

    Only a child whose end may decide something (``settling.may_decide``) decides, and
    only once no sibling of the same arm and phase is still to end: that is checked first,
    in SQL on the stored (canonical) spec text, so that the other ends skip the decision
    step."""
    row = s.execute(sa.select(Job.parent_id, Job.spec).where(Job.id == job_id)).first()
    if row is None or row.parent_id is None:
        return []
    spec = json.loads(row.spec)
    decide = False
    if settling.may_decide(spec):
        # the parent's lock first: on PostgreSQL two siblings ending at once would each
        # count the other as unfinished (neither committed), and neither would decide
        lock_parent(s, row.parent_id)
        same = [Job.spec.contains(f'"_arm_index":{int(spec["_arm_index"])},', autoescape=True),
                Job.spec.contains(f'"_phase":"{spec["_phase"]}"', autoescape=True)]
        waiting = s.execute(sa.select(sa.func.count()).select_from(Job).where(
            Job.parent_id == row.parent_id, Job.status.not_in(list(FINISHED)), *same)).scalar()
        decide = not waiting
    return settle(s, row.parent_id, decide)


def lock_parent(s: Session, parent_id: str) -> Job:
    """The comparison's row, locked for this transaction and read afresh (see ``settle``)."""
    return s.execute(sa.select(Job).where(Job.id == parent_id)
                     .with_for_update(key_share=True)
                     .execution_options(populate_existing=True)).scalar_one()


def settle(s: Session, parent_id: str, decide: bool = True) -> list[str]:
    """Finish a comparison when its last child has finished (determined in SQL), or, when
    that child ends a grid's tuning phase, add the final runs. Returns new job ids."""
    # lock the parent row so that two children finishing at once serialize here. FOR NO KEY
    # UPDATE, not FOR UPDATE: each child's own status update already holds a KEY SHARE lock
    # on the parent (PostgreSQL's foreign-key check on parent_id), which FOR UPDATE would
    # wait on, so two children finishing together deadlocked.
    # populate_existing: read the locked row afresh, not the session's copy (cancel() has
    # the parent loaded from before its own UPDATE, and settled a cancelled one as failed)
    parent = lock_parent(s, parent_id)
    if JobStatus(parent.status) in FINISHED:
        return []
    new = [] if parent.cancel_requested or not decide else _advance(s, parent)
    counts = dict(s.execute(sa.select(Job.status, sa.func.count())
                            .where(Job.parent_id == parent_id).group_by(Job.status)).all())
    end = settling.conclusion({JobStatus(k): v for k, v in counts.items()},
                              bool(parent.cancel_requested))
    if new or end is None:
        return new
    status, error = end
    s.execute(sa.update(Job).where(Job.id == parent_id)
              .values(status=status, finished_at=db_now(s), error=error)
              .execution_options(synchronize_session=False))
    if status is JobStatus.SUCCEEDED:  # a cancelled or failed search may be retried
        checkpoint_policy.drop_after_settling(s, parent_id)
    if parent.parent_id is not None:  # a suite's comparison: the suite may end with it
        settle_suite(s, parent.parent_id)
    return []


def settle_suite(s: Session, suite_id: str) -> None:
    """Finish a suite when its last comparison has finished (docs/suites.md): succeeded if any
    workload's comparison succeeded, failed if none did, cancelled if it was cancelled."""
    from gradq.service.experiments.suite import settle_status

    suite = lock_parent(s, suite_id)
    if JobStatus(suite.status) in FINISHED:
        return
    counts = dict(s.execute(sa.select(Job.status, sa.func.count())
                            .where(Job.parent_id == suite_id).group_by(Job.status)).all())
    counts = {JobStatus(k).value: v for k, v in counts.items()}
    if any(JobStatus(k) not in FINISHED for k in counts):
        return
    status, error = settle_status(counts, bool(suite.cancel_requested))
    s.execute(sa.update(Job).where(Job.id == suite_id)
              .values(status=JobStatus(status), finished_at=db_now(s), error=error)
              .execution_options(synchronize_session=False))


def _advance(s: Session, parent: Job) -> list[str]:
    """Apply what the comparison's tuning can now decide (``settling.plan``), under the
    parent's row lock held by ``settle``: add final runs, promote search trials to their
    next rung (succeeded → queued, a larger epoch budget; they resume from their
    checkpoint), drop pruned trials' checkpoints, and record it all in the parent's
    progress. Returns the ids to publish (new and promoted jobs)."""
    from gradq.service.experiments.compare import Kid

    spec = json.loads(parent.spec)
    if not settling.tunes(spec):
        return []
    rows = s.execute(sa.select(Job.id, Job.spec, Job.status, Result.final, Result.timing)
                     .outerjoin(Result, Result.job_id == Job.id)
                     .where(Job.parent_id == parent.id)).all()
    kids = [Kid(r.id, json.loads(r.spec), JobStatus(r.status).value,
                json.loads(r.final) if r.final else None,
                json.loads(r.timing) if r.timing else None) for r in rows]
    plan = settling.plan(spec, kids, json.loads(parent.progress or "{}"))
    if not plan.changed:
        return []
    s.execute(sa.update(Job).where(Job.id == parent.id).values(progress=dumps(plan.progress))
              .execution_options(synchronize_session=False))
    specs = {k.id: k.spec for k in kids}
    ids: list[str] = []
    for job_id, epochs in sorted(plan.promote.items()):
        child = specs[job_id]
        child["training"]["epochs"] = epochs
        won = s.execute(sa.update(Job)
                        .where(Job.id == job_id, Job.parent_id == parent.id,
                               Job.status == JobStatus.SUCCEEDED)
                        .values(status=JobStatus.QUEUED, spec=dumps(child), attempts=0,
                                finished_at=None, error=None, traceback=None, worker=None,
                                enqueued_at=None)
                        .execution_options(synchronize_session=False))
        if won.rowcount:
            ids.append(job_id)
    if plan.drop_checkpoints:
        s.execute(sa.delete(Checkpoint).where(Checkpoint.job_id.in_(plan.drop_checkpoints)))
    now = read_now(s) if plan.new else None
    for j in plan.new:
        add_job(s, j, parent.id, parent.dataset_hash, parent.priority, parent.max_attempts,
                ids, now)
    return ids
