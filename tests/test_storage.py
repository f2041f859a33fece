"""Storage (docs/guarantees.md) and the job lifecycle in SQL (docs/guarantees.md), on SQLite and
PostgreSQL alike.

Every test that takes ``backend`` runs twice: on the per-test SQLite database (migrated on
first use) and on a fresh PostgreSQL database migrated with ``db.upgrade`` — the real
server, skipped on a laptop without it and failing under ``CI=true``.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _cli import invoke
from conftest import PG_ADMIN_URL, REDIS_URL, need_service
from gradq.service.errors import InvalidTransition, JobNotFound
from gradq.service.failure_policy import Failure
from gradq.service.store import actions, create, db, leases, queries, sweeper, writes
from gradq.service.store.db import SchemaError, session_scope
from gradq.service.store.leases import Lease, LeaseLost
from gradq.service.store.models import (
    Artifact,
    Base,
    Checkpoint,
    Dataset,
    Job,
    JobStatus,
    Metric,
    Result,
    utcnow,
)
from gradq.service.store.newjob import NewJob

TABLES = {"datasets", "dataset_names", "jobs", "metrics", "results", "checkpoints", "workers",
          "artifacts"}
RESULT = {"final": {"train_loss": 0.1, "test_loss": 0.2, "test_accuracy": 0.9},
          "timing": {"queued_s": 0.0, "run_s": 1.0, "samples_per_s": 10.0}, "params": 10}
LEASE_S = 60.0


@contextmanager
def scratch_database(migrated: bool) -> Iterator[str]:
    """A PostgreSQL database of its own, for a whole module (creating one costs ~0.5 s)."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"gradq_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        if migrated:
            db.upgrade(url)
        yield url
    finally:
        db.dispose_engines()
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def shared_pg() -> Iterator[str]:
    with scratch_database(migrated=True) as url:
        yield url


@pytest.fixture(scope="module")
def empty_pg() -> Iterator[str]:
    with scratch_database(migrated=False) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The database under test: GRADQ_DATABASE_URL (or the SQLite default) points at it.

    PostgreSQL tests share one migrated database, emptied before each test; the tests that
    change the schema itself take ``fresh_backend`` instead.
    """
    if request.param == "postgresql":
        url = request.getfixturevalue("shared_pg")
        monkeypatch.setenv("GRADQ_DATABASE_URL", url)
        with db.get_engine(url).begin() as conn:  # DELETE: faster than TRUNCATE when small
            for table in ("dataset_names", "metrics", "results", "checkpoints", "artifacts",
                          "jobs", "datasets"):
                conn.execute(sa.text(f"DELETE FROM {table}"))
    return request.param


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_backend(request: pytest.FixtureRequest) -> str:
    """A database of this test's own: the per-test SQLite file, or a new PostgreSQL one."""
    if request.param == "postgresql":
        db.upgrade(request.getfixturevalue("pg_url"))
    return request.param


# ------------------------------------------------------------------ helpers
def make_job(children: int = 0, *, queue: str = "cpu", max_attempts: int = 3,
             priority: int = 0, dataset: tuple[str, bytes, str] | None = None) -> list[str]:
    """Store a train job, or a comparison with ``children`` runs; returns the ids."""
    kids = [NewJob({"kind": "train", "seed": i}, "train", "t", i, {"name": "sgd"}, queue)
            for i in range(children)]
    kind = "compare" if children else "train"
    job = NewJob({"kind": kind, "seed": 0}, kind, "t", 0, {"name": "sgd", "lr": 0.1}, queue,
                 kids)
    return create.create_jobs(job, dataset=dataset, priority=priority,
                            max_attempts=max_attempts)


def row(job_id: str) -> Job:
    with session_scope() as s:
        job = s.get(Job, job_id)
        s.expunge(job)
        return job


def count(model: type, **where: Any) -> int:
    with session_scope() as s:
        q = sa.select(sa.func.count()).select_from(model)
        for k, v in where.items():
            q = q.where(getattr(model, k) == v)
        return s.execute(q).scalar_one()


def backdate(job_id: str, column: str, seconds: float) -> None:
    with session_scope() as s:
        s.execute(sa.update(Job).where(Job.id == job_id)
                  .values({column: utcnow() - timedelta(seconds=seconds)}))


def lapse(job_id: str) -> None:
    """Make a running job look as if its worker died two leases ago."""
    backdate(job_id, "heartbeat_at", 2 * LEASE_S)


def points(*steps: int, name: str = "train_loss", value: float = 1.0) -> list[tuple]:
    return [(name, s, s / 10, s * 0.01, value + s) for s in steps]


def table_names() -> set[str]:
    return set(sa.inspect(db.get_engine()).get_table_names()) - {"alembic_version"}


cli = invoke  # (exit code, stdout, stderr)


# --------------------------------------------------------------- migrations
def test_a_fresh_sqlite_database_is_migrated_on_first_use(gradq_home: Path) -> None:
    assert not (gradq_home / "gradq.db").exists()
    assert queries.list_jobs() == []
    assert (gradq_home / "gradq.db").exists()
    assert db.current_revision(db.get_engine()) == db.head_revision()
    assert table_names() >= TABLES


def test_the_migrated_schema_is_the_models_schema(fresh_backend: str) -> None:
    """Migrations, not ``create_all``, make the schema: it must match the models exactly."""
    make_job()  # touch the database (SQLite migrates here)
    insp = sa.inspect(db.get_engine())
    assert table_names() == set(Base.metadata.tables)
    for name, table in Base.metadata.tables.items():
        actual = {c["name"]: c["nullable"] for c in insp.get_columns(name)}
        expected = {c.name: c.nullable for c in table.columns}
        assert actual == expected, name
        # every foreign key is indexed (alone, or leading an index or unique constraint)
        leading = {tuple(i["column_names"])[0] for i in insp.get_indexes(name)}
        leading |= {u["column_names"][0] for u in insp.get_unique_constraints(name)}
        leading |= set(insp.get_pk_constraint(name)["constrained_columns"][:1])
        for fk in insp.get_foreign_keys(name):
            assert fk["constrained_columns"][0] in leading, (name, fk)
    uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("metrics")}
    assert ("job_id", "name", "step") in uniques


def test_upgrade_downgrade_to_base_and_upgrade_again(fresh_backend: str) -> None:
    make_job()
    head = db.head_revision()
    assert db.upgrade() == head  # idempotent
    assert db.downgrade(revision="base") == "base"
    assert table_names() == set()
    assert db.upgrade() == head
    assert table_names() == TABLES
    assert queries.list_jobs() == []  # the data went with the tables
    make_job()
    assert len(queries.list_jobs()) == 1


def test_db_commands_report_the_revision(fresh_backend: str) -> None:
    head = db.head_revision()
    code, out, _ = cli("db", "upgrade")
    assert code == 0 and f"is at revision {head}" in out
    assert cli("db", "current")[1].strip() == f"current {head}, head {head}"
    code, out, _ = cli("db", "downgrade")
    assert code == 0 and "is at revision base" in out
    assert table_names() == set()
    if fresh_backend == "postgresql":
        assert cli("db", "current")[1].strip() == f"current base, head {head}"
    assert cli("db", "upgrade")[0] == 0
    assert cli("ls", "--json")[1].strip() == "[]"


NO_SCHEMA_COMMANDS = [
    ["ls"], ["ls", "--json"], ["status", "0" * 32], ["results", "0" * 32],
    ["curves", "0" * 32], ["report", "0" * 32], ["cancel", "0" * 32],
    ["export", "0" * 32, "--out", "m.npz"], ["datasets"], ["run", "SPEC"],
    ["submit", "SPEC"], ["retry", "0" * 32], ["worker", "--cpu"],
]


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text("data: {dataset: iris}\nmodel: {hidden: [4]}\ntraining: {epochs: 1}\n")
    return p


@pytest.mark.parametrize("command", NO_SCHEMA_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_postgres_without_schema_refuses_every_command(
        empty_pg: str, spec_file: Path, monkeypatch: pytest.MonkeyPatch,
        command: list[str]) -> None:
    monkeypatch.setenv("GRADQ_DATABASE_URL", empty_pg)
    # submit, retry and worker check the broker first: give them a reachable one (nothing
    # is ever sent to it, so any database of it will do and none is emptied)
    need_service("Redis", "127.0.0.1", 6379)
    monkeypatch.setenv("GRADQ_BROKER_URL", REDIS_URL.rsplit("/", 1)[0] + "/12")
    # a worker that got past its checks would block: make that a failure instead
    monkeypatch.setattr("gradq.workers.pool.run_pool",
                        lambda *a, **k: pytest.fail("the worker started without a schema"))
    args = [str(spec_file) if a == "SPEC" else a for a in command]
    code, out, err = cli(*args)
    assert code == 3, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "gradq db upgrade" in lines[0]
    assert table_names() == set()  # PostgreSQL is never migrated behind the user's back


def test_postgres_schema_behind_names_the_upgrade(pg_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    head = db.upgrade()
    assert cli("ls")[0] == 0
    # a newer gradq (one more migration) against this database
    with monkeypatch.context() as m:
        m.setattr(db, "head_revision", lambda: "9999")
        db.dispose_engines()
        code, _, err = cli("ls")
    assert code == 3
    assert f"revision {head}" in err and "9999" in err and "gradq db upgrade" in err
    # a database downgraded to base is refused the same way, then fixed by the upgrade
    db.downgrade(revision="base")
    db.dispose_engines()
    code, _, err = cli("ls")
    assert code == 3 and "gradq db upgrade" in err
    with pytest.raises(SchemaError, match="gradq db upgrade"):
        queries.list_jobs()
    assert cli("db", "upgrade")[0] == 0
    assert cli("ls")[0] == 0


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_database_newer_than_this_gradq_is_a_schema_mismatch(
        database: str, request: pytest.FixtureRequest) -> None:
    if database == "postgresql":
        request.getfixturevalue("pg_url")
    db.upgrade()
    # Given a database that a newer gradq migrated to a revision this one does not know
    with db.get_engine().begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    db.dispose_engines()
    # When a command opens it, Then it is refused as a schema mismatch, in one line
    code, out, err = cli("ls")
    assert code == 3 and out == ""
    [line] = err.strip().splitlines()
    assert "0099_from_the_future" in line and "newer than this gradq" in line
    assert "upgrade gradq" in line
    # and nothing was changed in it
    with db.get_engine().connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() \
            == "0099_from_the_future"


def test_sqlite_behind_is_migrated_again() -> None:
    """Only SQLite (the embedded default) is migrated automatically."""
    assert queries.list_jobs() == []
    db.downgrade(revision="base")
    assert queries.list_jobs() == []
    assert table_names() == TABLES


# ----------------------------------------------------------------- creation
def test_create_stores_a_job_and_a_comparison_with_children(backend: str) -> None:
    [single] = make_job(queue="gpu", priority=4)
    j = row(single)
    assert (j.kind, j.status, j.queue, j.priority) == ("train", JobStatus.QUEUED, "gpu", 4)
    assert (j.attempts, j.max_attempts, j.lease_token, j.worker) == (0, 3, 0, None)
    assert j.parent_id is None and j.cancel_requested is False

    ids = make_job(children=3)
    parent, kids = ids[0], ids[1:]
    assert row(parent).kind == "compare"
    assert all(row(k).parent_id == parent for k in kids)
    # workers run the children only
    assert sorted(r[0] for r in create.runnable(ids)) == sorted(kids)
    assert len(queries.list_jobs()) == 5


def test_a_dataset_is_stored_once_by_content_hash(backend: str) -> None:
    data = b"npz-bytes"
    make_job(dataset=("ab" * 32, data, "mine.npz"))
    make_job(dataset=("ab" * 32, data, "mine.npz"))
    assert count(Dataset) == 1
    assert count(Job, dataset_hash="ab" * 32) == 2


# ------------------------------------------------------------------- claims
def test_claim_is_a_compare_and_set(backend: str) -> None:
    [jid] = make_job()
    lease = leases.claim(jid, "w1")
    assert lease == Lease(jid, 1, "w1", 1)
    j = row(jid)
    assert (j.status, j.worker, j.attempts) == (JobStatus.RUNNING, "w1", 1)
    assert j.heartbeat_at is not None and j.started_at is not None
    assert leases.claim(jid, "w2") is None  # the second claim loses
    assert row(jid).worker == "w1"
    assert leases.claim("f" * 32, "w1") is None


def test_only_one_of_many_concurrent_claims_wins(backend: str) -> None:
    [jid] = make_job()
    n = 6
    barrier = threading.Barrier(n)
    won: list[Lease | None] = []

    def claim(i: int) -> None:
        barrier.wait()
        won.append(leases.claim(jid, f"w{i}"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [w for w in won if w is not None]
    assert len(won) == n and len(winners) == 1
    assert row(jid).worker == winners[0].worker and row(jid).attempts == 1


# ------------------------------------------------------------------ fencing
def test_after_a_sweep_the_old_lease_writes_nothing(backend: str) -> None:
    # Given a running job whose worker wrote one metric and then went silent
    [jid] = make_job()
    old = leases.claim(jid, "w1")
    writes.log(old, points(0), {"epoch": 0})
    lapse(jid)
    # When the sweeper hands it over
    assert sweeper.sweep(LEASE_S) == [(jid, "cpu", 0)]
    j = row(jid)
    assert j.status is JobStatus.QUEUED and j.worker is None
    assert j.lease_token == old.token + 1
    assert "lost its lease" in j.error
    # Then every write under the old lease is refused and leaves no trace
    fenced = [
        lambda: leases.renew(old),
        lambda: writes.log(old, points(1, 2), {"epoch": 1}),
        lambda: writes.save_checkpoint(old, 1, 2, b"ckpt"),
        lambda: writes.save_artifact(old, "model", b"params"),
        lambda: leases.set_device(old, "cpu (numpy)"),
        lambda: writes.end_failed(old, Failure.TRANSIENT, "blip"),
        lambda: writes.finish(old, JobStatus.SUCCEEDED, result=RESULT,
                            artifacts={"model": b"params"}, metrics=points(3)),
    ]
    for write in fenced:
        with pytest.raises(LeaseLost):
            write()
    assert count(Metric, job_id=jid) == 1
    assert count(Checkpoint) == count(Artifact) == count(Result) == 0
    j = row(jid)
    assert j.status is JobStatus.QUEUED and j.device is None
    assert json.loads(j.progress) == {"epoch": 0}
    # and once another worker holds it, the old lease is still refused
    new = leases.claim(jid, "w2")
    assert new.token > old.token and new.attempt == 2
    with pytest.raises(LeaseLost):
        writes.finish(old, JobStatus.FAILED, error="late")
    writes.finish(new, JobStatus.SUCCEEDED, result=RESULT, artifacts={"model": b"p"})
    assert row(jid).status is JobStatus.SUCCEEDED and row(jid).error is None
    assert queries.artifact(jid) == b"p"


def test_a_finished_job_refuses_further_writes(backend: str) -> None:
    [jid] = make_job()
    lease = leases.claim(jid, "w1")
    writes.finish(lease, JobStatus.SUCCEEDED, result=RESULT)
    with pytest.raises(LeaseLost):
        writes.log(lease, points(9), {})
    with pytest.raises(LeaseLost):
        writes.finish(lease, JobStatus.FAILED, error="twice")
    assert row(jid).status is JobStatus.SUCCEEDED


# ------------------------------------------------------------------ metrics
def test_metric_points_are_unique_on_job_name_and_step(backend: str) -> None:
    # Given a job that logged steps 0-2 of two metrics, then lost its worker
    [jid] = make_job()
    first = leases.claim(jid, "w1")
    writes.log(first, points(0, 1, 2) + points(0, 1, 2, name="val_loss"), {})
    lapse(jid)
    sweeper.sweep(LEASE_S)
    # When the resumed job logs steps 1-4 again (different values for the repeated ones)
    second = leases.claim(jid, "w2")
    writes.log(second, points(1, 2, 3, 4, value=50.0), {})
    writes.finish(second, JobStatus.SUCCEEDED, result=RESULT,
                metrics=points(4, value=99.0) + points(4, name="val_loss"))
    # Then the duplicates were ignored and the first values kept
    c = queries.curves(jid)["metrics"]
    assert c["train_loss"]["step"] == [0, 1, 2, 3, 4]
    assert c["train_loss"]["value"] == [1.0, 2.0, 3.0, 53.0, 54.0]
    assert c["val_loss"]["step"] == [0, 1, 2, 4]
    assert count(Metric, job_id=jid) == 9


def test_non_finite_metric_values_round_trip(backend: str) -> None:
    [jid] = make_job()
    lease = leases.claim(jid, "w1")
    values = [math.nan, math.inf, -math.inf, 0.0, -1.5, 1e300, 1e-300]
    writes.log(lease, [("train_loss", i, i, i, v) for i, v in enumerate(values)],
             {"train_loss": math.nan})
    got = queries.curves(jid, ["train_loss"])["metrics"]["train_loss"]["value"]
    assert math.isnan(got[0])
    assert got[1:] == values[1:]
    assert got[1] == math.inf and got[2] == -math.inf
    # a diverged job's result document keeps its non-finite losses as null
    writes.finish(lease, JobStatus.DIVERGED, error="loss became nan",
                result={**RESULT, "final": {"train_loss": math.nan, "test_loss": math.inf}})
    doc = queries.result(jid)
    assert doc["status"] == "diverged"
    assert doc["final"] == {"train_loss": None, "test_loss": None}


def test_curves_filter_by_metric_and_order_by_step(backend: str) -> None:
    [jid] = make_job()
    lease = leases.claim(jid, "w1")
    writes.log(lease, points(3, 1, 2) + points(1, name="val_loss"), {})
    doc = queries.curves(jid, ["train_loss"])
    assert doc["id"] == jid and set(doc["metrics"]) == {"train_loss"}
    m = doc["metrics"]["train_loss"]
    assert m["step"] == [1, 2, 3]
    assert m["epoch"] == [0.1, 0.2, 0.3] and m["time_s"] == [0.01, 0.02, 0.03]


# -------------------------------------------------------------- checkpoints
def test_checkpoints_keep_the_newest(backend: str) -> None:
    [jid] = make_job()
    assert writes.latest_checkpoint(jid) is None
    lease = leases.claim(jid, "w1")
    for epoch in (1, 2, 3):
        writes.save_checkpoint(lease, epoch, 10 * epoch, f"c{epoch}".encode())
    assert count(Checkpoint, job_id=jid) == 1
    assert writes.latest_checkpoint(jid) == (3, 30, b"c3")
    writes.save_checkpoint(lease, 4, 40, b"c4", keep=2)
    assert count(Checkpoint, job_id=jid) == 2
    writes.save_checkpoint(lease, 4, 40, b"c4-again", keep=2)  # the same step replaces
    assert count(Checkpoint, job_id=jid) == 2
    assert writes.latest_checkpoint(jid) == (4, 40, b"c4-again")


# ------------------------------------------------------------- user actions
def test_cancelling_a_queued_job_is_immediate(backend: str) -> None:
    [jid] = make_job()
    assert actions.cancel(jid) == [jid]
    j = row(jid)
    assert j.status is JobStatus.CANCELLED and j.finished_at is not None
    assert leases.claim(jid, "w1") is None
    assert sweeper.sweep(LEASE_S) == []  # never published again
    with pytest.raises(InvalidTransition):
        actions.cancel(jid)
    with pytest.raises(JobNotFound):
        actions.cancel("f" * 32)


def test_cancelling_a_running_job_is_a_request(backend: str) -> None:
    [jid] = make_job()
    lease = leases.claim(jid, "w1")
    assert leases.renew(lease) is False
    actions.cancel(jid)
    j = row(jid)
    assert j.status is JobStatus.RUNNING and j.cancel_requested is True
    # the trainer learns it at its next heartbeat or log interval
    assert leases.renew(lease) is True
    assert writes.log(lease, points(0), {}) is True
    writes.finish(lease, JobStatus.CANCELLED)
    assert row(jid).status is JobStatus.CANCELLED


def test_cancelling_a_comparison_cancels_its_children(backend: str) -> None:
    parent, queued, running = make_job(children=2)
    lease = leases.claim(running, "w1")
    assert sorted(actions.cancel(parent)) == sorted([parent, queued, running])
    assert row(queued).status is JobStatus.CANCELLED
    assert row(running).cancel_requested is True
    assert row(parent).status is JobStatus.RUNNING  # waits for the running child
    writes.finish(lease, JobStatus.CANCELLED)
    assert row(parent).status is JobStatus.CANCELLED


def test_cancelling_a_queued_comparison_ends_it_at_once(backend: str) -> None:
    parent, *kids = make_job(children=3)
    assert len(actions.cancel(parent)) == 4
    assert [row(k).status for k in kids] == [JobStatus.CANCELLED] * 3
    p = row(parent)
    assert p.status is JobStatus.CANCELLED and p.finished_at is not None
    assert sweeper.sweep(LEASE_S, republish_after_s=0) == []


def test_cancelling_one_child_leaves_the_comparison_running(backend: str) -> None:
    parent, a, b = make_job(children=2)
    actions.cancel(a)
    assert row(a).status is JobStatus.CANCELLED
    assert row(parent).status is JobStatus.QUEUED
    writes.finish(leases.claim(b, "w1"), JobStatus.SUCCEEDED, result=RESULT)
    p = row(parent)
    assert p.status is JobStatus.SUCCEEDED and "1 cancelled" in p.error


def test_retry_queues_a_finished_job_again(backend: str) -> None:
    [jid] = make_job(queue="gpu", priority=2)
    lease = leases.claim(jid, "w1")
    writes.finish(lease, JobStatus.FAILED, error="boom", traceback="Traceback ...")
    assert actions.retry(jid) == [(jid, "gpu", 2)]
    j = row(jid)
    assert j.status is JobStatus.QUEUED and j.attempts == 0
    assert j.error is None and j.traceback is None and j.finished_at is None
    assert j.enqueued_at is not None
    with pytest.raises(InvalidTransition):
        actions.retry(jid)  # queued
    again = leases.claim(jid, "w2")
    assert again.attempt == 1 and again.token > lease.token
    writes.finish(again, JobStatus.SUCCEEDED, result=RESULT)
    with pytest.raises(InvalidTransition):
        actions.retry(jid)  # succeeded
    with pytest.raises(JobNotFound):
        actions.retry("f" * 32)


def test_release_requeues_until_attempts_run_out(backend: str) -> None:
    [jid] = make_job(max_attempts=2)
    lease = leases.claim(jid, "w1")
    assert writes.end_failed(lease, Failure.TRANSIENT, "database blip") is JobStatus.QUEUED
    assert row(jid).status is JobStatus.QUEUED
    lease = leases.claim(jid, "w1")
    assert writes.end_failed(lease, Failure.TRANSIENT, "database blip") is JobStatus.FAILED
    j = row(jid)
    assert j.status is JobStatus.FAILED and "gave up after 2 attempts" in j.error


# ---------------------------------------------------------- parent settling
@pytest.mark.parametrize(("ends", "parent_status", "error"), [
    ((JobStatus.SUCCEEDED, JobStatus.SUCCEEDED), JobStatus.SUCCEEDED, None),
    ((JobStatus.SUCCEEDED, JobStatus.DIVERGED), JobStatus.SUCCEEDED, "1 diverged"),
    ((JobStatus.FAILED, JobStatus.DIVERGED), JobStatus.FAILED, "1 diverged, 1 failed"),
])
def test_a_comparison_settles_when_its_last_child_finishes(
        backend: str, ends: tuple[JobStatus, JobStatus], parent_status: JobStatus,
        error: str | None) -> None:
    parent, a, b = make_job(children=2)
    la, lb = leases.claim(a, "w1"), leases.claim(b, "w2")
    assert row(parent).status is JobStatus.RUNNING  # running since its first child
    writes.finish(la, ends[0], result=RESULT)
    assert row(parent).status is JobStatus.RUNNING
    writes.finish(lb, ends[1], result=RESULT)
    p = row(parent)
    assert p.status is parent_status and p.finished_at is not None
    assert (p.error is None) if error is None else (error in p.error)


def test_two_children_finishing_at_once_settle_the_parent(backend: str) -> None:
    """Each child's transaction sees the other still running unless they serialize on
    the parent's row: the parent must end up settled every time."""
    for _ in range(6):
        parent, *kids = make_job(children=2)
        held = [leases.claim(k, f"w{i}") for i, k in enumerate(kids)]
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def finish(lease: Lease, barrier: threading.Barrier = barrier,
                   errors: list[BaseException] = errors) -> None:
            try:
                barrier.wait()
                writes.finish(lease, JobStatus.SUCCEEDED, result=RESULT,
                            metrics=points(0, 1, 2, 3))
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=finish, args=(le,)) for le in held]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert [row(k).status for k in kids] == [JobStatus.SUCCEEDED] * 2
        p = row(parent)
        assert p.status is JobStatus.SUCCEEDED and p.finished_at is not None


# ------------------------------------------------------------------ sweeper
def test_sweep_republishes_queued_jobs_whose_message_may_be_lost(backend: str) -> None:
    [never] = make_job(queue="cpu")            # stored, never published
    [fresh] = make_job(queue="gpu")
    create.mark_enqueued([fresh])                 # published just now
    [old] = make_job(queue="auto", priority=7)
    create.mark_enqueued([old])
    backdate(old, "enqueued_at", 10 * LEASE_S)  # published long ago, never picked up
    parent, child = make_job(children=1)
    create.mark_enqueued([child])
    assert sorted(sweeper.sweep(LEASE_S)) == sorted([(never, "cpu", 0), (old, "auto", 7)])
    assert sweeper.sweep(LEASE_S) == []  # enqueued_at was renewed
    assert row(old).status is JobStatus.QUEUED and row(old).attempts == 0
    # the republish delay can be set apart from the lease; a comparison is never sent
    republished = [r[0] for r in sweeper.sweep(LEASE_S, republish_after_s=0)]
    assert sorted(republished) == sorted([never, fresh, old, child])


def test_sweep_leaves_live_leases_alone(backend: str) -> None:
    [jid] = make_job()
    lease = leases.claim(jid, "w1")
    backdate(jid, "heartbeat_at", LEASE_S / 2)
    assert sweeper.sweep(LEASE_S) == []
    assert row(jid).status is JobStatus.RUNNING
    leases.renew(lease)


def test_sweep_fails_a_job_out_of_attempts(backend: str) -> None:
    # Given a comparison child that may run twice
    parent, jid = make_job(children=1, max_attempts=2)
    first = leases.claim(jid, "w1")
    lapse(jid)
    assert [r[0] for r in sweeper.sweep(LEASE_S)] == [jid]  # one attempt left: queued again
    second = leases.claim(jid, "w2")
    assert second.attempt == 2
    # When its second worker dies too
    lapse(jid)
    # Then it is failed, not published, and the comparison settles
    assert sweeper.sweep(LEASE_S) == []
    j = row(jid)
    assert j.status is JobStatus.FAILED and j.finished_at is not None
    assert "gave up after 2 attempts" in j.error
    assert j.lease_token > second.token
    with pytest.raises(LeaseLost):
        writes.log(second, points(0), {})
    with pytest.raises(LeaseLost):
        leases.renew(first)
    assert row(parent).status is JobStatus.FAILED


def test_a_postgresql_connection_gives_up_on_a_cut_link_in_seconds(pg_url: str) -> None:
    """Keepalives and a TCP user time-out on every libpq connection: a partition that stalls
    a connection fails its statement in about half a minute (then retried on a new one),
    not after the kernel's retransmissions; a URL's own setting wins."""
    def parameters(url: str) -> dict[str, str]:
        with db.get_engine(url).connect() as c:
            return c.connection.dbapi_connection.info.get_parameters()

    got = parameters(pg_url)
    assert {k: got.get(k) for k in ("connect_timeout", "keepalives_idle", "keepalives_count",
                                     "tcp_user_timeout")} == {
        "connect_timeout": "10", "keepalives_idle": "10", "keepalives_count": "3",
        "tcp_user_timeout": "30000"}
    assert parameters(pg_url + "?tcp_user_timeout=5000")["tcp_user_timeout"] == "5000"
