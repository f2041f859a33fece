"""``gradq worker``: a pool of Celery worker processes plus the lease sweeper.

One process per GPU, each pinned with ``CUDA_VISIBLE_DEVICES`` before it starts (so CUDA is
only ever initialised inside the pinned process), or CPU processes for NumPy work. The
supervisor itself never touches CUDA; it sweeps lapsed leases and lost messages.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from gradq.service.celery_app import MAX_PRIORITY, PRIORITY_SEP, send_job
from gradq.service.settings import get_settings
from gradq.service.store import sweeper
from gradq.service.store import workers as pool_table
from gradq.workers.failures import TRANSIENT
from gradq.workers.presence import NODE_ENV, QUEUES_ENV, worker_host

log = logging.getLogger("gradq.worker")


@dataclass(frozen=True)
class Member:
    """One Celery worker process of the pool."""

    name: str
    queues: tuple[str, ...]
    env: dict[str, str]
    concurrency: int


def plan(gpus: list[int] | None, cpu: bool, queues: tuple[str, ...] | None,
         concurrency: int) -> list[Member]:
    """Which processes to start: one per GPU, and/or one CPU worker of ``concurrency``."""
    host = f"{worker_host()}-{os.getpid()}"  # unique per pool: Flower tells them apart
    members: list[Member] = []
    cores = os.cpu_count() or 1
    for g in gpus or []:
        members.append(Member(f"gpu{g}@{host}", queues or ("gpu", "auto"),
                              {"CUDA_VISIBLE_DEVICES": str(g), "GRADQ_DEVICE": "cuda"}, 1))
    if cpu:
        threads = max(1, cores // concurrency)
        members.append(Member(f"cpu@{host}", queues or ("cpu", "auto"),
                              {"CUDA_VISIBLE_DEVICES": "", "GRADQ_DEVICE": "cpu",
                               "GRADQ_BLAS_THREADS": str(threads),
                               "OMP_NUM_THREADS": str(threads),
                               "OPENBLAS_NUM_THREADS": str(threads)}, concurrency))
    return members


def celery_command(m: Member, loglevel: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "gradq.workers.tasks", "worker",
            "--hostname", m.name, "--queues", ",".join(m.queues), "--concurrency",
            str(m.concurrency), "--pool", "prefork", "--loglevel", loglevel,
            "--without-gossip", "--without-mingle",
            *(() if get_settings().worker_events else ("--without-heartbeat",))]


def sweep_once(lease_s: float) -> int:
    """Requeue lapsed jobs and republish queued ones whose message may be lost."""
    frozen = sweeper.end_frozen_writers(lease_s)
    if frozen:
        log.warning("sweeper: ended %d database session(s) frozen inside a transaction "
                    "for over %g s (server pids %s)", len(frozen), lease_s,
                    ", ".join(map(str, frozen)))
    todo = sweeper.sweep(lease_s, queue_is_empty=broker_queue_is_empty)
    for job_id, queue, priority in todo:
        send_job(job_id, queue, priority)
    if todo:
        log.info("sweeper: published %d job(s) again", len(todo))
    pruned = pool_table.prune()
    if pruned:
        log.info("sweeper: forgot %d worker(s) gone for over a day", pruned)
    return len(todo)


def broker_queue_is_empty(queue: str) -> bool:
    """Whether the broker holds no message for ``queue`` (every priority level counted).

    Only Redis is asked; for another broker, or when it cannot be asked, the answer is
    True, so the sweeper errs on the side of publishing again.
    """
    url = get_settings().broker_url
    if not url.startswith(("redis://", "rediss://")):
        return True
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            keys = [queue, *(f"{queue}{PRIORITY_SEP}{i}" for i in range(1, MAX_PRIORITY + 1))]
            return sum(client.llen(k) for k in keys) == 0
        finally:
            client.close()
    except Exception:  # the broker is down or odd: publishing again is the safe side
        return True


class Sweeper(threading.Thread):
    def __init__(self, lease_s: float) -> None:
        super().__init__(daemon=True, name="sweeper")
        self.lease_s = lease_s
        self.stop = threading.Event()

    def run(self) -> None:
        interval = max(0.5, self.lease_s / 4)
        while not self.stop.wait(interval):
            try:
                sweep_once(self.lease_s)
            except TRANSIENT as exc:
                log.warning("sweeper: %s", exc)
            except Exception:  # keep sweeping; a bug here must not stop the pool
                log.exception("sweeper failed")


def run_pool(members: list[Member], loglevel: str = "INFO") -> int:
    """Start the members and the sweeper; restart a member that dies; stop on SIGTERM/INT."""
    settings = get_settings()
    procs: dict[str, subprocess.Popen] = {}
    stopping = threading.Event()

    def start(m: Member) -> None:
        env = {**os.environ, **m.env, NODE_ENV: m.name, QUEUES_ENV: ",".join(m.queues)}
        procs[m.name] = subprocess.Popen(celery_command(m, loglevel), env=env)
        log.info("started %s (pid %d) on queues %s", m.name, procs[m.name].pid,
                 ",".join(m.queues))

    def stop(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for m in members:
        start(m)
    sweeper = Sweeper(settings.lease_s)
    sweeper.start()
    try:
        while not stopping.wait(1.0):
            for m in members:
                code = procs[m.name].poll()
                if code is not None:
                    log.warning("%s exited with %d; restarting it", m.name, code)
                    time.sleep(1.0)
                    start(m)
    finally:
        sweeper.stop.set()
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
    return 0
