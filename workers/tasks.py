"""Celery tasks. The worker imports this module; clients send ``gradq.run_job`` by name.

A pickle (or any non-JSON) message never reaches a task: ``accept_content=['json']`` makes
kombu refuse it before deserialization, and the worker logs the refusal and keeps running.
"""

from __future__ import annotations

import logging
import os

from celery.signals import worker_process_init, worker_process_shutdown
from gradq.service.celery_app import RUN_TASK, make_app
from gradq.service.store.db import dispose_engines
from gradq.workers import presence
from gradq.workers.runner import execute

log = logging.getLogger("gradq.worker")

app = make_app()


@worker_process_init.connect
def _after_fork(sender: object = None, **_: object) -> None:
    # A forked child must not reuse its parent's database connections; CUDA is first
    # touched here (naming the device for the pool table) or inside the task, so it is
    # initialised after the fork (docs/guarantees.md).
    dispose_engines()
    threads = os.environ.get("GRADQ_BLAS_THREADS")
    if threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(threads))
    _register(sender)


def _register(node: object) -> None:
    """This process's row in the pool table (``gradq workers``), renewed while it lives."""
    try:
        queues = list(app.amqp.queues.consume_from or ())
    except Exception:  # an app without a consumer set-up: the pool's own word, if any
        queues = None
    presence.start(node if isinstance(node, str) and node else None, queues or None)


@worker_process_shutdown.connect
def _before_exit(**_: object) -> None:
    presence.stop()


@app.task(name=RUN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True,
          ignore_result=True)
def run_job(self, job_id: str) -> str | None:  # noqa: ANN001 - Celery's bound task
    """Run one job; a second delivery of the same message finds it claimed and does nothing."""
    if not isinstance(job_id, str) or len(job_id) != 32:
        log.error("refusing a run_job message with a malformed job id: %r", job_id)
        return None
    worker = f"{self.request.hostname or 'worker'}-{os.getpid()}"
    me = presence.current()
    if me is not None:
        me.job_started(job_id)
    status = None
    try:
        status = execute(job_id, worker=worker, publish=True)
        return status
    finally:
        if me is not None:  # a message for a job another worker holds is not a job done
            me.job_ended(counted=status is not None)
