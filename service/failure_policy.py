"""The failure policy, in one place (after dramatiq's Retries middleware): retry, fail or
hand over.

The worker classifies what went wrong (``workers.failures.classify``: it knows CUDA and
NumPy errors); the store reads the attempts under the job's row lock and applies what
``decide`` answers. The sweeper asks the same question for a worker that stopped renewing
its lease. Pure: no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Failure(str, enum.Enum):
    """What kind of thing went wrong with a claimed job."""

    PERMANENT = "permanent"    # can never succeed: a bad spec, out of memory, a bug
    TRANSIENT = "transient"    # a database or broker blip: another attempt may succeed
    LEASE_LOST = "lease_lost"  # the job belongs to someone else now (swept, cancelled)
    LAPSED = "lapsed"          # its worker stopped renewing the lease (found by the sweeper)


class Action(str, enum.Enum):
    RETRY = "retry"      # back to queued: the next attempt runs it again
    FAIL = "fail"        # ends failed, with the error (and traceback) kept
    ABANDON = "abandon"  # write nothing: the job is not ours any more


@dataclass(frozen=True)
class Decision:
    """What to do, and the error to store with the job (None: store nothing)."""

    action: Action
    error: str | None


def decide(failure: Failure, error: str, attempts: int, max_attempts: int) -> Decision:
    """Retry, fail or abandon a job that met ``failure`` on its ``attempts``-th attempt.

    Transient failures and lapsed leases are retried while attempts are left; a permanent
    failure ends the job at once with ``error`` as the user's message; a lost lease is
    abandoned without another word to the database.
    """
    if failure is Failure.LEASE_LOST:
        return Decision(Action.ABANDON, None)
    if failure is Failure.PERMANENT:
        return Decision(Action.FAIL, error)
    if attempts < max_attempts:
        return Decision(Action.RETRY, error)
    if failure is Failure.LAPSED:
        return Decision(Action.FAIL, f"worker lost {attempts} times; gave up after "
                                     f"{attempts} attempts")
    return Decision(Action.FAIL, f"{error} (gave up after {attempts} attempts)")
