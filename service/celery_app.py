"""The Celery application and the one function that sends a job to the queue (docs/guarantees.md).

JSON only (a pickle payload is refused before it is deserialized), late acknowledgement,
prefetch of one, rejection on worker loss. The broker is not trusted for exactly-once
delivery: the job row is the truth and a worker claims it by compare-and-set. The service
sends tasks by name and never imports the workers.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import TYPE_CHECKING

from gradq.service.settings import get_settings, redact

if TYPE_CHECKING:  # Celery is imported where an app is made: `gradq run` never makes one
    from celery import Celery

RUN_TASK = "gradq.run_job"
QUEUES = ("gpu", "cpu", "auto")  # device: cuda → gpu, cpu → cpu, auto → either worker kind
MAX_PRIORITY = 9
PRIORITY_SEP = ":"  # Celery's Redis transport keeps priority p > 0 of queue q in "q:p"


def queue_for(device: str) -> str:
    return {"cuda": "gpu", "cpu": "cpu"}.get(device, "auto")


def make_app(broker_url: str | None = None, lease_s: float | None = None) -> Celery:
    """A configured Celery app; workers and clients build the same one."""
    from celery import Celery
    from kombu import Queue

    s = get_settings()
    app = Celery("gradq", broker=broker_url or s.broker_url, set_as_current=False)
    if lease_s is not None:
        s = dataclasses.replace(s, lease_s=lease_s)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        # task events feed Flower; a large pool turns them off with the workers' heartbeat
        # events (GRADQ_WORKER_EVENTS=0): `gradq workers` reads the database instead
        worker_send_task_events=s.worker_events,
        task_send_sent_event=s.worker_events,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_queues=[Queue(q, routing_key=q) for q in QUEUES],
        task_default_queue="auto",
        task_queue_max_priority=MAX_PRIORITY,
        task_default_priority=0,
        broker_transport_options={
            # Redis redelivers a message not acknowledged for this long (acks are late: a
            # job's message is acknowledged when it ends). The lease sweeper hands a dead
            # worker's job over sooner, and the claim makes a second delivery a no-op;
            # submit refuses a time_limit_s that would outlast it (docs/queue.md).
            "visibility_timeout": int(s.broker_visibility_s),
            "priority_steps": list(range(MAX_PRIORITY + 1)),
            "sep": PRIORITY_SEP,
            "queue_order_strategy": "priority",
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
            "retry_on_timeout": True,
        },
        broker_pool_limit=4,
    )
    return app


@lru_cache(maxsize=4)
def _client_app(broker_url: str) -> Celery:
    return make_app(broker_url)


def _broker_error(url: str, exc: BaseException):
    from gradq.service.store.db import ServiceUnavailable

    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ServiceUnavailable(f"broker {redact(url)} is unreachable ({redact(reason)}): "
                              "start Redis (redis-server) or set GRADQ_BROKER_URL")


def ping_broker(broker_url: str | None = None) -> None:
    """Raise ServiceUnavailable unless the broker answers (checked before storing a job)."""
    url = broker_url or get_settings().broker_url
    try:
        with _client_app(url).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0.2, timeout=5)
    except Exception as exc:
        raise _broker_error(url, exc) from exc


def send_job(job_id: str, queue: str, priority: int = 0, broker_url: str | None = None) -> None:
    """Publish one run message for ``job_id``; raises ServiceUnavailable if the broker is down.

    ``priority`` is the user's 0–9, higher runs sooner; Celery's Redis transport pops the
    lowest number first, hence the flip.
    """
    url = broker_url or get_settings().broker_url
    app = _client_app(url)
    try:
        app.send_task(RUN_TASK, args=[job_id], queue=queue, routing_key=queue,
                      priority=MAX_PRIORITY - max(0, min(MAX_PRIORITY, int(priority))),
                      retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2,
                                                "interval_step": 0.5, "interval_max": 1.0})
    except Exception as exc:  # kombu raises OperationalError and friends
        raise _broker_error(url, exc) from exc
