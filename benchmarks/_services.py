"""A PostgreSQL database of a benchmark's own, created and dropped around it.

The server comes from ``GRADQ_BENCH_PG_URL`` (an administrative URL, default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``); Redis from
``GRADQ_BENCH_REDIS_URL`` (default database 13 of the local server).
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

PG_ADMIN_URL = os.environ.get("GRADQ_BENCH_PG_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("GRADQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


def reachable(url: str, default_port: int) -> bool:
    u = urlsplit(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or default_port),
                                      timeout=1):
            return True
    except OSError:
        return False


def require(*services: str) -> None:
    """Exit with a clear message where a service the benchmark needs is not running."""
    for name in services:
        url, port = (PG_ADMIN_URL, 5432) if name == "postgresql" else (REDIS_URL, 6379)
        if not reachable(url, port):
            raise SystemExit(f"{name} is not reachable at {urlsplit(url).netloc}: start it "
                             "(docker compose up -d postgres redis) or set "
                             f"GRADQ_BENCH_{'PG' if name == 'postgresql' else 'REDIS'}_URL")


@contextlib.contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A fresh database with gradq's schema; its URL; dropped afterwards."""
    import sqlalchemy as sa
    from gradq.service.store.db import dispose_engines, upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        dispose_engines()
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
