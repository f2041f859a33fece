"""A job's status: the one enumeration every floor uses (after rq's ``JobStatus``).

Kept free of imports (no SQLAlchemy) so that ``gradq --help`` can offer the statuses as
choices without loading the store.
"""

from __future__ import annotations

import enum


class JobStatus(str, enum.Enum):
    """A job's lifecycle: queued → running → one of the four ends (or back to queued)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DIVERGED = "diverged"
    CANCELLED = "cancelled"


#: the four ends of a job
FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DIVERGED,
                      JobStatus.CANCELLED})
#: statuses of a job that is not over yet
LIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
#: the ends from which ``gradq retry`` queues a job again
RETRYABLE = (JobStatus.FAILED, JobStatus.DIVERGED, JobStatus.CANCELLED)
#: every status's name, in lifecycle order (CLI choices, the dashboard's filter)
NAMES = tuple(s.value for s in JobStatus)
FINISHED_NAMES = frozenset(s.value for s in FINISHED)
