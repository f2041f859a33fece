"""Service steps that a command asks for in one call, beyond storing and reading jobs."""

from __future__ import annotations

from gradq.service.celery_app import ping_broker
from gradq.service.publish import publish
from gradq.service.store import actions, queries


def retry(job: str) -> tuple[str, list[str]]:
    """Queue a failed, diverged or cancelled job (a comparison: its unfinished children)
    again and publish it; returns (the job's full id, the ids requeued).

    An unknown id is a usage error whether the broker is up or not; the broker is checked
    before anything changes."""
    job_id = queries.resolve_id(job)
    ping_broker()
    todo = actions.retry(job_id)
    publish(todo)
    return job_id, [t[0] for t in todo]
