"""Engines, sessions and the schema's version (one session helper, after Optuna's storage).

Public storage functions elsewhere are one ``with session_scope()`` block each. A fresh
SQLite database is migrated on first use; any other database whose schema is behind says
so and names the command that fixes it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from gradq.service.errors import SchemaError, ServiceUnavailable, SettingsError
from gradq.service.settings import get_settings, redact
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, InterfaceError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported only to migrate (or when the fast reading below cannot decide): a
# command that finds its schema at head never loads it (about a third of the CLI's start).

_engines: dict[str, Engine] = {}
_checked: set[str] = set()
_lock = threading.Lock()


def _migrations_dir() -> Path:
    import gradq.migrations  # the installed package's copy, wherever it lives

    return Path(gradq.migrations.__file__).resolve().parent


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the single writer
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for ``url`` (default: GRADQ_DATABASE_URL)."""
    url = url or get_settings().database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                path = url.split("///", 1)[-1]
                if path and path != ":memory:":
                    try:
                        Path(path).parent.mkdir(parents=True, exist_ok=True)
                    except OSError as exc:
                        raise unavailable(url, exc) from exc
                engine = _create_engine(url, connect_args={"timeout": 30})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = _create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5,
                                        connect_args=_libpq_timeouts(url))
            _engines[url] = engine
    return engine


def dispose_engines() -> None:
    """Close every pooled connection (after a fork, a connection must not be shared)."""
    with _lock:
        for e in _engines.values():
            e.dispose(close=False)
        _engines.clear()
        _checked.clear()


# A connection cut by a partition fails within about half a minute instead of the kernel's
# retransmission time-out (15 minutes and more): the write is retried on a new connection
# (the failure policy's transient errors), while the lease, on the database's clock, has
# already said whether the job is still this worker's. A URL that sets one keeps its own.
_LIBPQ_TIMEOUTS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10,
                   "keepalives_interval": 5, "keepalives_count": 3, "tcp_user_timeout": 30_000}


def _libpq_timeouts(url: str) -> dict[str, int]:
    """The libpq connection time-outs above, for a libpq driver (psycopg, psycopg2)."""
    try:
        parsed = sa.engine.make_url(url)
        driver = parsed.get_driver_name()  # loads the dialect: it may not exist
    except (ArgumentError, NoSuchModuleError, ImportError):  # _create_engine names it
        return {}
    if driver not in ("psycopg", "psycopg2"):
        return {}
    return {k: v for k, v in _LIBPQ_TIMEOUTS.items() if k not in parsed.query}


def _create_engine(url: str, **kwargs: object) -> Engine:
    """``sa.create_engine``; a URL it cannot use is a bad setting, named as such."""
    try:
        return sa.create_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise SettingsError(f"GRADQ_DATABASE_URL: {redact(url)} cannot be used "
                            f"({redact(str(exc).splitlines()[0])})") from exc


_REVISION = re.compile(r"^revision\s*(?::[^=\n]*)?=\s*['\"]([^'\"]+)['\"]", re.M)
_DOWN = re.compile(r"^down_revision\s*(?::[^=\n]*)?=\s*(.+)$", re.M)


@lru_cache(maxsize=1)
def _head_from_files(versions: Path) -> str | None:
    """The single head of a linear history, read from the version files' text.

    Each file names its ``revision`` and ``down_revision``; the head is the one revision no
    other file revises. None when that is not one plain answer (branches, merges, a form
    the patterns do not read): then Alembic decides.
    """
    revisions: set[str] = set()
    downs: set[str] = set()
    for path in versions.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        rev, down = _REVISION.search(text), _DOWN.search(text)
        if rev is None:
            continue  # __init__.py, helpers
        if down is None:
            return None
        revisions.add(rev.group(1))
        value = down.group(1).split("#", 1)[0].strip()
        if value != "None":
            named = re.fullmatch(r"['\"]([^'\"]+)['\"]", value)
            if named is None:
                return None  # a merge (a tuple) or something computed
            downs.add(named.group(1))
    heads = revisions - downs
    return heads.pop() if len(heads) == 1 and downs <= revisions else None


@lru_cache(maxsize=1)
def _known_from_files(versions: Path) -> frozenset[str]:
    """Every revision id that this gradq's migrations name."""
    found = set()
    for path in versions.glob("*.py"):
        rev = _REVISION.search(path.read_text(encoding="utf-8"))
        if rev is not None:
            found.add(rev.group(1))
    return frozenset(found)


def known_revision(revision: str) -> bool:
    """Whether this gradq's migrations know ``revision`` (a newer gradq's do not)."""
    return revision in _known_from_files(_migrations_dir() / "versions")


def head_revision() -> str:
    """The newest migration's revision id (what ``gradq db upgrade`` goes to)."""
    head = _head_from_files(_migrations_dir() / "versions")
    if head is not None:
        return head
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _read_version(conn: Connection) -> str | None:
    """The revision stored in ``alembic_version`` (Alembic's own table), None if none."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) > 1:
        from alembic.runtime.migration import MigrationContext  # several heads: its rules

        return MigrationContext.configure(conn).get_current_revision()
    return rows[0] if rows else None


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: no gradq schema).

    Raises :class:`ServiceUnavailable` when no connection can be made; any other error is
    raised as what it is.
    """
    try:
        conn = engine.connect()
    except (OperationalError, InterfaceError) as exc:
        raise unavailable(engine.url, exc) from exc
    with conn:
        return _read_version(conn)


def upgrade(url: str | None = None, revision: str = "head") -> str:
    """``alembic upgrade``; returns the revision the database is at afterwards."""
    from alembic import command

    engine = get_engine(url)
    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except OperationalError as exc:
        raise unavailable(engine.url, exc) from exc
    _checked.discard(str(engine.url))
    return current_revision(engine) or "base"


def downgrade(url: str | None = None, revision: str = "base") -> str:
    """``alembic downgrade``; returns the revision afterwards (``base`` when empty)."""
    from alembic import command

    engine = get_engine(url)
    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
    _checked.discard(str(engine.url))
    return current_revision(engine) or "base"


def unavailable(url: sa.URL | str, exc: BaseException) -> ServiceUnavailable:
    shown = url.render_as_string(hide_password=True) if isinstance(url, sa.URL) else redact(url)
    reason = redact(str(getattr(exc, "orig", exc)).strip().splitlines()[0]) if str(exc) else ""
    hint = ("start PostgreSQL, or unset GRADQ_DATABASE_URL to use SQLite"
            if not shown.startswith("sqlite") else "check the path and its permissions")
    return ServiceUnavailable(f"database {shown} is unreachable ({reason}): {hint}")


def ensure_schema(engine: Engine) -> None:
    """Check the schema once per process: migrate SQLite; elsewhere demand `gradq db upgrade`."""
    key = str(engine.url)
    if key in _checked:
        return
    try:
        current = current_revision(engine)
    except OperationalError as exc:  # connected, then lost
        raise unavailable(engine.url, exc) from exc
    head = head_revision()
    if current is not None and current != head and not known_revision(current):
        raise SchemaError(
            f"database {engine.url.render_as_string(hide_password=True)} is at schema "
            f"revision {current}, which this gradq does not know (its newest is {head}): "
            "the database is newer than this gradq; upgrade gradq (pip install -U gradq, "
            "or the newer checkout) or point GRADQ_DATABASE_URL at another database")
    if current != head:
        if engine.dialect.name == "sqlite":
            _upgrade_sqlite_once(engine, head)
        elif current is None:
            raise SchemaError(
                f"database {engine.url.render_as_string(hide_password=True)} has no gradq "
                "schema: run `gradq db upgrade`")
        else:
            raise SchemaError(
                f"database schema is at revision {current}, this gradq needs {head}: "
                "run `gradq db upgrade`")
    _checked.add(key)


def _upgrade_sqlite_once(engine: Engine, head: str) -> None:
    """Migrate an embedded database under a file lock beside it, so that two processes
    meeting a new SQLite file at once (a worker and a first ``submit``) migrate it once:
    the second waits, then finds it at ``head``."""
    import fcntl

    database = engine.url.database
    if not database or database == ":memory:":
        upgrade(str(engine.url))
        return
    with open(f"{database}.migrate-lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if current_revision(engine) != head:
                upgrade(str(engine.url))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    engine = get_engine(url)
    ensure_schema(engine)
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except OperationalError as exc:
        session.rollback()
        if _is_connection_error(exc):
            raise unavailable(engine.url, exc) from exc
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _is_connection_error(exc: OperationalError) -> bool:
    return bool(getattr(exc, "connection_invalidated", False)) or any(
        s in str(exc).lower() for s in ("connection", "could not connect", "server closed",
                                        "terminating", "unable to open database"))
