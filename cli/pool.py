"""``gradq workers``: the pool as its workers report it (host, device, job, heartbeat).

A command module of the CLI (``COMMANDS``, registered by ``main``); the service is
imported when the command runs.
"""

from __future__ import annotations

from typing import Any

import click

from .common import handle_errors, json_option
from .output import emit_json, table


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


@click.command("workers")
@json_option
@handle_errors
def workers(as_json: bool) -> None:
    """The worker pool: host, pid, queues, device, current job, last heartbeat, jobs done.

    A worker whose heartbeat is older than a lease (GRADQ_LEASE_S, by the database's
    clock), or that stopped, is shown as gone.
    """
    from gradq.service.store.workers import list_workers

    docs: list[dict[str, Any]] = list_workers()
    if as_json:
        emit_json(docs)
        return
    if not docs:
        click.echo("no worker has reported yet: start one with `gradq worker`", err=True)
        return
    table([(d["host"], d["pid"], d["device"], ",".join(d["queues"]), d["state"],
            d["current_job"] or "", _ago(d["heartbeat_age_s"]), d["jobs_done"],
            d["started_at"]) for d in docs],
          ("host", "pid", "device", "queues", "state", "job", "heartbeat", "done", "started"))
    live = sum(d["state"] == "live" for d in docs)
    click.echo(f"{live} live, {len(docs) - live} gone", err=True)


COMMANDS = [workers]
