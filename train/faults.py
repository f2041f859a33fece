"""Failpoints: let the fault-injection suite kill a worker at a named point (after etcd's
gofail). ``GRADQ_FAILPOINTS="checkpoint:2,metrics:5"`` makes the process SIGKILL itself
the 2nd time it reaches ``checkpoint`` (before the write) or the 5th time at ``metrics``.
The plan is read once per process; unset — always, outside tests — a failpoint costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}
_cached: dict[str, int] | None = None


def _plan() -> dict[str, int]:
    global _cached
    if _cached is None:
        _cached = _parse()
    return _cached


def _parse() -> dict[str, int]:
    raw = os.environ.get("GRADQ_FAILPOINTS", "")
    plan = {}
    for part in raw.split(","):
        name, _, n = part.strip().partition(":")
        if name:
            plan[name] = int(n or 1)
    return plan


def failpoint(name: str) -> None:
    """Die here (SIGKILL, no cleanup) if the plan says this is the hit to die on."""
    plan = _plan()
    if name not in plan:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == plan[name]:
        os.kill(os.getpid(), signal.SIGKILL)
