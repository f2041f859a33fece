"""Run one job by id: claim it, train with fenced writes and a live lease, store the end.

Used by the Celery task on workers and in-process by ``gradq run``. The lease is renewed
by a heartbeat thread and by every log write; when it is lost, the next write raises
``LeaseLost`` and the job is abandoned without another word to the database.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
from gradq.nn.backend import device_name, get_array_module
from gradq.service import jobs
from gradq.service.jobs import Lease, LeaseLost
from gradq.service.models import Job, JobStatus
from gradq.service.settings import get_settings

from .data import load_dataset, prepare_splits
from .failures import TRANSIENT, describe, is_out_of_memory, with_retries
from .faults import failpoint
from .methods import train
from .trainer import MetricRow

log = logging.getLogger("gradq.worker")


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{threading.get_native_id()}"


class Heartbeat(threading.Thread):
    """Renews the lease every lease/3 seconds while the job runs."""

    def __init__(self, lease: Lease, lease_s: float) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{lease.job_id[:8]}")
        self.lease = lease
        self.interval = max(0.2, lease_s / 3)
        self.stop = threading.Event()
        self.lost = threading.Event()
        self.cancel = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                if jobs.renew(self.lease):
                    self.cancel.set()
            except LeaseLost:
                self.lost.set()
                return
            except TRANSIENT as exc:  # keep trying; the sweeper decides when it has lapsed
                log.warning("heartbeat for %s failed: %s", self.lease.job_id, exc)


class DbHooks:
    """Trainer hooks that write through the lease, retrying transient database errors."""

    def __init__(self, lease: Lease, heartbeat: Heartbeat, lease_s: float,
                 observer: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.lease = lease
        self.observer = observer
        self.heartbeat = heartbeat
        self.deadline = 4 * lease_s

    def log(self, rows: list[MetricRow], progress: dict[str, Any]) -> bool:
        if self.heartbeat.lost.is_set():
            raise LeaseLost(f"job {self.lease.job_id}: lease lost")
        failpoint("metrics")
        cancel = with_retries(lambda: jobs.log(self.lease, rows, progress),
                              deadline_s=self.deadline, what="writing metrics")
        failpoint("metrics_written")
        if self.observer is not None:
            self.observer(progress)
        return cancel or self.heartbeat.cancel.is_set()

    def checkpoint(self, epoch: int, step: int, data: bytes) -> None:
        failpoint("checkpoint")
        with_retries(lambda: jobs.save_checkpoint(self.lease, epoch, step, data),
                     deadline_s=self.deadline, what="writing a checkpoint")


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def execute(job_id: str, worker: str | None = None, device: str | None = None,
            observer: Callable[[dict[str, Any]], None] | None = None,
            publish: bool = False) -> str | None:
    """Run ``job_id`` if it can be claimed; return its final status, or None if not ours.

    ``observer`` sees each log interval's progress (``gradq run`` draws it). With
    ``publish``, jobs that this one's end creates (a grid's final runs) are sent to the
    queue at once; otherwise the caller (or the sweeper) runs or publishes them.
    """
    settings = get_settings()
    worker = worker or default_worker_name()
    lease = jobs.claim(job_id, worker)
    if lease is None:
        log.info("job %s not claimed (not queued, or another worker has it)", job_id)
        return None
    hb = Heartbeat(lease, settings.lease_s)
    hb.start()
    try:
        return _run_claimed(lease, hb, device or settings.device, settings.lease_s, observer,
                            publish)
    except LeaseLost:
        log.warning("job %s: lease lost; abandoning it", job_id)
        return None
    finally:
        hb.stop.set()


def _run_claimed(lease: Lease, hb: Heartbeat, device_pref: str, lease_s: float,
                 observer: Callable[[dict[str, Any]], None] | None, publish: bool) -> str:
    job = _load_job(lease.job_id)
    spec = json.loads(job.spec)
    try:
        xp = get_array_module(device_pref if spec["device"] == "auto" else spec["device"])
        jobs.set_device(lease, device_name(xp))
        ds = load_dataset(spec, job.dataset_hash)
        fold = tuple(spec["_fold"]) if spec.get("_fold") else None
        data = prepare_splits(spec, ds, fold)
        hooks = DbHooks(lease, hb, lease_s, observer)
        resume = jobs.latest_checkpoint(lease.job_id)
        if resume is not None:
            log.info("job %s resumes from epoch %d (step %d)", lease.job_id, resume[0],
                     resume[1])
        outcome = train(spec, data, xp, hooks, resume[2] if resume else None)
    except LeaseLost:
        raise
    except TRANSIENT as exc:
        status = jobs.release(lease, describe(exc), traceback.format_exc())
        log.warning("job %s: transient error, now %s: %s", lease.job_id, status.value, exc)
        return status.value
    except Exception as exc:
        log.exception("job %s failed", lease.job_id)
        jobs.finish(lease, JobStatus.FAILED, error=describe(exc),
                    traceback=traceback.format_exc())
        if is_out_of_memory(exc):
            _free_device_memory(xp if "xp" in locals() else None)
        return JobStatus.FAILED.value
    timing = {"queued_s": _queued_s(job), "run_s": round(outcome.run_s, 6),
              "samples_per_s": round(outcome.samples / outcome.run_s, 1)
              if outcome.run_s > 0 else None}
    result = {"final": outcome.final, "timing": timing, "params": outcome.params,
              "extra": outcome.extra}
    status = JobStatus(outcome.status)
    artifacts = {"model": _npz(outcome.arrays), "initial": _npz(outcome.initial)}
    new = with_retries(lambda: jobs.finish(lease, status, result=result, artifacts=artifacts,
                                           error=outcome.error, metrics=outcome.last_rows,
                                           progress=outcome.progress),
                       deadline_s=4 * lease_s, what="storing the result")
    if publish and new:
        _publish(new)
    return status.value


def _publish(job_ids: list[str]) -> None:
    """Send new jobs to the queue; if the broker is down, the sweeper publishes them later."""
    from gradq.service.celery_app import send_job

    try:
        for job_id, queue, priority in jobs.runnable(job_ids):
            send_job(job_id, queue, priority)
        jobs.mark_enqueued(job_ids)
    except TRANSIENT as exc:
        log.warning("could not publish %d new job(s) now (%s); the sweeper will", len(job_ids),
                    exc)


def _load_job(job_id: str) -> Job:
    from gradq.service.db import session_scope

    with session_scope() as s:
        job = s.get(Job, job_id)
        s.expunge(job)
        return job


def _queued_s(job: Job) -> float | None:
    created, started = jobs.to_utc(job.created_at), jobs.to_utc(job.started_at)
    if created is None or started is None:
        return None
    return round((started - created).total_seconds(), 6)


def _free_device_memory(xp: Any) -> None:
    try:
        if xp is not None and xp.__name__ == "cupy":
            xp.get_default_memory_pool().free_all_blocks()
    except Exception:  # best effort after an out-of-memory error
        pass
