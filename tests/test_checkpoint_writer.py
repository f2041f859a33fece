"""Checkpoints written off the training thread keep issue 6's guarantee (issue 12).

A ``gradq run`` process is SIGKILLed by a failpoint (in the training thread, or in the
background writer itself); its lease then lapses, the sweeper queues the job again and a
worker resumes it here. The newest stored checkpoint is the one the writer's ordering
promises (a checkpoint is written before any later log interval is handed over), the job
resumes from it, and its curves are the uninterrupted run's: every step once, the same
values. SQLite (the embedded default) and a fresh PostgreSQL database; no Redis, and no
service is restarted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from gradq.service.store import queries, sweeper, writes

# iris with validation and test parts of 0.2: 90 training rows in batches of 16 → 6 steps
# per epoch; a curve point after every step, a checkpoint after every epoch but the last
SPEC = {"data": {"dataset": "iris"}, "seed": 3, "model": {"hidden": [5]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 8, "batch_size": 16, "log_every": 1}}
STEPS = 8 * 6

KILLS = [  # failpoint, its hit, the epoch of the newest checkpoint stored when it fires
    pytest.param("step", 20, 3, id="training-thread-mid-epoch"),
    pytest.param("checkpoint", 3, 2, id="writer-before-a-checkpoint"),
    pytest.param("metrics", 23, 3, id="writer-before-a-metrics-write"),
]


def gradq_run(spec: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gradq.cli.main", "run", str(spec), "--json"],
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300)


def running_job() -> str:
    import sqlalchemy as sa
    from gradq.service.store.db import get_engine

    with get_engine().connect() as c:
        rows = c.execute(sa.text("select id from jobs where status = 'running'")).all()
    assert len(rows) == 1, rows
    return rows[0].id


def kill_and_resume(tmp_path: Path, point: str, hit: int, ck_epoch: int) -> None:
    from gradq.workers.runner import execute

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    # Given an uninterrupted run of the spec
    ref = gradq_run(spec)
    assert ref.returncode == 0, ref.stderr
    reference = json.loads(ref.stdout)
    # When another run of it is SIGKILLed at the failpoint
    victim = gradq_run(spec, GRADQ_FAILPOINTS=f"{point}:{hit}", GRADQ_LEASE_S="1")
    assert victim.returncode == -9, victim.stderr[-2000:]
    job = running_job()
    checkpoint = writes.latest_checkpoint(job)
    # Then its newest checkpoint is the one the writer's ordering promises
    assert checkpoint is not None and checkpoint[0] == ck_epoch
    # When its lease lapses and a worker takes it up again
    time.sleep(1.2)
    assert [j for j, _, _ in sweeper.sweep(1.0)] == [job]
    assert execute(job, worker="resumer") == "succeeded"
    # Then it resumed from that checkpoint and its curves are the uninterrupted run's
    doc = queries.result(job)
    assert doc["extra"]["resumed_from"] == {"epoch": checkpoint[0], "step": checkpoint[1]}
    got, want = queries.curves(job)["metrics"], queries.curves(reference["id"])["metrics"]
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name]["step"] == list(range(STEPS + 1)), name
        assert got[name]["value"] == want[name]["value"], name
    assert doc["final"] == reference["final"]


@pytest.mark.parametrize(("point", "hit", "ck_epoch"), KILLS)
def test_kill_9_resumes_from_the_last_checkpoint_with_the_same_curves(
        tmp_path: Path, point: str, hit: int, ck_epoch: int) -> None:
    kill_and_resume(tmp_path, point, hit, ck_epoch)


def test_kill_9_resumes_the_same_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    from gradq.service.store.db import upgrade

    upgrade(pg_url)
    kill_and_resume(tmp_path, "step", 20, 3)


def test_the_writer_writes_in_order_and_reports_at_the_next_call() -> None:
    from gradq.workers.writer import WriteBehind

    # Given a writer whose second write fails
    done: list[int] = []
    errors: list[BaseException] = []
    w = WriteBehind("test")

    def write(k: int) -> Any:
        def run() -> None:
            try:
                if k == 1:
                    raise RuntimeError("boom")
                done.append(k)
            except RuntimeError as exc:
                errors.append(exc)
        return run

    for k in range(4):
        w.submit(write(k))
    w.wait()
    # Then every write ran, in order, and the failure is there to be raised
    assert done == [0, 2, 3] and len(errors) == 1
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.submit(write(5))


@pytest.mark.parametrize(("interval", "kept"), [("0", 1), ("3600", 0)])
def test_checkpoints_wait_for_their_interval(tmp_path: Path, interval: str, kept: int
                                             ) -> None:
    import sqlalchemy as sa
    from gradq.service.store.db import get_engine

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    # Given a run that keeps its checkpoints, a checkpoint due every epoch
    done = gradq_run(spec, GRADQ_KEEP_CHECKPOINTS="1", GRADQ_CHECKPOINT_INTERVAL_S=interval)
    assert done.returncode == 0, done.stderr
    # Then with no interval it wrote them (the newest kept), and with an hour none: a
    # job shorter than the interval pays for no checkpoint
    with get_engine().connect() as c:
        rows = c.execute(sa.text("select epoch from checkpoints")).all()
    assert len(rows) == kept
    if kept:
        assert rows[0].epoch == 7  # every epoch but the last
