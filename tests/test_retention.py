"""Retention (docs/guarantees.md, issue 13): ``gradq rm``, ``gradq gc`` and checkpoint retention, on
SQLite and PostgreSQL, with counts of every table before and after, and the rows of every
other job compared one by one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from _cli import invoke
from gradq.service import submit
from gradq.service.status import JobStatus
from gradq.service.store import checkpoint_policy, db, leases, retention, sweeper, writes
from gradq.service.store.models import Checkpoint, Job, Metric
from gradq.workers import runner

TRAIN = {"name": "keep-me", "device": "cpu", "data": {"dataset": "iris"},
         "model": {"hidden": [8]}, "optimizer": {"name": "adam", "lr": 0.01},
         "training": {"epochs": 3, "batch_size": 32}}
COMPARE = {"name": "cmp", "kind": "compare", "device": "cpu", "data": {"dataset": "iris"},
           "model": {"hidden": [4]}, "training": {"epochs": 2, "batch_size": 32},
           "compare": {"optimizers": ["sgd", "adam"], "seeds": 2}}
TABLES = ("jobs", "metrics", "results", "checkpoints", "artifacts", "datasets",
          "dataset_names")


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str:
    """The database under test: this test's SQLite file, or a fresh PostgreSQL one."""
    if request.param == "postgresql":
        request.getfixturevalue("pg_url")
        assert invoke("db", "upgrade")[0] == 0
    return request.param


# ------------------------------------------------------------------------ helpers
def store(tmp_path: Path, doc: dict[str, Any], name: str = "s.json") -> list[str]:
    """Validate and store a spec as ``gradq submit`` does (no broker): its ids."""
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return submit.create(submit.prepare(path))


def run_here(ids: list[str]) -> None:
    """Run stored jobs in this process, a comparison's children included."""
    for job_id in ids:
        runner.execute(job_id, worker="test-here")


def counts() -> dict[str, int]:
    with db.session_scope() as s:
        return {t: s.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES}


def rows_of_others(tree: set[str]) -> dict[str, str]:
    """A digest of every row, table by table, that does not belong to the jobs ``tree``."""
    out = {}
    with db.session_scope() as s:
        for t in TABLES:
            key = {"jobs": "id", "datasets": None, "dataset_names": None}.get(t, "job_id")
            rows = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                    for r in s.execute(sa.text(f"SELECT * FROM {t}")).all()]
            cols = list(s.execute(sa.text(f"SELECT * FROM {t} LIMIT 0")).keys())
            if key is not None:
                rows = [r for r in rows if r[cols.index(key)] not in tree]
            out[t] = hashlib.sha256("\n".join(sorted(map(repr, rows))).encode()).hexdigest()
    return out


def owned(job_ids: set[str]) -> dict[str, int]:
    """Rows anywhere that belong to ``job_ids`` (as a job, a child, or by job_id)."""
    with db.session_scope() as s:
        ids = list(job_ids)
        out = {"jobs": s.execute(sa.select(sa.func.count()).select_from(Job).where(
            Job.id.in_(ids) | Job.parent_id.in_(ids))).scalar()}
        for t in ("metrics", "results", "checkpoints", "artifacts"):
            out[t] = s.execute(sa.text(f"SELECT count(*) FROM {t} WHERE job_id IN :ids")
                               .bindparams(sa.bindparam("ids", expanding=True)),
                               {"ids": ids}).scalar()
    return out


def failed_with_checkpoint(tmp_path: Path, name: str) -> str:
    """A job that failed after writing a checkpoint (so it keeps it: retry resumes)."""
    [jid] = store(tmp_path, {**TRAIN, "name": name}, f"{name}.json")
    lease = leases.claim(jid, "test-here")
    writes.log(lease, [("train_loss", 0, 0.0, 0.0, 1.0)], {"epoch": 0})
    writes.save_checkpoint(lease, 1, 5, b"x" * 1000)
    writes.finish(lease, JobStatus.FAILED, error="boom")
    return jid


def tree_of(root: str) -> set[str]:
    with db.session_scope() as s:
        return {root, *s.execute(sa.select(Job.id).where(Job.parent_id == root)).scalars()}


# ---------------------------------------------------------------------------- rm
def test_rm_deletes_a_tree_and_touches_nothing_else(database: str, tmp_path: Path) -> None:
    # Given a finished train job, a finished comparison, and a failed job with a checkpoint
    other = store(tmp_path, TRAIN, "a.json")
    run_here(other)
    cmp_ids = store(tmp_path, COMPARE, "c.json")
    run_here(cmp_ids[1:])
    failed = failed_with_checkpoint(tmp_path, "failed")
    parent = cmp_ids[0]
    tree = tree_of(parent)
    assert len(tree) == 5
    mine = owned(tree)
    assert mine["metrics"] > 0 and mine["results"] == 4 and mine["artifacts"] >= 4
    before, others = counts(), rows_of_others(tree)

    # When the comparison is deleted (by a unique prefix)
    code, out, err = invoke("rm", parent[:8], "--json")

    # Then every row it owned is gone, the counts drop by exactly that, and no row of
    # another job changed
    assert code == 0, err
    [doc] = json.loads(out)
    assert doc["id"] == parent and doc["kind"] == "compare"
    assert {k: v["rows"] for k, v in doc["deleted"].items()} == mine
    assert owned(tree) == dict.fromkeys(mine, 0)
    after = counts()
    assert after == {t: before[t] - mine.get(t, 0) for t in TABLES}
    assert rows_of_others(tree) == others

    # and a failed job goes with its checkpoint, the train job with its curves
    code, out, err = invoke("rm", failed, other[0])
    assert code == 0, err
    assert out.count("deleted ") == 2
    assert owned({failed, other[0]}) == dict.fromkeys(mine, 0)
    assert counts() == {**dict.fromkeys(TABLES[:5], 0), "datasets": 0, "dataset_names": 0}


def test_rm_refuses_a_child_a_running_job_and_an_unknown_id_and_deletes_nothing(
        database: str, tmp_path: Path) -> None:
    cmp_ids = store(tmp_path, COMPARE, "c.json")
    run_here(cmp_ids[1:])
    [running] = store(tmp_path, TRAIN, "r.json")
    lease = leases.claim(running, "somewhere")
    assert lease is not None
    before = rows_of_others(set())

    cases = {
        (cmp_ids[1],): ("child of comparison", cmp_ids[0]),
        (running,): ("is running", "--force"),
        (cmp_ids[0], "0123456789abcdef0123456789abcdef"): ("no job",),
        (cmp_ids[0], running): ("is running",),  # checked before the first delete
    }
    for argv, names in cases.items():
        code, out, err = invoke("rm", *argv)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and out == "", (argv, err)
        assert all(n in lines[0] for n in names), lines[0]
        assert rows_of_others(set()) == before


def test_rm_force_cancels_waits_for_the_worker_then_deletes(database: str,
                                                             tmp_path: Path) -> None:
    # Given a running job whose "worker" (a thread) stops at its next log interval
    [jid] = store(tmp_path, TRAIN, "r.json")
    lease = leases.claim(jid, "thread")
    writes.save_checkpoint(lease, 1, 5, b"c" * 100)
    stopped = threading.Event()

    def worker() -> None:
        step = 0
        while not writes.log(lease, [("train_loss", step, step, 0.0, 1.0)], {}):
            step += 1
            time.sleep(0.05)
        time.sleep(0.3)  # the interval's end: still running while rm waits
        writes.finish(lease, JobStatus.CANCELLED, error="cancelled")
        stopped.set()

    t = threading.Thread(target=worker)
    t.start()
    # When it is removed with --force
    code, out, err = invoke("rm", jid, "--force", "--json")
    t.join(10)
    # Then it waited for the worker to end the job, and then deleted everything
    assert code == 0, err
    assert stopped.is_set()
    assert "waiting for its worker" in err
    [doc] = json.loads(out)
    assert doc["deleted"]["checkpoints"]["rows"] == 1 and doc["deleted"]["metrics"]["rows"] > 0
    assert owned({jid}) == {"jobs": 0, "metrics": 0, "results": 0, "checkpoints": 0,
                            "artifacts": 0}


def test_rm_force_gives_up_with_a_clear_line_when_the_worker_holds_on(
        database: str, tmp_path: Path) -> None:
    [jid] = store(tmp_path, TRAIN, "r.json")
    assert leases.claim(jid, "frozen") is not None  # a worker that never reads its cancel
    code, out, err = invoke("rm", jid, "--force", "--wait", "0.5")
    assert code == 2
    assert "has not let go" in err.strip().splitlines()[-1]
    assert "nothing was deleted" in err
    assert owned({jid})["jobs"] == 1


def test_rm_of_several_jobs_is_all_or_nothing(database: str, tmp_path: Path) -> None:
    # Given a finished job A and a job B whose worker is frozen (its lease still held)
    [a] = store(tmp_path, TRAIN, "a.json")
    run_here([a])
    [b] = store(tmp_path, {**TRAIN, "seed": 1}, "b.json")
    frozen = leases.claim(b, "frozen")
    assert frozen is not None
    before = owned({a})
    # When both are removed with --force and B never lets go
    code, out, err = invoke("rm", a, b, "--force", "--wait", "0.5", "--json")
    # Then the command fails saying nothing was deleted, and nothing was: A is whole
    assert code == 2 and out == ""
    assert b in err.strip().splitlines()[-1] and "nothing was deleted" in err
    assert owned({a}) == before and before["jobs"] == 1 and before["metrics"] > 0
    assert owned({b})["jobs"] == 1
    # When B's worker lets go (it ends the job), Then both go in one command
    writes.finish(frozen, JobStatus.CANCELLED, error="cancelled")
    code, out, err = invoke("rm", a, b, "--json")
    assert code == 0, err
    assert [d["id"] for d in json.loads(out)] == [a, b]
    assert owned({a, b})["jobs"] == 0


def test_rm_of_a_queued_job_wins_against_its_claim(database: str, tmp_path: Path) -> None:
    [jid] = store(tmp_path, TRAIN, "q.json")
    assert invoke("rm", jid)[0] == 0
    assert leases.claim(jid, "late") is None  # the broker's message finds no row


# ---------------------------------------------------------------------------- gc
def test_gc_frees_spent_checkpoints_unused_datasets_and_orphans(
        database: str, tmp_path: Path) -> None:
    # Given: a failed job with a checkpoint, a succeeded job, a running job with a
    # checkpoint, a dataset whose only job was deleted, and an orphaned metric row
    failed = failed_with_checkpoint(tmp_path, "failed")
    ok = store(tmp_path, TRAIN, "ok.json")
    run_here(ok)
    [running] = store(tmp_path, TRAIN, "run.json")
    lease = leases.claim(running, "busy")
    writes.save_checkpoint(lease, 1, 5, b"r" * 300)
    X = np.random.default_rng(0).normal(size=(60, 3))
    np.savez(tmp_path / "d.npz", X=X, y=np.arange(60) % 3)
    [gone] = store(tmp_path, {**TRAIN, "data": {"dataset": str(tmp_path / "d.npz")}}, "d.json")
    assert invoke("rm", gone)[0] == 0
    _orphan_metric()
    before = counts()
    kept = rows_of_others({failed, "orphan-job"})

    # When gc runs dry, nothing changes, and it says what it would free
    code, out, err = invoke("gc", "--dry-run", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["dry_run"] is True
    assert doc["freed"]["checkpoints"] == {"rows": 1, "bytes": 1000}
    assert doc["freed"]["datasets"]["rows"] == 1 and doc["freed"]["datasets"]["bytes"] > 1000
    assert doc["freed"]["orphans"]["rows"] == 1
    assert counts() == before

    # When it runs for real
    code, out, err = invoke("gc")
    assert code == 0, err
    assert "checkpoints" in out and "datasets" in out and "orphans" in out
    # Then exactly those rows went; the running job's checkpoint and everything else stayed
    after = counts()
    assert after == {**before, "checkpoints": before["checkpoints"] - 1,
                     "datasets": before["datasets"] - 1, "metrics": before["metrics"] - 1}
    assert writes.latest_checkpoint(running) is not None
    assert writes.latest_checkpoint(failed) is None
    now = rows_of_others({failed, "orphan-job"})
    assert {k: v for k, v in now.items() if k != "datasets"} == {
        k: v for k, v in kept.items() if k != "datasets"}
    if database == "sqlite":
        assert "gc --vacuum" in err
        code, out, err = invoke("gc", "--vacuum", "--json")
        assert code == 0 and json.loads(out)["vacuum"]["ran"] is True
    else:
        assert "VACUUM FULL" in err and "pg_repack" in err


def _orphan_metric() -> None:
    """A metric row whose job is gone, as a delete interrupted with foreign keys off (or
    an older gradq) leaves it."""
    engine = db.get_engine()
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":  # before the insert opens the transaction
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        else:  # no foreign-key triggers for this transaction (the test user is superuser)
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        conn.execute(sa.insert(Metric).values(job_id="orphan-job", name="train_loss", step=0,
                                              epoch=0.0, time_s=0.0, value=1.0))
    engine.dispose()  # the pooled connection had foreign keys off


def test_gc_racing_a_resuming_job_leaves_its_checkpoint(database: str,
                                                       tmp_path: Path) -> None:
    # Given a job whose worker died after its first checkpoint (lease lapsed: queued again)
    [jid] = store(tmp_path, {**TRAIN, "training": {"epochs": 6, "batch_size": 32}}, "r.json")
    lease = leases.claim(jid, "dead")
    from gradq.train.trainer import Trainer
    from gradq.workers.data import load_dataset, prepare_splits

    with db.session_scope() as s:
        spec = json.loads(s.get(Job, jid).spec)
    hooks = _CheckpointOnce(lease)
    with contextlib.suppress(_Died):
        Trainer(spec, prepare_splits(spec, load_dataset(spec, None)), np, hooks).run()
    assert jid in [t[0] for t in sweeper.sweep(lease_s=0)]
    # When gc runs again and again while another worker resumes it
    stop = threading.Event()
    freed: list[int] = []

    def collector() -> None:
        while not stop.is_set():
            freed.append(retention.collect()["freed"]["checkpoints"]["rows"])

    t = threading.Thread(target=collector)
    t.start()
    try:
        status = runner.execute(jid, worker="second", batch=False)
    finally:
        stop.set()
        t.join(30)
    # Then the job resumed from its checkpoint (gc never took it) and succeeded
    assert status == "succeeded"
    with db.session_scope() as s:
        extra = json.loads(s.execute(sa.text("SELECT extra FROM results WHERE job_id = :j"),
                                     {"j": jid}).scalar())
    assert extra["resumed_from"]["epoch"] == 2
    assert freed and sum(freed) == 0
    # and, having succeeded, it dropped its checkpoint itself
    assert writes.latest_checkpoint(jid) is None


class _Died(Exception):
    pass


class _CheckpointOnce:
    """Trainer hooks writing through a lease until the checkpoint of epoch 2, then dying."""

    def __init__(self, lease: leases.Lease) -> None:
        self.lease = lease

    def log(self, rows: list, progress: dict) -> bool:
        return writes.log(self.lease, rows, progress)

    def checkpoint(self, epoch: int, step: int, data: Any) -> None:
        writes.save_checkpoint(self.lease, epoch, step, bytes(data))  # loop's Snapshot
        if epoch >= 2:
            raise _Died


# ------------------------------------------------------------- checkpoint retention
def test_a_succeeded_job_drops_its_checkpoints_unless_kept(
        database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    [dropped] = store(tmp_path, TRAIN, "a.json")
    run_here([dropped])
    monkeypatch.setenv("GRADQ_KEEP_CHECKPOINTS", "1")
    [kept] = store(tmp_path, TRAIN, "b.json")
    run_here([kept])
    with db.session_scope() as s:
        have = dict(s.execute(sa.select(Checkpoint.job_id, sa.func.count())
                              .group_by(Checkpoint.job_id)).all())
    assert dropped not in have and have.get(kept) == 1


def test_keep_checkpoints_is_a_yes_or_no(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradq.service.settings import get_settings

    for raw, value in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv("GRADQ_KEEP_CHECKPOINTS", raw)
        assert get_settings().keep_checkpoints is value
    monkeypatch.setenv("GRADQ_KEEP_CHECKPOINTS", "maybe")
    with pytest.raises(ValueError, match="GRADQ_KEEP_CHECKPOINTS: 'maybe'"):
        get_settings()


@pytest.mark.parametrize(("status", "phase", "parent", "needed"), [
    ("running", None, None, True),  # resumes from it after a lost worker
    ("queued", None, None, True),
    ("succeeded", None, None, False),
    ("failed", None, None, False),  # gc drops it (retry then starts over)
    ("cancelled", None, "running", False),
    ("succeeded", "search", "running", True),  # a trial waiting at a rung
    ("succeeded", "search", "succeeded", False),  # its comparison has settled
    ("succeeded", "search", "cancelled", True),  # gradq retry resumes the search
    ("succeeded", "search", "failed", True),
    ("succeeded", "tune", "running", False),  # grid tuning runs are never resumed
])
def test_the_checkpoint_rule(status: str, phase: str | None, parent: str | None,
                             needed: bool) -> None:
    spec = {"_phase": phase} if phase else {}
    assert checkpoint_policy.checkpoint_needed(status, spec, parent) is needed


def test_a_search_trial_keeps_its_checkpoint_until_the_comparison_settles(
        database: str, tmp_path: Path) -> None:
    # Given a comparison whose two children are search trials (as the search planner
    # marks them), the first finished and waiting at a rung
    ids = store(tmp_path, COMPARE, "c.json")
    parent, trials = ids[0], ids[1:3]
    with db.session_scope() as s:
        for jid in ids[1:]:
            job = s.get(Job, jid)
            job.spec = json.dumps({**json.loads(job.spec), "_phase": "search"})
        s.execute(sa.delete(Job).where(Job.id.in_(ids[3:])))
    held = [leases.claim(t, "w") for t in trials]
    for lease in held:
        writes.save_checkpoint(lease, 1, 3, b"t" * 10)
    writes.finish(held[0], JobStatus.SUCCEEDED)
    assert writes.latest_checkpoint(trials[0]) is not None  # kept: may be promoted
    assert retention.collect()["freed"]["checkpoints"]["rows"] == 0  # gc keeps it too
    # When the last trial ends, the comparison settles
    writes.finish(held[1], JobStatus.SUCCEEDED)
    with db.session_scope() as s:
        assert JobStatus(s.get(Job, parent).status) is JobStatus.SUCCEEDED
    # Then both trials' checkpoints are gone
    assert [writes.latest_checkpoint(t) for t in trials] == [None, None]


# ------------------------------------------------------------ real workers, busy
LONG = {"device": "cpu", "data": {"dataset": "digits"}, "model": {"hidden": [32]},
        "optimizer": {"name": "sgd", "lr": 0.01},
        "training": {"epochs": 100000, "batch_size": 64}}


@pytest.mark.services
def test_rm_while_two_real_workers_are_busy(pg_url: str, redis_url: str,
                                           tmp_path: Path) -> None:
    from faultkit import Pool, pools, submit_spec, wait_for, wait_jobs

    assert invoke("db", "upgrade")[0] == 0
    spec = tmp_path / "small.json"
    spec.write_text(json.dumps(TRAIN))
    with pools(Pool("a", tmp_path), Pool("b", tmp_path)):
        # Given a finished job, then two workers busy: one on a long train job, the other
        # on a long comparison's two children (trained together as a stack)
        [done] = submit_spec(spec)
        wait_jobs([done], 120, want={"succeeded"})
        (tmp_path / "long.json").write_text(json.dumps({**LONG, "name": "long"}))
        (tmp_path / "cmp.json").write_text(json.dumps({
            **LONG, "name": "long-cmp", "kind": "compare",
            "compare": {"optimizers": ["sgd", "momentum"], "seeds": 1}}))
        [long_job] = submit_spec(tmp_path / "long.json")
        cmp_ids = submit_spec(tmp_path / "cmp.json")
        busy = [long_job, *cmp_ids[1:]]
        wait_jobs(busy, 120, want={"running"})
        wait_for(lambda: all(owned({j})["metrics"] > 3 for j in busy), 60,
                 "both workers to be writing curves")
        untouched = rows_of_others(set(busy) | {cmp_ids[0]})

        # When rm is asked without --force: refused, one line, nothing deleted
        for ref, says in ((long_job, "is running"), (cmp_ids[0], "is running"),
                          (cmp_ids[1], "child of comparison")):
            code, out, err = invoke("rm", ref)
            assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
        assert owned({long_job})["jobs"] == 1 and owned({cmp_ids[0]})["jobs"] == 3

        # When rm --force is asked: each is cancelled, its worker lets go, and it is gone
        code, out, err = invoke("rm", "--force", long_job, cmp_ids[0], "--json")
        assert code == 0, err
        assert [d["id"] for d in json.loads(out)] == [long_job, cmp_ids[0]]
        assert owned({long_job, cmp_ids[0]}) == dict.fromkeys(
            ("jobs", "metrics", "results", "checkpoints", "artifacts"), 0)
        assert rows_of_others(set(busy) | {cmp_ids[0]}) == untouched
        # and the workers, whose jobs vanished under them, go on working
        [after] = submit_spec(spec)
        wait_jobs([after], 120, want={"succeeded"})
    assert counts()["jobs"] == 2
