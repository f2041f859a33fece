"""The pool as its workers report it (``gradq workers``, the dashboard's ``/workers``).

Each worker process registers a row when it starts and renews its heartbeat while it lives.
Every time here is the database's clock (``now()`` on the server), never a host's: a worker
whose host clock is off by minutes still shows as live, and "gone" means that its last
heartbeat is older than a lease on the one clock every worker shares.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from gradq.service.settings import get_settings
from gradq.service.store.clock import db_now
from gradq.service.store.clock import read_now as _read_now
from gradq.service.store.db import session_scope
from gradq.service.store.encoding import to_utc as _utc
from gradq.service.store.models import Worker

PRUNE_AFTER_S = 86400.0  # a gone worker's row stays a day, then the sweeper deletes it


def register(name: str, host: str, pid: int, queues: list[str] | tuple[str, ...],
             device: str) -> None:
    """Record a worker process that starts (a row of the same name is replaced)."""
    with session_scope() as s:
        s.execute(sa.delete(Worker).where(Worker.name == name))
        now = db_now(s)
        s.execute(sa.insert(Worker).values(
            name=name, host=host, pid=pid, queues=",".join(queues), device=device,
            current_job=None, jobs_done=0, started_at=now, heartbeat_at=now))


def beat(name: str) -> bool:
    """Renew a worker's heartbeat; False when its row is gone (pruned): register again."""
    with session_scope() as s:
        done = s.execute(sa.update(Worker).where(Worker.name == name)
                         .values(heartbeat_at=db_now(s), stopped_at=None))
        return done.rowcount > 0


def job_started(name: str, job_id: str) -> None:
    """The worker took ``job_id`` (its current job until :func:`job_ended`)."""
    with session_scope() as s:
        s.execute(sa.update(Worker).where(Worker.name == name)
                  .values(current_job=job_id, heartbeat_at=db_now(s)))


def job_ended(name: str, counted: bool = True) -> None:
    """The worker's current job is over: clear it, and count it where the worker ran it
    (``counted``; a stack of replicas trained together counts once)."""
    with session_scope() as s:
        s.execute(sa.update(Worker).where(Worker.name == name)
                  .values(current_job=None, jobs_done=Worker.jobs_done + int(counted),
                          heartbeat_at=db_now(s)))


def stopped(name: str) -> None:
    """The worker process stops cleanly: it shows as gone at once."""
    with session_scope() as s:
        s.execute(sa.update(Worker).where(Worker.name == name)
                  .values(current_job=None, stopped_at=db_now(s)))


def prune(older_than_s: float = PRUNE_AFTER_S) -> int:
    """Delete the rows of workers silent for longer than ``older_than_s``; how many."""
    with session_scope() as s:
        cutoff = _read_now(s) - timedelta(seconds=older_than_s)
        return s.execute(sa.delete(Worker).where(Worker.heartbeat_at < cutoff)).rowcount


def list_workers(lease_s: float | None = None) -> list[dict[str, Any]]:
    """One document per worker, live ones first (then by host and name).

    ``state`` is ``gone`` when the worker stopped, or when its last heartbeat is older than
    ``lease_s`` (default ``GRADQ_LEASE_S``) by the database's clock; ``heartbeat_age_s`` is
    that age.
    """
    lease_s = get_settings().lease_s if lease_s is None else lease_s
    with session_scope() as s:
        now = _read_now(s)
        rows = s.execute(sa.select(Worker)).scalars().all()
    docs = []
    for w in rows:
        beat_at = _utc(w.heartbeat_at)
        age = max(0.0, (now - beat_at).total_seconds()) if beat_at else None
        gone = w.stopped_at is not None or age is None or age > lease_s
        docs.append({
            "name": w.name, "host": w.host, "pid": w.pid,
            "queues": [q for q in w.queues.split(",") if q], "device": w.device,
            "state": "gone" if gone else "live",
            "current_job": None if gone else w.current_job, "jobs_done": w.jobs_done,
            "last_heartbeat": _iso(beat_at), "heartbeat_age_s": round(age, 1)
            if age is not None else None,
            "started_at": _iso(_utc(w.started_at)), "stopped_at": _iso(_utc(w.stopped_at)),
        })
    docs.sort(key=lambda d: (d["state"] != "live", d["host"], d["name"]))
    return docs


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z") if dt else None
