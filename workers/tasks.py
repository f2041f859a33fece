"""Celery tasks. The worker imports this module; clients send ``gradq.run_job`` by name.

A pickle (or any non-JSON) message never reaches a task: ``accept_content=['json']`` makes
kombu refuse it before deserialization, and the worker logs the refusal and keeps running.
"""

from __future__ import annotations

import logging
import os

from celery.signals import worker_process_init
from gradq.service.celery_app import RUN_TASK, make_app
from gradq.service.store.db import dispose_engines
from gradq.workers.runner import execute

log = logging.getLogger("gradq.worker")

app = make_app()


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    # A forked child must not reuse its parent's database connections; CUDA is first
    # touched later, inside the task, so it is initialised after the fork (docs/guarantees.md).
    dispose_engines()
    threads = os.environ.get("GRADQ_BLAS_THREADS")
    if threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(threads))


@app.task(name=RUN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True,
          ignore_result=True)
def run_job(self, job_id: str) -> str | None:  # noqa: ANN001 - Celery's bound task
    """Run one job; a second delivery of the same message finds it claimed and does nothing."""
    if not isinstance(job_id, str) or len(job_id) != 32:
        log.error("refusing a run_job message with a malformed job id: %r", job_id)
        return None
    worker = f"{self.request.hostname or 'worker'}-{os.getpid()}"
    return execute(job_id, worker=worker, publish=True)
