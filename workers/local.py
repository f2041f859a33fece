"""``gradq run``: stored jobs run in this process, as a worker would run them (no broker).

It lives in the job runtime, not in the service, because it calls the runner
(``service`` never imports ``workers``); the CLI only prints what it reports.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from gradq.service.store import create, queries
from gradq.workers.runner import execute

MAX_PAUSE_S = 8.0  # the longest pause before a given-back job runs again


def run_here(ids: list[str], observer: Callable[[dict[str, Any]], None],
             on_child: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run the jobs ``create`` stored (``[id]`` or ``[parent, children…]``) here until none
    is left to run; returns the result document of ``ids[0]``.

    A single job that a transient error gave back (its attempts counted) runs again after
    a pause that doubles up to ``MAX_PAUSE_S``. A comparison's children run until none is
    queued: a grid's final runs appear when its tuning runs are done, and a child takes its
    queued siblings that can train beside it as stacked replicas (as a worker does), so the
    queue is read again after each run. ``on_child`` hears of each child that starts:
    ``{"child", "phase", "queued", "ran"}`` (queued: it included; ran: children run before
    it here)."""
    worker = f"{socket.gethostname()}-local"
    delay = 0.5
    while len(ids) == 1:
        execute(ids[0], worker=worker, observer=observer)
        if queries.result(ids[0])["status"] != "queued":
            break
        time.sleep(delay)
        delay = min(MAX_PAUSE_S, 2 * delay)
    ran = 0
    while len(ids) > 1 and (todo := create.queued_children_phases(ids[0])):
        child, phase = todo[0]
        on_child({"child": child, "phase": phase, "queued": len(todo), "ran": ran})
        execute(child, worker=worker, observer=observer)
        ran += 1
    return queries.result(ids[0])
