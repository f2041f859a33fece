"""Jobs survive faults (docs/guarantees.md, issue 6): real worker pools on the real Redis and
PostgreSQL, killed, paused and cut off from their services while they work.

Every test runs ``gradq worker --cpu`` pools as subprocesses in process groups of their own
(tests/faultkit.py) with a short lease (``GRADQ_LEASE_S=3``) and tiny jobs, and kills them
all when it ends, pass or fail. Jobs read a small dataset file rather than a built-in, so
that a fresh worker process does not spend seconds importing scikit-learn.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from faultkit import (
    LEASE_S,
    Pool,
    RedisServer,
    alive,
    blobs_file,
    curves,
    job_row,
    pools,
    queue_lengths,
    redis_down,
    restart_postgres,
    result_extra,
    results_count,
    statuses,
    submit_spec,
    wait_for,
    wait_jobs,
    worker_pid,
    write_spec,
)
from gradq.cli.main import main as gradq_cli
from gradq.service.store import queries
from gradq.service.store.writes import latest_checkpoint

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _cluster(url: str, redis_url: str, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    from gradq.service.store.db import upgrade

    upgrade(url)
    monkeypatch.setenv("GRADQ_LEASE_S", str(LEASE_S))
    monkeypatch.delenv("GRADQ_FAILPOINTS", raising=False)
    return SimpleNamespace(pg=url, redis=redis_url, tmp=tmp_path,
                           small=blobs_file(tmp_path / "small.npz"),
                           large=blobs_file(tmp_path / "large.npz", n=2000, d=20))


@pytest.fixture
def cluster(pg_url: str, redis_url: str, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A migrated PostgreSQL database, an empty Redis database, the suite's lease, and
    two dataset files: ``small`` (150 × 4: 90 training samples) and ``large`` (2,000 × 20)."""
    return _cluster(pg_url, redis_url, tmp_path, monkeypatch)


def train_spec(data: Path, *, hidden: list[int] | None = None, **training: Any
               ) -> dict[str, Any]:
    return {"device": "cpu", "data": {"dataset": str(data)},
            "model": {"hidden": [16] if hidden is None else hidden},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"checkpoint_every": 1, **training}}


def spec_file(tmp: Path, spec: dict[str, Any], name: str = "job.json") -> Path:
    return write_spec(tmp / name, spec)


def cli(*args: str) -> Any:
    """Run one ``gradq`` command in this process."""
    return CliRunner().invoke(gradq_cli, list(args), catch_exceptions=False)


def assert_contiguous(job: str, every: int, last: int) -> None:
    """Each metric of ``job`` has the points 0, every, 2·every, …, last once each."""
    for name, m in curves(job).items():
        assert m["step"] == list(range(0, last + 1, every)), name


# ------------------------------------------------------------------------- kill -9
# small: 90 training samples in batches of 16 → 6 steps per epoch, 8 epochs, a curve point
# after every step and a checkpoint after every epoch but the last
KILL_JOB = {"epochs": 8, "batch_size": 16, "log_every": 1}


def last_checkpoint_epoch(point: str, hit: int, steps_per_epoch: int) -> int:
    """The epoch of the newest checkpoint stored when failpoint ``point`` fires the
    ``hit``-th time (curve point k is logged right after step k; the first is step 0)."""
    if point == "checkpoint":  # dies before writing the hit-th checkpoint
        return hit - 1
    if point == "step":  # dies inside step number `hit` (its update computed, not counted)
        return (hit - 1) // steps_per_epoch
    step = hit - 1  # metrics, metrics_written: the hit-th log interval is step hit − 1
    return (step - 1) // steps_per_epoch


KILL_POINTS = [
    pytest.param("step", 20, id="during-an-epoch"),
    pytest.param("checkpoint", 3, id="while-checkpointing"),
    pytest.param("metrics", 23, id="before-a-metrics-write"),
    pytest.param("metrics_written", 25, id="after-the-metrics-write-ending-an-epoch"),
]


@pytest.mark.parametrize(("point", "hit"), KILL_POINTS)
def test_kill_9_mid_job_resumes_on_another_worker_exactly_once(cluster, point: str,
                                                               hit: int) -> None:
    # Given a victim pool that SIGKILLs its Celery process at the failpoint and a healthy
    # pool beside it; only the victim consumes the queue the job is first sent to
    spec = spec_file(cluster.tmp, train_spec(cluster.small, **KILL_JOB))
    victim = Pool("victim", cluster.tmp, env={"GRADQ_FAILPOINTS": f"{point}:{hit}"},
                  queues="victim")
    healthy = Pool("healthy", cluster.tmp)
    with pools(victim, healthy):
        reference = submit_spec(spec)[0]  # the same spec, run uninterrupted by `healthy`
        job = submit_spec(spec, queue="victim")[0]

        # When the victim claims the job and is killed at the failpoint
        first = wait_for(lambda: (r := job_row(job))["worker"] and r, 30,
                         "the victim to claim the job", on_timeout=victim.tail)
        pid = worker_pid(first["worker"])
        wait_for(lambda: not alive(pid), 30, f"the victim's process {pid} to die",
                 on_timeout=victim.tail)
        checkpoint = latest_checkpoint(job)  # read before anyone resumes (lease: 3 s)
        wait_for(lambda: f"pid:{pid} exited with 'signal 9 (SIGKILL)'" in victim.log(), 10,
                 "the victim's Celery to report the SIGKILL", on_timeout=victim.tail)
        victim.kill()  # a replacement process would count failpoint hits from zero

        # Then the healthy pool takes it over after the lease and finishes it, once
        wait_jobs([job, reference], 60, pools=[healthy])
        row, ref_row = job_row(job), job_row(reference)
        assert (row["status"], ref_row["status"]) == ("succeeded", "succeeded"), row["error"]
        assert row["attempts"] == 2 and ref_row["attempts"] == 1
        assert results_count([job]) == 1
        assert healthy.ran(row["worker"]), row["worker"]

        # ... from the last checkpoint: the epochs before it were not run again
        ref_doc = queries.result(reference)
        steps, epochs = ref_doc["final"]["steps"], ref_doc["final"]["epochs"]
        assert checkpoint is not None
        ck_epoch, ck_step, _ = checkpoint
        assert ck_epoch == last_checkpoint_epoch(point, hit, steps // epochs)
        assert result_extra(job)["resumed_from"] == {"epoch": ck_epoch, "step": ck_step}
        assert f"job {job} resumes from epoch {ck_epoch} (step {ck_step})" in healthy.log()

        # ... and its curves are the uninterrupted run's: every step once, the same values
        got, want = curves(job), curves(reference)
        assert sorted(got) == sorted(want)
        for name in want:
            assert got[name]["step"] == list(range(steps + 1)), name
            assert got[name]["value"] == want[name]["value"], name
        assert queries.result(job)["final"] == ref_doc["final"]


def test_attempts_are_capped_and_retry_resumes_the_failed_job(cluster, monkeypatch):
    # Given a job allowed one attempt, whose worker is killed while checkpointing
    monkeypatch.setenv("GRADQ_MAX_ATTEMPTS", "1")
    spec = spec_file(cluster.tmp, train_spec(cluster.small, **KILL_JOB))
    victim = Pool("victim", cluster.tmp, env={"GRADQ_FAILPOINTS": "checkpoint:3"},
                  queues="victim")
    healthy = Pool("healthy", cluster.tmp)
    with pools(victim, healthy):
        job = submit_spec(spec, queue="victim")[0]
        first = wait_for(lambda: (r := job_row(job))["worker"] and r, 30,
                         "the victim to claim the job", on_timeout=victim.tail)
        pid = worker_pid(first["worker"])
        wait_for(lambda: not alive(pid), 30, "the victim to die", on_timeout=victim.tail)
        victim.kill()

        # Then its lease lapses and, out of attempts, it fails saying why
        assert wait_jobs([job], 30, pools=[healthy]) == {job: "failed"}
        doc = json.loads(cli("status", job, "--json").output)
        assert "gave up after 1 attempts" in doc["error"] and doc["attempts"] == 1
        assert results_count([job]) == 0

        # When the user retries it, the healthy pool resumes it from its last checkpoint
        out = cli("retry", job)
        assert out.exit_code == 0, out.output
        assert wait_jobs([job], 30, pools=[healthy]) == {job: "succeeded"}
        row = job_row(job)
        assert row["attempts"] == 1 and healthy.ran(row["worker"]) and not row["error"]
        assert result_extra(job)["resumed_from"] == {"epoch": 2, "step": 12}
        assert results_count([job]) == 1
        assert_contiguous(job, 1, 8 * 6)


# ------------------------------------------------------------------------- SIGSTOP
def test_worker_paused_past_its_lease_loses_the_job_and_its_writes_are_refused(cluster):
    # Given a job running on a victim pool (about 0.1 s an epoch) and a healthy pool
    spec = spec_file(cluster.tmp, train_spec(cluster.large, hidden=[64, 64], epochs=30,
                                             batch_size=32, log_every="epoch"))
    victim = Pool("victim", cluster.tmp, queues="victim")
    healthy = Pool("healthy", cluster.tmp)
    with pools(victim, healthy):
        job = submit_spec(spec, queue="victim")[0]
        wait_for(lambda: json.loads(job_row(job)["progress"] or "{}").get("epoch", 0) >= 2,
                 30, "the victim to train two epochs", on_timeout=victim.tail)

        # When the whole victim pool is stopped for longer than its lease
        victim.pause()
        paused = time.monotonic()
        try:
            time.sleep(0.2)  # a commit the victim had sent is done by now
            checkpoint = latest_checkpoint(job)  # the newest the victim stored
            taken = wait_for(lambda: (r := job_row(job))["attempts"] == 2
                             and r["status"] == "running" and r, 30,
                             "the job to move to the healthy pool", on_timeout=healthy.tail)
        finally:
            victim.resume()  # woken while the healthy pool runs the job
        assert time.monotonic() - paused > LEASE_S
        assert healthy.ran(taken["worker"]), taken["worker"]

        # Then the woken victim's next write is refused by the fencing token: it abandons
        wait_for(lambda: f"job {job}: lease lost; abandoning it" in victim.log(), 30,
                 "the woken victim to abandon the job", on_timeout=victim.tail)
        wait_jobs([job], 60, pools=[victim, healthy])
        row = job_row(job)
        assert row["status"] == "succeeded", row["error"]
        assert row["attempts"] == 2 and healthy.ran(row["worker"])
        assert results_count([job]) == 1
        ck_epoch, ck_step, _ = checkpoint
        assert result_extra(job)["resumed_from"] == {"epoch": ck_epoch, "step": ck_step}
        assert ck_epoch >= 1
        spe = ck_step // ck_epoch
        assert_contiguous(job, spe, 30 * spe)
        assert victim.proc.poll() is None  # the victim pool itself keeps running


def test_worker_frozen_inside_a_fenced_write_does_not_block_the_hand_over(cluster):
    """Paused between the fencing UPDATE and its commit, a worker holds the job's row lock.
    Its session is ended after a lease (by the server's idle-in-transaction timeout, or by
    the sweeper when it was stopped in the middle of a pipelined write), so the hand-over
    still happens."""
    import sqlalchemy as sa
    from faultkit import engine

    spec = spec_file(cluster.tmp, train_spec(cluster.small, hidden=[8], epochs=40,
                                             batch_size=16, log_every=1))
    victim = Pool("victim", cluster.tmp, queues="victim", env={"PGAPPNAME": "gradq-victim"})
    healthy = Pool("healthy", cluster.tmp)
    holds_job_row = sa.text(
        "SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
        "JOIN pg_class c ON c.oid = l.relation WHERE a.application_name = 'gradq-victim' "
        "AND c.relname = 'jobs' AND l.mode = 'RowExclusiveLock'")

    def in_fenced_write() -> bool:
        with engine().connect() as c:
            return bool(c.execute(holds_job_row).scalar())

    def sessions() -> str:
        with engine().connect() as c:
            rows = c.execute(sa.text(
                "SELECT pid, application_name, state, wait_event_type, left(query, 70) "
                "FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()")).all()
        return "sessions:\n" + "\n".join(map(str, rows)) + "\n" + healthy.tail(10)

    with pools(victim, healthy):
        job = submit_spec(spec, queue="victim")[0]
        wait_for(lambda: json.loads(job_row(job)["progress"] or "{}").get("step", 0) >= 6,
                 30, "the victim to train", on_timeout=victim.tail)

        # When the victim is stopped while it holds the job's row lock (try until caught)
        frozen = False
        try:
            for _ in range(500):
                if in_fenced_write():
                    victim.pause()
                    time.sleep(0.05)
                    if in_fenced_write():
                        frozen = True
                        break
                    victim.resume()
            assert frozen, "never caught the victim inside a fenced write"

            # Then the job still moves to the healthy pool
            taken = wait_for(lambda: (r := job_row(job))["attempts"] == 2
                             and r["status"] == "running" and r, 30,
                             "the job to move to the healthy pool", on_timeout=sessions)
        finally:
            victim.resume()
        assert healthy.ran(taken["worker"])
        wait_for(lambda: f"job {job}: lease lost; abandoning it" in victim.log(), 30,
                 "the woken victim to abandon the job", on_timeout=victim.tail)
        wait_jobs([job], 60, pools=[victim, healthy])
        row = job_row(job)
        assert (row["status"], row["attempts"]) == ("succeeded", 2), row["error"]
        assert healthy.ran(row["worker"]) and results_count([job]) == 1
        assert_contiguous(job, 1, 40 * 6)


def test_a_frozen_writer_neither_stalls_the_sweeper_nor_keeps_its_job(cluster):
    import sqlalchemy as sa
    from gradq.service.store import leases, sweeper

    # Given a running job whose lease has lapsed, its row locked by a transaction that
    # never ends (a plain session: what a worker stopped mid-write leaves behind)
    job = submit_spec(spec_file(cluster.tmp, train_spec(cluster.small, epochs=1)))[0]
    assert leases.claim(job, "frozen-worker") is not None
    eng = sa.create_engine(cluster.pg, poolclass=sa.pool.NullPool)
    with eng.begin() as c:
        c.execute(sa.text("UPDATE jobs SET heartbeat_at = now() - interval '1 hour' "
                          "WHERE id = :id"), {"id": job})
    frozen = eng.connect()
    try:
        frozen.begin()
        pid = frozen.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        frozen.execute(sa.text("UPDATE jobs SET progress = progress WHERE id = :id"),
                       {"id": job})

        # When the sweeper runs, it skips the locked row at once instead of waiting on it
        t0 = time.monotonic()
        assert job not in [j for j, _, _ in sweeper.sweep(1.0)]
        assert time.monotonic() - t0 < 1.0
        assert sweeper.end_frozen_writers(60.0) == []  # not frozen for a lease yet

        # Then, once the transaction is older than a lease, the sweeper ends its session
        time.sleep(1.1)
        assert sweeper.end_frozen_writers(1.0) == [pid]
        with pytest.raises(sa.exc.OperationalError):
            frozen.execute(sa.text("SELECT 1"))
    finally:
        frozen.invalidate()
        eng.dispose()
    # ... and hands the job over
    swept = wait_for(lambda: [j for j, _, _ in sweeper.sweep(1.0)], 10, "the hand-over")
    assert swept == [job]
    row = job_row(job)
    assert (row["status"], row["worker"], row["lease_token"]) == ("queued", None, 2)


# ---------------------------------------------------------------------------- Redis
def test_redis_restart_loses_no_running_or_queued_job(cluster):
    # Given two pools, two jobs running and four queued (about 1 s each)
    spec = spec_file(cluster.tmp, train_spec(cluster.large, hidden=[32], epochs=12,
                                             batch_size=64, log_every="epoch"))
    a, b = Pool("a", cluster.tmp), Pool("b", cluster.tmp)
    with pools(a, b):
        ids = [submit_spec(spec)[0] for _ in range(6)]
        wait_for(lambda: list(statuses(ids).values()).count("running") == 2, 30,
                 "two jobs to run", on_timeout=lambda: a.tail() + b.tail())

        # When Redis is stopped and started again: every message in it is gone
        with redis_down(cluster.redis):
            lost = [j for j, s in statuses(ids).items() if s == "queued"]
            time.sleep(1.0)
        assert lost, "no job was still queued when Redis went down"

        # Then the running jobs finish, the sweeper publishes the lost ones again, and
        # every job runs to completion exactly once
        final = wait_jobs(ids, 90, pools=[a, b])
        assert set(final.values()) == {"succeeded"}
        assert results_count(ids) == len(ids)
        assert {job_row(j)["attempts"] for j in ids} == {1}
        assert "sweeper: published" in a.log() + b.log()
        for j in ids:
            assert_contiguous(j, 19, 12 * 19)  # 2,000 × 0.6 / 64 → 19 steps an epoch


# ----------------------------------------------------------------------- PostgreSQL
def test_postgres_restart_while_jobs_run_workers_back_off_and_continue(cluster):
    # Given two pools running jobs that write a curve point every step (a few seconds
    # each), and more jobs queued behind them
    spec = spec_file(cluster.tmp, train_spec(cluster.large, hidden=[32], epochs=15,
                                             batch_size=64, log_every=1))
    a, b = Pool("a", cluster.tmp), Pool("b", cluster.tmp)
    with pools(a, b):
        ids = [submit_spec(spec)[0] for _ in range(4)]

        def mid_run() -> bool:
            rows = [job_row(j) for j in ids]
            return sum(r["status"] == "running"
                       and json.loads(r["progress"] or "{}").get("step", 0) >= 20
                       for r in rows) == 2

        wait_for(mid_run, 30, "two jobs to be training", on_timeout=lambda: a.tail() + b.tail())

        # When PostgreSQL restarts under them (fast mode: every session is terminated)
        down_s = restart_postgres()

        # Then the workers retry with backoff and every job ends succeeded, once
        final = wait_jobs(ids, 90, pools=[a, b])
        assert set(final.values()) == {"succeeded"}, final
        assert results_count(ids) == len(ids)
        logs = a.log() + b.log()
        assert "retrying in" in logs or "heartbeat for" in logs
        for j in ids:
            assert_contiguous(j, 1, 15 * 19)  # 2,000 × 0.6 / 64 → 19 steps an epoch
        print(f"PostgreSQL restart took {down_s:.1f} s; attempts "
              f"{sorted(job_row(j)['attempts'] for j in ids)}")


# --------------------------------------------------------------------------- burst
BURST = 1000


def test_burst_of_1000_jobs_on_two_workers_runs_each_exactly_once(cluster):
    import sqlalchemy as sa
    from faultkit import engine
    from gradq.service import submit
    from gradq.service.celery_app import send_job
    from gradq.service.store import create
    from gradq.service.store.models import Job

    spec = spec_file(cluster.tmp, train_spec(cluster.small, max_steps=1))
    prepared = submit.prepare(spec)
    # The default lease (60 s) here: the sweeper republishes every job queued for 2 × lease, so a
    # 3 s lease would send the whole backlog again every 6 s (harmless, each claim is a
    # compare-and-set, but it would time the sweeper rather than the queue).
    a = Pool("a", cluster.tmp, lease_s=60)
    b = Pool("b", cluster.tmp, lease_s=60)
    with pools(a, b):
        # Given two idle workers, when 1,000 one-step jobs are stored and enqueued as fast
        # as the service API allows (each job its own transaction and message)
        t0 = time.monotonic()
        ids = []
        for _ in range(BURST):
            job_id = submit.create(prepared)[0]
            send_job(job_id, "cpu")
            ids.append(job_id)
        create.mark_enqueued(ids)
        submit_s = time.monotonic() - t0

        def unfinished() -> int:
            with engine().connect() as c:
                return int(c.execute(sa.select(sa.func.count()).select_from(Job).where(
                    Job.status.in_(["queued", "running"]))).scalar())

        wait_for(lambda: unfinished() == 0, 240, "the burst to drain", interval=0.5,
                 on_timeout=lambda: f"{unfinished()} unfinished\n{a.tail()}\n{b.tail()}")
        total_s = time.monotonic() - t0

    # Then there are 1,000 results, and every job succeeded, having run exactly once
    with engine().connect() as c:
        by_state = dict(c.execute(sa.select(Job.status, sa.func.count())
                                  .group_by(Job.status)).all())
        attempts = dict(c.execute(sa.select(Job.attempts, sa.func.count())
                                  .group_by(Job.attempts)).all())
        workers = dict(c.execute(sa.select(Job.worker, sa.func.count())
                                 .group_by(Job.worker)).all())
    assert {getattr(k, "value", k): v for k, v in by_state.items()} == {"succeeded": BURST}
    assert results_count(ids) == BURST
    assert attempts == {1: BURST}
    assert len(workers) == 2 and min(workers.values()) > BURST // 10, workers
    print(f"burst: {BURST} jobs stored and enqueued in {submit_s:.1f} s; all run by two "
          f"workers {total_s:.1f} s after the first was submitted "
          f"({BURST / total_s:.0f} jobs/s); per worker {sorted(workers.values())}")


# --------------------------------------------------------------------------- pickle
class _Unpickled:
    """Unpickling this creates a file: proof that a payload was deserialized."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_pickle_message_is_refused_and_the_worker_keeps_running(cluster):
    import redis
    from gradq.service.celery_app import make_app
    from kombu import Exchange, Producer, Queue

    spec = spec_file(cluster.tmp, train_spec(cluster.small, epochs=2))
    marker = cluster.tmp / "unpickled"
    with pools(Pool("w", cluster.tmp)) as (pool,):
        # Given a pickle-serialized gradq.run_job message put straight on the queue
        task_id = str(uuid.uuid4())
        queue = Queue("auto", Exchange("auto", "direct"), routing_key="auto")
        with make_app(cluster.redis).connection_for_write() as conn:  # gradq's transport
            Producer(conn).publish(
                ([_Unpickled(marker)], {}, {"callbacks": None, "errbacks": None,
                                            "chain": None, "chord": None}),
                exchange=queue.exchange, routing_key="auto", declare=[queue],
                serializer="pickle",
                headers={"lang": "py", "task": "gradq.run_job", "id": task_id,
                         "root_id": task_id, "parent_id": None, "group": None,
                         "retries": 0, "eta": None, "expires": None, "argsrepr": "()",
                         "kwargsrepr": "{}", "origin": "test"})

        # Then the worker refuses it, says so in its log, and never unpickles it
        refused = "Refusing to deserialize untrusted content of type pickle"
        wait_for(lambda: refused in pool.log(), 30, "the worker to log the refused message",
                 on_timeout=pool.tail)
        assert not marker.exists()
        client = redis.Redis.from_url(cluster.redis)  # dropped, not left to come back
        wait_for(lambda: not any(n for q, n in queue_lengths(client).items()
                                 if not q.startswith("_")), 10, "the queue to be empty")

        # ... and it keeps running: the next normal job succeeds on the same processes
        before = pool.pids()
        job = submit_spec(spec)[0]
        assert wait_jobs([job], 30, pools=[pool]) == {job: "succeeded"}
        assert pool.pids() == before and "restarting it" not in pool.log()
        assert not marker.exists()


# ------------------------------------------------------------ Redis with a password
def test_redis_password_in_the_url_works_and_is_never_shown(cluster):
    secret, wrong = f"pw-{uuid.uuid4().hex}", f"wrong-{uuid.uuid4().hex}"
    spec = spec_file(cluster.tmp, train_spec(cluster.small, epochs=2))
    with RedisServer(cluster.tmp, "--requirepass", secret) as server:
        url = f"redis://:{secret}@127.0.0.1:{server.port}/0"
        env = {**os.environ, "GRADQ_BROKER_URL": url}

        # Given `gradq submit` and a worker pool that reach Redis through the URL
        sub = subprocess.run([sys.executable, "-m", "gradq.cli.main", "submit", str(spec),
                              "--json"], env=env, capture_output=True, text=True,
                             timeout=120)
        assert sub.returncode == 0, sub.stderr
        job = json.loads(sub.stdout)["id"]
        with pools(Pool("pw", cluster.tmp, env={"GRADQ_BROKER_URL": url})) as (pool,):
            # Then the job runs
            assert wait_jobs([job], 60, pools=[pool]) == {job: "succeeded"}
            status = subprocess.run([sys.executable, "-m", "gradq.cli.main", "-v", "status",
                                     job], env=env, capture_output=True, text=True,
                                    timeout=120)
            assert status.returncode == 0

        # ... and a wrong password is a service error (exit 3) that hides it
        bad_url = f"redis://:{wrong}@127.0.0.1:{server.port}/0"
        bad = subprocess.run([sys.executable, "-m", "gradq.cli.main", "submit", str(spec)],
                             env={**env, "GRADQ_BROKER_URL": bad_url}, capture_output=True,
                             text=True, timeout=120)
        assert bad.returncode == 3
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert f"127.0.0.1:{server.port}" in bad.stderr and "***" in bad.stderr
        assert bad.stdout == ""

    # No password in any output or log file
    outputs = [sub.stdout, sub.stderr, status.stdout, status.stderr, bad.stdout, bad.stderr]
    for text in outputs:
        assert secret not in text and wrong not in text
    files = [p for p in cluster.tmp.rglob("*") if p.is_file()]
    assert any(p.name == "pool-pw.log" for p in files)
    for p in files:
        data = p.read_bytes()
        assert secret.encode() not in data and wrong.encode() not in data, p


# ---------------------------------------------- time limit, cancel, retry (the CLI)
def test_time_limit_fails_the_job_with_that_reason_and_retry_runs_it_again(cluster):
    spec = spec_file(cluster.tmp, train_spec(cluster.large, hidden=[32], epochs=100_000,
                                             batch_size=64, log_every="epoch",
                                             checkpoint_every=1000, time_limit_s=0.5))
    with pools(Pool("w", cluster.tmp)) as (pool,):
        # Given a job that would train far longer than its time limit
        job = submit_spec(spec)[0]
        # Then it ends failed, saying why
        assert wait_jobs([job], 30, pools=[pool]) == {job: "failed"}
        doc = json.loads(cli("status", job, "--json").output)
        assert "training.time_limit_s" in doc["error"]
        assert 0 < doc["final"]["epochs"] < 100_000
        first_end = job_row(job)["finished_at"]

        # When `gradq retry` queues it again, it runs again (and hits its limit again)
        out = cli("retry", job, "--json")
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)["requeued"] == [job]
        wait_for(lambda: job_row(job)["finished_at"] not in (None, first_end), 30,
                 "the retried job to end", on_timeout=pool.tail)
        row = job_row(job)
        assert row["status"] == "failed" and "time_limit_s" in row["error"]
        assert row["attempts"] == 1


def test_cancel_stops_a_running_job_at_its_next_log_interval(cluster):
    spec = spec_file(cluster.tmp, train_spec(cluster.large, hidden=[32], epochs=100_000,
                                             batch_size=64, log_every="epoch",
                                             checkpoint_every=1000))
    with pools(Pool("w", cluster.tmp)) as (pool,):
        job = submit_spec(spec)[0]
        wait_for(lambda: json.loads(job_row(job)["progress"] or "{}").get("epoch", 0) >= 1,
                 30, "the job to run", on_timeout=pool.tail)
        # When the user cancels it
        t0 = time.monotonic()
        out = cli("cancel", job)
        assert out.exit_code == 0, out.output
        # Then it stops at its next log interval (an epoch here: milliseconds)
        assert wait_jobs([job], 10, pools=[pool]) == {job: "cancelled"}
        assert time.monotonic() - t0 < 5
        doc = json.loads(cli("results", job, "--json").output)
        assert doc["status"] == "cancelled" and doc["final"]["epochs"] < 100_000
        steps = curves(job)["train_loss"]["step"]
        assert steps[-1] == doc["final"]["steps"]


def test_cancelling_a_comparison_cancels_every_child(cluster):
    spec = {**train_spec(cluster.large, hidden=[32], epochs=100_000, batch_size=64,
                         log_every="epoch", checkpoint_every=1000),
            "kind": "compare", "compare": {"optimizers": ["sgd", "adam"], "seeds": 2}}
    path = spec_file(cluster.tmp, spec)
    with pools(Pool("w", cluster.tmp)) as (pool,):
        # Given a comparison with one child running and three queued
        parent, *children = submit_spec(path)
        assert len(children) == 4
        wait_for(lambda: "running" in statuses(children).values(), 30,
                 "a child to run", on_timeout=pool.tail)
        # When the comparison is cancelled
        out = cli("cancel", parent)
        assert out.exit_code == 0, out.output
        # Then every child ends cancelled (the running one at its next epoch), then the
        # parent
        assert set(wait_jobs(children, 15, pools=[pool]).values()) == {"cancelled"}
        assert wait_jobs([parent], 15) == {parent: "cancelled"}
        time.sleep(LEASE_S)  # nothing runs any more
        assert set(statuses(children).values()) == {"cancelled"}

