"""The failure policy, in one place (after dramatiq's Retries middleware).

Errors that can never succeed end the job at once with a clear message; transient ones
(a database or broker blip) are retried with bounded exponential backoff. A lost lease is
neither: the job belongs to someone else now, so the worker abandons it silently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from gradq.service.store.db import SchemaError, ServiceUnavailable
from gradq.service.store.jobs import LeaseLost

log = logging.getLogger("gradq.worker")

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (ServiceUnavailable, ConnectionError, TimeoutError)


class Permanent(Exception):
    """Raised for a job that cannot succeed: its message is shown to the user as is."""


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
    if isinstance(exc, Permanent | ValueError | SchemaError) and first:
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
