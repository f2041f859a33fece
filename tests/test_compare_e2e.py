"""Comparisons end to end on the real services: PostgreSQL, Redis and two ``gradq worker
--cpu`` processes. Skips without the services on a laptop; fails under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
from _cli import cli, cli_json, write_spec

pytestmark = pytest.mark.services

GRADQ = [sys.executable, "-m", "gradq.cli.main"]
LEASE_S = "5"
FINISHED = {"succeeded", "failed", "diverged", "cancelled"}


# ------------------------------------------------------------------ helpers
class Pool:
    """Two ``gradq worker --cpu`` processes, each in a process group of its own."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: list[subprocess.Popen] = []

    def start(self, n: int) -> None:
        for i in range(n):
            with (self.logs / f"worker{i}.log").open("wb") as log:
                self.procs.append(subprocess.Popen(
                    [*GRADQ, "worker", "--cpu"], env=self.env, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True))

    def stop(self) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL to whatever of each group is left."""
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 1  # idle workers: no need to wait for a warm shutdown
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # the supervisor's celery children too
            if p.poll() is None:
                p.wait(timeout=5)

    def tail(self) -> str:
        return "\n".join(f"--- {f.name}\n" + f.read_text(errors="replace")[-3000:]
                         for f in sorted(self.logs.glob("worker*.log")))


@pytest.fixture
def pool(pg_url: str, redis_url: str, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Pool]:
    """A migrated PostgreSQL database, the real Redis, and two CPU workers on them."""
    monkeypatch.setenv("GRADQ_LEASE_S", LEASE_S)
    env = {**os.environ, "GRADQ_DATABASE_URL": pg_url, "GRADQ_BROKER_URL": redis_url,
           "GRADQ_LEASE_S": LEASE_S, "GRADQ_DEVICE": "cpu"}
    subprocess.run([*GRADQ, "db", "upgrade"], env=env, check=True, capture_output=True,
                   timeout=120)
    logs = tmp_path / "logs"
    logs.mkdir()
    workers = Pool(env, logs)
    try:
        workers.start(2)
        yield workers
    finally:
        workers.stop()


def wait_finished(parent: str, pool: Pool, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        doc = cli_json("status", parent)
        if doc["status"] in FINISHED:
            return doc
        if time.monotonic() > deadline:
            pytest.fail(f"comparison {parent} still {doc['status']} after {timeout_s} s: "
                        f"{doc['progress']}\n{pool.tail()}")
        for p in pool.procs:
            assert p.poll() is None, f"a worker exited with {p.returncode}\n{pool.tail()}"
        time.sleep(0.5)


def iris_compare(arms: list[Any], seeds: int, **compare: Any) -> dict[str, Any]:
    return {"kind": "compare", "seed": 0, "data": {"dataset": "iris"},
            "model": {"hidden": [8]}, "training": {"epochs": 3, "batch_size": 16},
            "compare": {"optimizers": arms, "seeds": seeds, **compare}}


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 50


def assert_ran_once_on_a_worker(children: list[dict[str, Any]]) -> None:
    for c in children:
        assert c["status"] == "succeeded", c
        assert c["worker"], c  # the Celery worker's name and pid
        assert "-local" not in c["worker"]
        assert c["attempts"] == 1, c
        assert c["device"] == "cpu (numpy)"


# -------------------------------------------------------------------- tests
def test_three_arms_by_three_seeds_run_across_two_workers(pool: Pool, tmp_path: Path) -> None:
    # Given a comparison of 3 arms × 3 seeds submitted to the queue
    spec = iris_compare([{"name": "sgd", "lr": 0.1}, {"name": "momentum", "lr": 0.05},
                         {"name": "adam", "lr": 0.01}], seeds=3)
    sub = cli_json("submit", str(write_spec(tmp_path, spec)))
    assert sub["status"] == "queued" and len(sub["children"]) == 9
    parent = sub["id"]
    # When the workers are done with it
    doc = wait_finished(parent, pool)
    # Then it succeeded, and every child ran once on some worker
    assert doc["status"] == "succeeded", doc
    assert doc["progress"]["children"]["succeeded"] == 9
    assert doc["progress"]["total"] == 9
    children = [cli_json("results", c) for c in sub["children"]]
    assert_ran_once_on_a_worker(children)
    # and the report pools 3 seeds in every arm
    rep = cli_json("report", parent)
    assert rep["partial"] is None and rep["notes"] == []
    assert [a["n"] for a in rep["arms"]] == [3, 3, 3]
    assert sorted(r for a in rep["arms"] for r in a["runs"]) == sorted(sub["children"])
    for a in rep["arms"]:
        assert a["ci95"][0] <= a["mean"] <= a["ci95"][1]
    # and its plots are valid images
    png = tmp_path / "report.png"
    cli("report", parent, "--png", str(png))
    assert_png(png)
    assert_png(tmp_path / "report-final.png")


def test_a_grid_through_the_queue_publishes_and_runs_its_final_runs(
        pool: Pool, tmp_path: Path) -> None:
    # Given a grid (2 rates × 2 tuning seeds) beside a plain arm, on 3 seeds
    spec = iris_compare([{"name": "sgd", "lr": [0.3, 0.003]}, {"name": "adam", "lr": 0.01}],
                        seeds=3, tune_seeds=2)
    sub = cli_json("submit", str(write_spec(tmp_path, spec)))
    parent = sub["id"]
    assert len(sub["children"]) == 4 + 3  # the final runs do not exist yet
    # When the workers are done with it
    doc = wait_finished(parent, pool)
    # Then the worker that ended the tuning added the chosen setting's runs, and they ran
    assert doc["status"] == "succeeded", doc
    assert doc["progress"]["total"] == 4 + 3 + 3
    assert doc["progress"]["children"]["succeeded"] == 10
    kids = cli_json("ls", "--parent", parent, "--limit", "100")
    finals = [k["id"] for k in kids if k["id"] not in sub["children"]]
    assert len(finals) == 3
    final_docs = [cli_json("results", f) for f in finals]
    assert_ran_once_on_a_worker([cli_json("results", k["id"]) for k in kids])
    rep = cli_json("report", parent)
    grid_arm, adam = rep["arms"]
    assert grid_arm["tuning"]["chosen"] == {"lr": 0.3}
    assert {d["optimizer"]["lr"] for d in final_docs} == {0.3}
    assert sorted(d["seed"] for d in final_docs) == [0, 1, 2]
    assert sorted(grid_arm["runs"]) == sorted(finals)
    assert grid_arm["n"] == 3 and adam["n"] == 3
    png = tmp_path / "grid.png"
    cli("report", parent, "--png", str(png))
    for p in (png, tmp_path / "grid-final.png", tmp_path / "grid-grid.png"):
        assert_png(p)
