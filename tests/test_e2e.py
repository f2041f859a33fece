"""End to end on the real services: PostgreSQL migrated by ``gradq db upgrade``, Redis, and
two real ``gradq worker --cpu`` processes running submitted jobs (issue 2, docs/cli.md,
docs/guarantees.md).

The workers are separate processes started the way a user starts them; the test submits
through the CLI and reads the results back from PostgreSQL.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from _cli import invoke, private_redis_db
from faultkit import wait_for
from gradq.service.store import db, queries
from gradq.service.store.models import Job

pytestmark = pytest.mark.services

N_JOBS = 20
LEASE_S = 5
IRIS = """\
name: e2e-iris
device: cpu
data: {dataset: iris}
model: {hidden: [8]}
optimizer: {name: adam, lr: 0.01}
training: {epochs: 4, batch_size: 32}
"""
DIGITS = """\
name: e2e-digits
device: auto
data: {dataset: digits}
model: {hidden: [16]}
optimizer: {name: momentum, lr: 0.05}
training: {epochs: 2, batch_size: 128}
"""
COMPARE = """\
name: e2e-compare
kind: compare
device: cpu
data: {dataset: iris}
model: {hidden: [4]}
training: {epochs: 3, batch_size: 32}
compare: {optimizers: [sgd, adam], seeds: 2}
"""


gradq = invoke


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The real Redis on database 11, this module's own."""
    yield from private_redis_db(monkeypatch, 11)


@contextmanager
def worker_pool(n: int, env: dict[str, str], logs: Path) -> Iterator[list[Path]]:
    """``n`` real ``gradq worker --cpu`` processes; stopped with SIGTERM on the way out.

    Each runs in a session of its own, so that whatever it started (its Celery worker and
    that one's pool process) can be found by process group and nothing outlives the test.
    """
    procs: list[tuple[subprocess.Popen, Any]] = []
    paths = [logs / f"worker{i}.log" for i in range(n)]
    codes: list[int | None] = []
    leftovers: list[int] = []
    try:
        for path in paths:
            f = path.open("wb")
            procs.append((subprocess.Popen(
                [sys.executable, "-m", "gradq.cli.main", "worker", "--cpu"], env=env,
                stdout=f, stderr=subprocess.STDOUT, start_new_session=True), f))
        yield paths
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, f in procs:
            try:
                codes.append(p.wait(timeout=40))
            except subprocess.TimeoutExpired:
                codes.append(None)
            try:  # anything left in its group (there should be nothing) is killed
                os.killpg(p.pid, signal.SIGKILL)
                leftovers.append(p.pid)
            except ProcessLookupError:
                pass
            if p.poll() is None:
                p.wait()
            f.close()
    # reached only when the body passed: then the shutdown must have been clean too
    assert codes == [0] * n, (codes, [p.read_text()[-3000:] for p in paths])
    assert leftovers == [], f"workers {leftovers} left processes behind"


def tables() -> set[str]:
    return set(sa.inspect(db.get_engine()).get_table_names()) - {"alembic_version"}


def test_twenty_jobs_on_two_real_workers(pg_url: str, broker: str, tmp_path: Path) -> None:
    # Given an empty PostgreSQL database migrated by the CLI
    assert tables() == set()
    code, out, err = gradq("db", "upgrade")
    assert code == 0, err
    head = db.head_revision()
    assert f"is at revision {head}" in out
    assert tables() >= {"jobs", "metrics", "results", "artifacts", "checkpoints"}

    # and two real workers, each a `gradq worker --cpu` process
    env = {**os.environ, "GRADQ_DATABASE_URL": pg_url, "GRADQ_BROKER_URL": broker,
           "GRADQ_LEASE_S": str(LEASE_S), "GRADQ_HOME": str(tmp_path / "worker-home"),
           "PYTHONUNBUFFERED": "1"}
    with worker_pool(2, env, tmp_path) as logs:
        wait_for(lambda: all(re.search(rb"ready\.", p.read_bytes()) for p in logs), 90,
                 "both workers to be ready", interval=0.25)

        # When 20 jobs (and a comparison of 4 runs) are submitted through the CLI
        iris, digits = tmp_path / "iris.yaml", tmp_path / "digits.yaml"
        iris.write_text(IRIS)
        digits.write_text(DIGITS)
        ids = []
        for i in range(N_JOBS):
            code, out, err = gradq("submit", iris if i % 2 else digits, "--set", f"seed={i}",
                                   "--json")
            assert code == 0, err
            doc = json.loads(out)
            assert doc == {"id": doc["id"], "status": "queued"}
            ids.append(doc["id"])
        (tmp_path / "compare.yaml").write_text(COMPARE)
        code, out, err = gradq("submit", tmp_path / "compare.yaml", "--json")
        assert code == 0, err
        comparison = json.loads(out)
        assert len(comparison["children"]) == 4

        # Then every one of them finishes
        def finished() -> list[dict[str, Any]] | None:
            rows = queries.list_jobs(limit=100)
            done = [r for r in rows if r["status"] not in ("queued", "running")]
            return rows if len(done) == len(rows) == N_JOBS + 5 else None

        rows = wait_for(finished, 120, "every job to finish", interval=0.5)
    # (the workers were stopped with SIGTERM and exited cleanly, leaving no process behind)

    assert {r["status"] for r in rows} == {"succeeded"}, [
        (r["id"], r["status"], queries.result(r["id"])["error"]) for r in rows
        if r["status"] != "succeeded"]
    runs = ids + comparison["children"]
    workers = set()
    for jid in runs:
        doc = queries.result(jid)
        # each ran exactly once, on a worker, on the CPU
        assert doc["attempts"] == 1, doc
        assert doc["worker"] and doc["device"] == "cpu (numpy)"
        workers.add(doc["worker"])
        # each has its result, its learning curves and its trained parameters
        assert doc["final"]["epochs"] in (2, 3, 4) and doc["params"] > 0
        assert doc["timing"]["run_s"] > 0
        curves = queries.curves(jid)["metrics"]
        assert curves["train_loss"]["step"][0] == 0
        assert len(curves["train_loss"]["step"]) == doc["final"]["epochs"] + 1
        assert {"val_loss", "test_loss"} <= set(curves)
        with np.load(io.BytesIO(queries.artifact(jid)), allow_pickle=False) as z:
            assert {"W0", "b0", "W1", "b1"} <= set(z.files)
            assert z["W0"].shape[1] == z["W1"].shape[0]
            assert sum(z[k].size for k in z.files) == doc["params"]
    # both workers took jobs (both were ready, and one is busy while the next arrives)
    assert len(workers) >= 2, workers
    # claimed exactly once each: one fencing token issued, never swept or handed over
    # (Redis may deliver a message twice, and the sweeper republishes queued jobs whose
    # message looks lost; a second delivery finds the job claimed and does nothing)
    with db.session_scope() as s:
        tokens = dict(s.execute(sa.select(Job.id, Job.lease_token)
                                .where(Job.id.in_(runs))).all())
    assert tokens == dict.fromkeys(runs, 1)
    # the comparison settled when its last child did, and reports both arms
    rep = json.loads(gradq("report", comparison["id"], "--json")[1])
    assert rep["status"] == "succeeded"
    assert [(a["optimizer"], a["n"]) for a in rep["arms"]] == [("sgd", 2), ("adam", 2)]

    # Finally: down to base and up again
    code, out, err = gradq("db", "downgrade")
    assert code == 0 and "is at revision base" in out, err
    assert tables() == set()
    code, out, err = gradq("db", "upgrade")
    assert code == 0 and f"is at revision {head}" in out, err
    assert json.loads(gradq("ls", "--json")[1]) == []


@pytest.mark.parametrize(("device", "queue"), [("cpu", "cpu"), ("cuda", "gpu"),
                                               ("auto", "auto")])
def test_device_routes_to_its_queue(pg_url: str, broker: str, tmp_path: Path, device: str,
                                    queue: str) -> None:
    import redis

    assert gradq("db", "upgrade")[0] == 0
    spec = tmp_path / "s.yaml"
    spec.write_text(IRIS)
    code, out, err = gradq("submit", spec, "--set", f"device={device}", "--json")
    assert code == 0, err
    jid = json.loads(out)["id"]
    with db.session_scope() as s:
        assert s.get(Job, jid).queue == queue
    client = redis.Redis.from_url(broker)
    lists = [k.decode() for k in client.scan_iter() if client.type(k) == b"list"]
    assert [k.split(":")[0] for k in lists] == [queue]
    [raw] = client.lrange(lists[0], 0, -1)
    msg = json.loads(raw)
    assert msg["content-type"] == "application/json"
    assert json.loads(base64.b64decode(msg["body"]))[0] == [jid]
    client.close()


def test_python_dash_m_runs_the_cli() -> None:
    """Workers are started as ``python -m gradq.cli.main``; the console script is the same."""
    out = subprocess.run([sys.executable, "-m", "gradq.cli.main", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "worker" in out.stdout
