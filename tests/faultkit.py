"""Helpers for the fault-injection suite (tests/test_faults.py).

- ``Pool``: a real ``gradq worker --cpu`` (supervisor + Celery worker + lease sweeper) in a
  process group of its own, logging to a file; it can be paused (SIGSTOP), woken and killed
  as a whole, and it never outlives its ``with`` block.
- Waits on job rows (``wait_for``, ``wait_jobs``), reads of the job table straight from SQL.
- ``submit_spec``: validate and store a spec through the service API, then publish its
  message, optionally to a queue of the test's choosing (see ``Pool`` for why).
- Restarts of the real Redis and PostgreSQL that leave them running whatever happens.
- ``queue_lengths``: the messages waiting in the broker (none, after a refused submit).
- ``RedisServer``: a private redis-server (e.g. with a password) for one test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

LEASE_S = 3.0
"""The lease of every pool in the suite: short, so that a hand-over takes seconds."""

FINISHED = ("succeeded", "failed", "diverged", "cancelled")


# ----------------------------------------------------------------------------- waits
def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05, on_timeout: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}"
                                 + (f"\n{extra}" if extra else ""))
        time.sleep(interval)


# ---------------------------------------------------------------------------- the DB
def engine() -> sa.Engine:
    from gradq.service.store.db import get_engine

    return get_engine()


def job_row(job_id: str) -> dict[str, Any]:
    """The job's row, as a dict (status as its string value)."""
    from gradq.service.store.models import Job

    with engine().connect() as c:
        row = c.execute(sa.select(Job.__table__).where(Job.id == job_id)).mappings().one()
    out = dict(row)
    out["status"] = getattr(out["status"], "value", out["status"])
    return out


def statuses(job_ids: Sequence[str]) -> dict[str, str]:
    from gradq.service.store.models import Job

    with engine().connect() as c:
        rows = c.execute(sa.select(Job.id, Job.status).where(Job.id.in_(list(job_ids)))).all()
    return {r.id: getattr(r.status, "value", r.status) for r in rows}


def wait_jobs(job_ids: Sequence[str], timeout: float, want: Iterable[str] = FINISHED,
              pools: Sequence[Pool] = ()) -> dict[str, str]:
    """Wait until every job's status is in ``want``; return the statuses."""
    want = set(want)
    ids = list(job_ids)

    def done() -> dict[str, str] | None:
        st = statuses(ids)
        return st if len(st) == len(ids) and all(v in want for v in st.values()) else None

    def report() -> str:
        st = statuses(ids)
        counts: dict[str, int] = {}
        for v in st.values():
            counts[v] = counts.get(v, 0) + 1
        return f"statuses {counts}\n" + "\n".join(p.tail() for p in pools)

    return wait_for(done, timeout, f"{len(ids)} job(s) to reach {sorted(want)}",
                    interval=0.1, on_timeout=report)


def results_count(job_ids: Sequence[str] | None = None) -> int:
    from gradq.service.store.models import Result

    q = sa.select(sa.func.count()).select_from(Result)
    if job_ids is not None:
        q = q.where(Result.job_id.in_(list(job_ids)))
    with engine().connect() as c:
        return int(c.execute(q).scalar())


def result_extra(job_id: str) -> dict[str, Any]:
    from gradq.service.store.models import Result

    with engine().connect() as c:
        raw = c.execute(sa.select(Result.extra).where(Result.job_id == job_id)).scalar_one()
    return json.loads(raw or "{}")


def worker_pid(worker: str | None) -> int | None:
    """The pid in a job's ``worker`` column (``<celery hostname>-<pid>``)."""
    if not worker:
        return None
    tail = worker.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


# ------------------------------------------------------------------------ submitting
def blobs_file(path: Path, n: int = 150, d: int = 4, k: int = 3, seed: int = 0) -> Path:
    """A small classification dataset file (Gaussian blobs), so that a worker's first job
    need not import scikit-learn for a built-in (seconds on a busy CI machine)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = rng.normal(scale=3.0, size=(k, d))
    X = centres[y] + rng.normal(size=(n, d))
    np.savez(path, X=X, y=y)
    return path


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(json.dumps(spec, indent=1))
    return path


def submit_spec(path: Path, *, queue: str | None = None, sets: Sequence[str] = (),
                priority: int = 0) -> list[str]:
    """Validate and store ``path`` like ``gradq submit``, then publish its message(s) —
    to the job's own queue, or to ``queue`` when given. Everything published *again* (by
    the sweeper, or ``gradq retry``) goes to the job's own queue, so a test can hand the
    first run of a job to one pool and every later run to another."""
    from gradq.service import submit
    from gradq.service.celery_app import send_job
    from gradq.service.store import create

    ids = submit.create(submit.prepare(path, list(sets)), priority=priority)
    todo = create.runnable(ids)
    for job_id, own_queue, prio in todo:
        send_job(job_id, queue or own_queue, prio)
    create.mark_enqueued([t[0] for t in todo])
    return ids


def curves(job_id: str) -> dict[str, dict[str, list]]:
    from gradq.service.store import queries

    return queries.curves(job_id)["metrics"]


# ---------------------------------------------------------------------- worker pools
def _pgid_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


class Pool:
    """``gradq worker --cpu`` in its own session (process group), logging to a file.

    ``queues`` picks what its Celery worker consumes: a *victim* pool of a fault test
    consumes a queue of its own (``victim``) that only ``submit_spec(queue="victim")``
    feeds, so it deterministically gets the first run of the job under test, while a
    healthy pool on the ordinary queues (``cpu,auto``) gets every run after it, because
    the sweeper republishes to the job's own queue. A pool started with ``GRADQ_FAILPOINTS``
    keeps that plan in every process it forks (Celery replaces a dead pool process, and a
    fresh process counts failpoint hits from zero), so a test stops the victim pool as soon
    as it has been hit.
    """

    def __init__(self, name: str, log_dir: Path, *, env: dict[str, str] | None = None,
                 queues: str | None = None, concurrency: int = 1,
                 lease_s: float = LEASE_S) -> None:
        self.name = name
        self.log_path = log_dir / f"pool-{name}.log"
        self.env = {**os.environ, "GRADQ_LEASE_S": str(lease_s), "GRADQ_DEVICE": "cpu",
                    "PYTHONUNBUFFERED": "1", **(env or {})}
        if not (env or {}).get("GRADQ_FAILPOINTS"):
            self.env.pop("GRADQ_FAILPOINTS", None)
        self.args = [sys.executable, "-m", "gradq.cli.main", "-v", "worker", "--cpu",
                     "--concurrency", str(concurrency), "--loglevel", "INFO"]
        if queues:
            self.args += ["--queues", queues]
        self.proc: subprocess.Popen | None = None
        self.pgid: int | None = None
        self._log = None

    # -- life cycle
    def start(self) -> Pool:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self.pgid = self.proc.pid  # a new session: the supervisor leads its own group
        return self

    def wait_ready(self, timeout: float = 60) -> Pool:
        wait_for(lambda: " ready." in self.log() or self.proc.poll() is not None, timeout,
                 f"pool {self.name} to be ready", interval=0.1, on_timeout=self.tail)
        if self.proc.poll() is not None:
            raise AssertionError(f"pool {self.name} exited with {self.proc.returncode}\n"
                                 + self.tail())
        return self

    def kill(self) -> None:
        """SIGKILL every process of the pool and wait until none is left (idempotent)."""
        if self.pgid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            # SIGKILL first: a stopped process dies of it without running another
            # instruction (woken first, it could send a COMMIT it held, on a second core,
            # before the SIGKILL lands); the SIGCONT after it only makes sure nothing lingers
            os.killpg(self.pgid, signal.SIGKILL)
            os.killpg(self.pgid, signal.SIGCONT)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        wait_for(lambda: not _pgid_members(self.pgid), 10,
                 f"every process of pool {self.name} to exit", interval=0.05)
        if self._log is not None:
            self._log.close()
            self._log = None

    def pause(self) -> None:
        os.killpg(self.pgid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.pgid, signal.SIGCONT)

    def __enter__(self) -> Pool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    # -- inspection
    def pids(self) -> set[int]:
        return set(_pgid_members(self.pgid)) if self.pgid is not None else set()

    def ran(self, worker: str | None) -> bool:
        """Whether a job's ``worker`` column names a process of this pool."""
        pid = worker_pid(worker)
        return pid is not None and pid in self.pids()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        text = self.log().splitlines()[-lines:]
        return f"--- last lines of pool {self.name} ---\n" + "\n".join(text)


@contextlib.contextmanager
def pools(*members: Pool, ready_timeout: float = 60) -> Iterator[tuple[Pool, ...]]:
    """Start the pools together, wait until each is ready, kill them all at the end."""
    try:
        for p in members:
            p.start()
        for p in members:
            p.wait_ready(ready_timeout)
        yield members
    finally:
        failures = []
        for p in members:
            try:
                p.kill()
            except BaseException as exc:  # kill the others even if one is stuck
                failures.append(exc)
        for p in members:  # shown with a failing test's captured output
            print(p.tail(60))
        if failures:
            raise failures[0]


# ------------------------------------------------------------------ Redis, PostgreSQL
def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_start_command(port: int) -> list[str]:
    """How CI starts its Redis (.ci/run): nothing kept on disk."""
    log = "ci.log" if port == 6379 else f"test-{port}.log"
    return ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1",
            "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", "/var/lib/redis", "--logfile", f"/var/log/redis/{log}"]


def start_redis(port: int) -> None:
    for d in ("/var/lib/redis", "/var/log/redis"):
        Path(d).mkdir(parents=True, exist_ok=True)
    subprocess.run(redis_start_command(port), check=True, stdout=subprocess.DEVNULL,
                   timeout=30)
    wait_for(lambda: reachable("127.0.0.1", port), 30, f"Redis on port {port} to start")


def stop_redis(port: int) -> None:
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "shutdown", "nosave"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    wait_for(lambda: not reachable("127.0.0.1", port), 30, f"Redis on port {port} to stop")


@contextlib.contextmanager
def redis_down(broker_url: str) -> Iterator[None]:
    """Stop the real Redis of ``broker_url`` (everything in it is lost: it keeps nothing on
    disk) for the body of the block; it is running again afterwards, whatever happens."""
    host, port = _host_port(broker_url, 6379)
    assert host in ("127.0.0.1", "localhost", "::1"), "only a local Redis can be restarted"
    try:
        stop_redis(port)
        yield
    finally:
        if not reachable("127.0.0.1", port):
            start_redis(port)


def _pg_version() -> str:
    return sorted(os.listdir("/etc/postgresql"))[-1]


def pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"],
                          timeout=10).returncode == 0


def restart_postgres(timeout: float = 60) -> float:
    """Restart the local PostgreSQL cluster (every session is terminated); return the
    seconds it took. It accepts connections again when this returns, whatever happens."""
    t0 = time.monotonic()
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main"]
    try:
        subprocess.run([*command, "restart"], check=True, capture_output=True,
                       timeout=timeout)
    finally:
        if not pg_ready():
            subprocess.run([*command, "start"], capture_output=True, timeout=timeout)
        wait_for(pg_ready, timeout, "PostgreSQL to accept connections again", interval=0.2)
    return time.monotonic() - t0


class RedisServer:
    """A private redis-server (e.g. with ``--requirepass``) in its own session."""

    def __init__(self, log_dir: Path, *args: str) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--dir", str(log_dir),
                     "--logfile", str(self.log_path), *args]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> RedisServer:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for(lambda: reachable("127.0.0.1", self.port) or self.proc.poll() is not None,
                     30, f"redis-server on port {self.port}")
            assert self.proc.poll() is None, f"redis-server exited with {self.proc.returncode}"
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def queue_lengths(client: Any) -> dict[str, int]:
    """Messages waiting in every Celery queue of the broker (all priority levels), plus
    those delivered but not acknowledged."""
    out: dict[str, int] = {}
    for key in client.scan_iter(count=1000):
        name = key.decode() if isinstance(key, bytes) else key
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "list":
            out[name] = int(client.llen(key))
    for key in ("unacked", "unacked_index"):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "hash":
            out[key] = int(client.hlen(key))
        elif kind == "zset":
            out[key] = int(client.zcard(key))
    return out
