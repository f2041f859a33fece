"""Shared fixtures: an isolated GRADQ_HOME per test, and the real PostgreSQL and Redis.

Tests that need a service talk to the real one; on a laptop without it they skip, under
``CI=true`` they fail (after dramatiq's fixtures).
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

PG_ADMIN_URL = os.environ.get("GRADQ_TEST_PG_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("GRADQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ROOT = Path(__file__).resolve().parent.parent


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    if not _reachable(host, port):
        message = f"{name} is not reachable on {host}:{port}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}, and CI=true requires it")
        pytest.skip(message)


@pytest.fixture(autouse=True)
def gradq_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own SQLite database and dataset cache."""
    home = tmp_path / "gradq-home"
    monkeypatch.setenv("GRADQ_HOME", str(home))
    monkeypatch.delenv("GRADQ_DATABASE_URL", raising=False)
    monkeypatch.setenv("GRADQ_DEVICE", os.environ.get("GRADQ_TEST_DEVICE", "cpu"))
    monkeypatch.setenv("GRADQ_BROKER_URL", REDIS_URL)
    # a checkpoint at every checkpoint_every epochs, as the resume tests expect (the
    # default waits 10 s between checkpoints, which these short jobs never reach)
    monkeypatch.setenv("GRADQ_CHECKPOINT_INTERVAL_S", "0")
    return home


@pytest.fixture
def pg_url(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty PostgreSQL database for this test (dropped afterwards)."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    import sqlalchemy as sa

    name = f"gradq_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()  # hold no connection during the test: a PostgreSQL restart must not break it
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    monkeypatch.setenv("GRADQ_DATABASE_URL", url)
    yield url
    from gradq.service.store.db import dispose_engines

    dispose_engines()
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def redis_url(monkeypatch: pytest.MonkeyPatch) -> str:
    """The real Redis, on a database of its own, emptied before and after the test."""
    need_service("Redis", "127.0.0.1", 6379)
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    monkeypatch.setenv("GRADQ_BROKER_URL", REDIS_URL)
    yield REDIS_URL
    client.flushdb()


@pytest.fixture(autouse=True)
def _fresh_engines():
    """Engines are cached per URL; each test starts without any."""
    from gradq.service.store.db import dispose_engines

    dispose_engines()
    yield
    dispose_engines()
