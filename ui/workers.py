"""The pool's page (``/workers``) and its document (``/api/workers``, ``gradq workers --json``).

The rows come from the database (each worker process registers and heartbeats there), so
the page works without Flower or a Celery broadcast; it refreshes itself while shown.
"""

from __future__ import annotations

from typing import Any

from gradq.service.settings import get_settings
from gradq.service.store import workers as pool_table
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from .api import guarded
from .pages import error_page, render


def workers_doc(_: Request) -> list[dict[str, Any]]:
    """``/api/workers``: what ``gradq workers --json`` prints."""
    return pool_table.list_workers()


def workers_page(_: Request) -> HTMLResponse:
    """``/workers``: one row per worker process, live ones first, gone ones marked."""
    try:
        rows = pool_table.list_workers()
    except Exception as exc:  # noqa: BLE001 - a service error is a page, a bug a 500
        return error_page(exc)
    live = sum(r["state"] == "live" for r in rows)
    hosts = len({r["host"] for r in rows if r["state"] == "live"})
    return render("workers.html", title="workers", rows=rows, live_count=live, hosts=hosts,
                  lease_s=get_settings().lease_s, live=True)


ROUTES = [
    Route("/workers", workers_page),
    Route("/api/workers", guarded(workers_doc)),
]
