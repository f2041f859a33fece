"""Run one job by id: claim it, train with fenced writes and a live lease, store the end.

Used by the Celery task on workers and in-process by ``gradq run``. The lease is renewed
by a heartbeat thread and by every log write; when it is lost, the next write raises
``LeaseLost`` and the job is abandoned without another word to the database.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gradq.nn.backend import device_name, get_array_module, gpu_problem
from gradq.service.failure_policy import Failure
from gradq.service.settings import Settings, get_settings
from gradq.service.status import JobStatus
from gradq.service.store import leases, writes
from gradq.service.store.encoding import to_utc
from gradq.service.store.leases import Lease, LeaseLost
from gradq.service.store.models import Job
from gradq.train import replicas
from gradq.train.interface import Outcome, ReplicaEnd
from gradq.train.loop import npz_bytes
from gradq.train.methods import train
from gradq.workers.data import load_dataset, prepare_splits
from gradq.workers.failures import TRANSIENT, classify, describe, is_out_of_memory, with_retries
from gradq.workers.hooks import BatchDbHooks, DbHooks, Heartbeat

log = logging.getLogger("gradq.worker")


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{threading.get_native_id()}"


def execute(job_id: str, worker: str | None = None, device: str | None = None,
            observer: Callable[[dict[str, Any]], None] | None = None,
            publish: bool = False, batch: bool = True) -> str | None:
    """Run ``job_id`` if it can be claimed; return its final status, or None if not ours.

    ``observer`` sees each log interval's progress (``gradq run`` draws it). With
    ``publish``, jobs that this one's end creates (a grid's final runs) are sent to the
    queue at once; otherwise the caller (or the sweeper) runs or publishes them. With
    ``batch``, a comparison child takes queued siblings that can train beside it as
    stacked replicas (``replicas``), each under its own lease, and runs them together.
    """
    settings = get_settings()
    worker = worker or default_worker_name()
    # a database blip must not drop the message: retry the claim as any transient write
    lease = with_retries(lambda: leases.claim(job_id, worker), deadline_s=4 * settings.lease_s,
                         what="claiming a job")
    if lease is None:
        log.info("job %s not claimed (not queued, or another worker has it)", job_id)
        return None
    hb = Heartbeat(lease, settings.lease_s)
    hb.start()
    device_pref = device or settings.device
    try:
        job = _load_job(lease.job_id)
        if batch:
            status = _run_batch(lease, hb, job, device_pref, settings, observer, publish)
            if status is not None:
                return None if status is _LOST else status
        status = _run_claimed(lease, hb, device_pref, settings, observer, publish, job)
        return None if status is _LOST else status
    except LeaseLost:
        _abandon(job_id)
        return None
    finally:
        hb.stop.set()


def _run_claimed(lease: Lease, hb: Heartbeat, device_pref: str, settings: Settings,
                 observer: Callable[[dict[str, Any]], None] | None, publish: bool,
                 job: Job | None = None, data: Any = None) -> str:
    """Train a claimed job alone (``data``: its splits, where already prepared)."""
    lease_s = settings.lease_s
    job = job or _load_job(lease.job_id)
    spec = json.loads(job.spec)
    try:
        xp = _array_module(spec, device_pref)
        leases.set_device(lease, device_name(xp))
        if data is None:
            data = _prepare(spec, job)
        hooks = DbHooks(lease, hb, lease_s, observer)
        resume = writes.latest_checkpoint(lease.job_id)
        if resume is not None:
            log.info("job %s resumes from epoch %d (step %d)", lease.job_id, resume[0],
                     resume[1])
        try:
            outcome = train(spec, data, xp, hooks, resume[2] if resume else None,
                            settings.checkpoint_interval_s)
        finally:
            hooks.writer.close()  # the run is over: let the last writes land
        hooks.close()  # raises what a write met: a lost lease, a database that stayed down
        _note_device(outcome, spec, device_pref, xp)
    except Exception as exc:  # the failure policy decides: retry, fail, or abandon
        if classify(exc) is Failure.PERMANENT:
            log.exception("job %s failed", lease.job_id)
        status = _end_with_error(lease, exc, traceback.format_exc())
        if is_out_of_memory(exc):
            _free_device_memory(xp if "xp" in locals() else None)
        return status
    return _store(lease, job, outcome, lease_s, publish)


def _end_with_error(lease: Lease, exc: BaseException, tb: str | None) -> str:
    """End a claimed job that raised ``exc`` as the failure policy decides
    (``service.failure_policy``): given back for another attempt, failed with its
    traceback, or abandoned when the lease was lost. Its new status (``_LOST``: not ours)."""
    failure = classify(exc)
    if failure is Failure.LEASE_LOST:
        return _abandon(lease.job_id)
    status = writes.end_failed(lease, failure, describe(exc), tb)
    if failure is Failure.TRANSIENT:
        log.warning("job %s: transient error, now %s: %s", lease.job_id, status.value, exc)
    return status.value


def _abandon(job_id: str) -> str:
    """A lost lease: the job belongs to someone else now; write nothing more."""
    log.warning("job %s: lease lost; abandoning it", job_id)
    return _LOST


def timing_of(outcome: Outcome, queued_s: float | None, stacked: int) -> dict[str, Any]:
    """A result's ``timing``. ``run_s`` counts every run of the job (a resumed one adds the
    seconds before its checkpoint); ``samples_per_s`` is this run's samples over this run's
    own seconds, which a resumed run also records as ``session_s``."""
    session = outcome.run_s if outcome.session_s is None else outcome.session_s
    timing = {"queued_s": queued_s, "run_s": round(outcome.run_s, 6),
              "samples_per_s": round(outcome.samples / session, 1) if session > 0 else None,
              "stacked": stacked}
    if outcome.session_s is not None:
        timing["session_s"] = round(outcome.session_s, 6)
    return timing


def _store(lease: Lease, job: Job, outcome: Outcome, lease_s: float, publish: bool,
           stacked: int = 1) -> str:
    """Write a run's end through its lease: result, artifacts, last metrics, status.
    ``stacked``: how many replicas trained together in its stack (1: alone)."""
    timing = timing_of(outcome, _queued_s(job), stacked)
    result = {"final": outcome.final, "timing": timing, "params": outcome.params,
              "extra": outcome.extra}
    status = JobStatus(outcome.status)
    artifacts = {"model": npz_bytes(outcome.arrays)}
    if job.parent_id is not None:  # a comparison child keeps its start (docs/guarantees.md): the
        artifacts["initial"] = npz_bytes(outcome.initial)  # paired design, checkable
    new = with_retries(lambda: writes.finish(lease, status, result=result, artifacts=artifacts,
                                           error=outcome.error, metrics=outcome.last_rows,
                                           progress=outcome.progress),
                       deadline_s=4 * lease_s, what="storing the result")
    if publish and new:
        _publish(new)
    return status.value


# ------------------------------------------------------------------ batched replicas
_LOST = "lost"  # _run_batch's answer when the leader's own lease was lost


@dataclass
class _Member:
    """One child of a batch: its lease, heartbeat, row, spec and prepared data."""

    lease: Lease
    hb: Heartbeat
    job: Job | None
    spec: dict[str, Any] | None
    data: Any = None
    lost: bool = False  # a write found its lease gone
    cancel: bool = False  # a write found cancellation requested


def _run_batch(lease: Lease, hb: Heartbeat, job: Job, device_pref: str, settings: Settings,
               observer: Callable[[dict[str, Any]], None] | None, publish: bool
               ) -> str | None:
    """Run the claimed child with the queued siblings that can batch with it.

    Returns the leader's final status (``_LOST`` if its lease was lost), or None when it
    cannot batch (or setting up the batch failed): then the caller runs the leader alone,
    as it would have anyway.
    """
    lease_s = settings.lease_s
    spec = json.loads(job.spec)
    key = replicas.batch_key(spec)
    if job.parent_id is None or key is None:
        return None
    try:
        if writes.latest_checkpoint(lease.job_id) is not None:
            return None  # a resumed child continues alone from its checkpoint
    except TRANSIENT as exc:  # the single path retries the database, or gives the job back
        log.info("job %s: not batching (%s)", lease.job_id, describe(exc))
        return None
    try:
        xp = _array_module(spec, device_pref)
        leader = _Member(lease, hb, job, spec, _prepare(spec, job))
    except Exception as exc:  # the job's own problem: its single run meets it and fails
        log.info("job %s: not batching (%s)", lease.job_id, describe(exc))
        return None
    try:
        limit = replicas.max_replicas(spec, leader.data, xp, settings.max_replicas) - 1
        siblings = leases.claim_siblings(job.parent_id, lease.worker,
                                         lambda s: replicas.batch_key(s) == key, limit)
    except TRANSIENT as exc:
        log.info("job %s: not batching (%s)", lease.job_id, describe(exc))
        siblings = []
    except Exception:  # a bug in the batch path: say so loudly, then run the job alone
        log.exception("job %s: setting up a batch failed; running it alone", lease.job_id)
        siblings = []
    if not siblings:  # no sibling to batch with: alone, on the data prepared above
        return _run_claimed(lease, hb, device_pref, settings, observer, publish, job,
                            leader.data)
    members = [leader]
    alone: list[_Member] = []
    try:
        for sl in siblings:
            m = _Member(sl, Heartbeat(sl, lease_s), None, None)
            m.hb.start()
            try:
                m.job = _load_job(sl.job_id)
                m.spec = json.loads(m.job.spec)
                m.data = _prepare(m.spec, m.job)
                members.append(m)
            except Exception:  # its own run reports what is wrong with it
                alone.append(m)
        return _train_batch(members, alone, xp, device_pref, settings, observer, publish)
    finally:
        for m in [*members[1:], *alone]:
            m.hb.stop.set()


def _array_module(spec: dict[str, Any], device_pref: str) -> Any:
    """The array module a job runs on: its spec's device, or the worker's for ``auto``.
    ``cuda`` where no GPU is usable raises, with the reason: never the CPU instead."""
    return get_array_module(device_pref if spec["device"] == "auto" else spec["device"])


_warned_fallback = False  # the worker logs its fallback to the CPU once


def _note_device(outcome: Outcome, spec: dict[str, Any], device_pref: str, xp: Any) -> None:
    """A job that asked for ``auto`` and trained on NumPy records why no GPU was used
    (``extra.device_note`` of its result), and the worker says so once as a warning."""
    global _warned_fallback
    if (device_pref if spec["device"] == "auto" else spec["device"]) != "auto":
        return
    problem = gpu_problem() if xp.__name__ == "numpy" else None
    if problem is None:
        return
    outcome.extra["device_note"] = f"device auto: no usable GPU ({problem}); trained on the CPU"
    if not _warned_fallback:
        _warned_fallback = True
        log.warning("device auto falls back to the CPU (NumPy): %s", problem)


def _prepare(spec: dict[str, Any], job: Job) -> Any:
    ds = load_dataset(spec, job.dataset_hash)
    fold = tuple(spec["_fold"]) if spec.get("_fold") else None
    return prepare_splits(spec, ds, fold)


def _train_batch(members: list[_Member], alone: list[_Member], xp: Any, device_pref: str,
                 settings: Settings, observer: Callable[[dict[str, Any]], None] | None,
                 publish: bool) -> str:
    lease_s = settings.lease_s
    statuses: dict[str, str | None] = {}
    held = []
    for m in members:
        try:
            leases.set_device(m.lease, device_name(xp))
            held.append(m)
        except LeaseLost:
            statuses[m.lease.job_id] = _abandon(m.lease.job_id)
        except TRANSIENT:  # its own run retries, or gives it back
            alone.append(m)
    log.info("training %d replicas together: %s", len(held),
             ", ".join(m.lease.job_id for m in held))
    hooks = BatchDbHooks(held, lease_s, observer)
    try:
        ends = replicas.ReplicaTrainer([m.spec for m in held], [m.data for m in held], xp,
                                       hooks, settings.checkpoint_interval_s
                                       ).run() if held else []
    except replicas.Incompatible as exc:  # splits of unequal shape: each runs alone
        log.info("not batching %d replicas (%s)", len(held), exc)
        alone, ends = [*held, *alone], []
    except Exception as exc:
        if is_out_of_memory(exc):  # the stack did not fit: every member runs alone
            log.warning("batch of %d replicas ran out of memory (%s); running them one by "
                        "one", len(held), describe(exc))
            _free_device_memory(xp)
        else:  # a bug in the batch path: loudly, and the members still get their runs
            log.exception("batch of %d replicas failed; running them one by one",
                          len(held))
        alone, ends = [*held, *alone], []
    finally:
        hooks.close()
    if hooks.error is not None and ends:  # a batch write failed past its retries
        tb = "".join(traceback.format_exception(hooks.error))
        ends = [ReplicaEnd(error=hooks.error, traceback=tb) for _ in ends]
    for m, end in zip(held, ends, strict=False):
        if end.outcome is not None:
            _note_device(end.outcome, m.spec, device_pref, xp)
        statuses[m.lease.job_id] = _end_replica(m, end, lease_s, publish, len(held))
    for m in alone:
        try:
            statuses[m.lease.job_id] = _run_claimed(m.lease, m.hb, device_pref, settings,
                                                    None, publish, m.job, m.data)
        except LeaseLost:
            statuses[m.lease.job_id] = _abandon(m.lease.job_id)
    return statuses.get(members[0].lease.job_id) or _LOST


def _end_replica(m: _Member, end: ReplicaEnd, lease_s: float, publish: bool,
                 stacked: int) -> str:
    """Store one replica's end through its own lease, as ``_run_claimed`` would."""
    job_id = m.lease.job_id
    try:
        if end.outcome is not None:
            return _store(m.lease, m.job, end.outcome, lease_s, publish, stacked)
        return _end_with_error(m.lease, end.error, end.traceback)
    except LeaseLost:
        return _abandon(job_id)
    except TRANSIENT as exc:  # the sweeper hands it over once its lease lapses
        log.warning("job %s: could not store its end (%s)", job_id, exc)
        return _LOST


def _publish(job_ids: list[str]) -> None:
    """Send new jobs to the queue; if the broker is down, the sweeper publishes them later."""
    from gradq.service.publish import publish_jobs  # Celery: only a pool worker sends

    try:
        publish_jobs(job_ids)
    except TRANSIENT as exc:
        log.warning("could not publish %d new job(s) now (%s); the sweeper will", len(job_ids),
                    exc)


def _load_job(job_id: str) -> Job:
    from gradq.service.store.db import session_scope

    with session_scope() as s:
        job = s.get(Job, job_id)
        s.expunge(job)
        return job


def _queued_s(job: Job) -> float | None:
    created, started = to_utc(job.created_at), to_utc(job.started_at)
    if created is None or started is None:
        return None
    return round((started - created).total_seconds(), 6)


def _free_device_memory(xp: Any) -> None:
    try:
        if xp is not None and xp.__name__ == "cupy":
            xp.get_default_memory_pool().free_all_blocks()
    except Exception:  # best effort after an out-of-memory error
        pass
