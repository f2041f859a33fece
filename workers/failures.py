"""What went wrong, in the worker's words: classifying errors for the failure policy.

The decision (retry, fail or hand over) is ``service.failure_policy.decide``'s; this module
knows the errors that need the worker's libraries to recognise (CUDA and NumPy out of
memory, database and broker blips) and says which ``Failure`` each is, how to describe it
to the user in one line, and retries a single write through a transient blip with bounded
exponential backoff.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from gradq.service.failure_policy import Failure
from gradq.service.store.db import SchemaError, ServiceUnavailable
from gradq.service.store.leases import LeaseLost

log = logging.getLogger("gradq.worker")

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (ServiceUnavailable, ConnectionError, TimeoutError)


def classify(exc: BaseException) -> Failure:
    """The kind of failure ``exc`` is: a lost lease, a transient blip, or permanent
    (anything else, out of memory included: the same batch would not fit again)."""
    if isinstance(exc, LeaseLost):
        return Failure.LEASE_LOST
    if isinstance(exc, TRANSIENT):
        return Failure.TRANSIENT
    return Failure.PERMANENT


def is_out_of_memory(exc: BaseException) -> bool:
    name = type(exc).__name__
    return isinstance(exc, MemoryError) or name in ("OutOfMemoryError",) or (
        "out of memory" in str(exc).lower())


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of ``exc``'s message, or "" (a bare ``MemoryError()`` has
    none: the handler must not fail on it and leave the job running)."""
    return next((line for line in str(exc).splitlines() if line.strip()), "").strip()


def describe(exc: BaseException) -> str:
    """One line for the user: what went wrong and, where we know, what to do."""
    name, first = type(exc).__name__, _first_line(exc)
    named = f"{name}: {first}" if first else name
    if is_out_of_memory(exc):
        return ("out of memory on the device: lower training.batch_size or the width of "
                f"model.hidden ({named[:200]})")
    if isinstance(exc, ValueError | SchemaError) and first:
        return str(exc)
    return f"{name}: {exc}" if first else name


def with_retries(fn: Callable[[], T], *, deadline_s: float, what: str,
                 first_delay: float = 0.25, max_delay: float = 8.0) -> T:
    """Call ``fn``, retrying transient errors with exponential backoff until ``deadline_s``."""
    delay = first_delay
    start = time.monotonic()
    while True:
        try:
            return fn()
        except LeaseLost:
            raise
        except TRANSIENT as exc:
            if time.monotonic() - start + delay > deadline_s:
                raise
            log.warning("%s failed (%s); retrying in %.2f s", what, exc, delay)
            time.sleep(delay)
            delay = min(max_delay, delay * 2)
