"""Publishing jobs: send each one's message to the broker, then record that it was sent.

The one way a job reaches a queue (``gradq submit``, ``gradq retry``, a worker publishing
the final runs its end created). A message sent but not recorded is harmless (only one
claim can win); a job recorded as stored but never sent is found by the sweeper.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gradq.service.celery_app import send_job
from gradq.service.store import create


def publish(todo: Sequence[tuple[str, str, int]], url: str | None = None) -> list[str]:
    """Send each (job id, queue, priority) to the broker, then mark them enqueued.
    Returns the ids sent; a broker error propagates (the sweeper publishes them later)."""
    for job_id, queue, priority in todo:
        send_job(job_id, queue, priority)
    ids = [t[0] for t in todo]
    create.mark_enqueued(ids, url)
    return ids


def publish_jobs(job_ids: Iterable[str], url: str | None = None) -> list[str]:
    """``publish`` the runnable ones of ``job_ids`` (a comparison's parent is never sent)."""
    return publish(create.runnable(list(job_ids), url), url)
