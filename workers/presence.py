"""A worker process's row in the pool (``gradq workers``): register, heartbeat, stop.

Each Celery execution process (one per GPU; ``--concurrency`` of them for the CPU worker)
registers under the name its jobs carry in ``jobs.worker`` (``<node>-<pid>``), renews its
heartbeat every lease/3 seconds from a thread, and says which job it runs. A failure to
report is logged and never touches a job: the row is a view, the lease is the truth.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from gradq.nn.backend import gpu_name
from gradq.service.settings import get_settings
from gradq.service.store import workers as store
from gradq.workers.failures import TRANSIENT

log = logging.getLogger("gradq.worker")

NODE_ENV = "GRADQ_WORKER_NODE"  # the Celery node name, set by the pool (or at worker setup)
QUEUES_ENV = "GRADQ_WORKER_QUEUES"


def worker_host() -> str:
    """This host's name in the pool: ``GRADQ_WORKER_HOST``, else the system's host name."""
    return os.environ.get("GRADQ_WORKER_HOST") or socket.gethostname()


def device_label(device_pref: str) -> str:
    """What this process computes on: ``cuda:N (NVIDIA H200)`` or ``cpu``.

    N is the physical index where ``CUDA_VISIBLE_DEVICES`` pins one GPU (as the pool does),
    so two workers of one host show ``cuda:0`` and ``cuda:1``.
    """
    if device_pref == "cpu":
        return "cpu"
    name = gpu_name()
    if name is None:
        return "cpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    index = visible if visible.isdigit() else "0"
    return f"cuda:{index} ({name})"


class Presence(threading.Thread):
    """Registers this process and renews its row until :meth:`close`."""

    def __init__(self, name: str, queues: list[str], device: str, lease_s: float) -> None:
        super().__init__(daemon=True, name="presence")
        self.worker = name
        self.queues = queues
        self.device = device
        self.interval = max(0.2, lease_s / 3)
        self.halt = threading.Event()

    def _register(self) -> None:
        store.register(self.worker, worker_host(), os.getpid(), self.queues, self.device)

    def run(self) -> None:
        registered = False
        while True:
            try:
                if not registered:
                    self._register()
                    registered = True
                elif not store.beat(self.worker):
                    registered = False  # pruned while we were away: register again
                    continue
            except TRANSIENT as exc:
                log.warning("worker heartbeat failed: %s", exc)
            except Exception:  # a view of the pool must never stop a worker
                log.exception("worker heartbeat failed")
            if self.halt.wait(self.interval):
                return

    def report(self, fn, *args: object) -> None:  # noqa: ANN001 - a store function
        try:
            fn(self.worker, *args)
        except Exception as exc:  # transient or not: the job goes on regardless
            log.warning("worker %s could not report to the pool table: %s", self.worker, exc)

    def job_started(self, job_id: str) -> None:
        self.report(store.job_started, job_id)

    def job_ended(self, counted: bool = True) -> None:
        self.report(store.job_ended, counted)

    def close(self) -> None:
        self.halt.set()
        self.report(store.stopped)


_current: Presence | None = None


def start(node: str | None = None, queues: list[str] | None = None) -> Presence:
    """Register this execution process (after the fork) and start its heartbeat."""
    global _current
    settings = get_settings()
    node = node or os.environ.get(NODE_ENV) or f"celery@{worker_host()}"
    qs = queues if queues is not None else [
        q for q in os.environ.get(QUEUES_ENV, "").split(",") if q]
    _current = Presence(f"{node}-{os.getpid()}", qs, device_label(settings.device),
                        settings.lease_s)
    _current.start()
    return _current


def current() -> Presence | None:
    """This process's presence, if it registered."""
    return _current


def stop() -> None:
    """Mark this process stopped (a clean shutdown)."""
    global _current
    if _current is not None:
        _current.close()
        _current = None
