"""The pool's view (``gradq workers``, ``/workers``, ``/api/workers``) and its table.

Worker rows are written by real ``gradq worker --cpu`` processes, three of them under three
host names (``GRADQ_WORKER_HOST``), on the real Redis; the migration is tested up and down
on SQLite and PostgreSQL; a host clock five minutes off (``faketime``) changes nothing,
because heartbeats are stamped by the database.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _cli import invoke, write_spec
from conftest import REDIS_URL, need_service
from gradq.service.store import db
from gradq.service.store import workers as pool_table

HOSTS = ("gpu-node-a", "gpu-node-b", "cpu-node-c")
LEASE_S = 3.0
TRAIN = {"data": {"dataset": "moons"}, "model": {"hidden": [8]},
         "training": {"epochs": 5, "batch_size": 64}, "device": "cpu"}
GRADQ = [sys.executable, "-m", "gradq.cli.main"]


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def workers_json(env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """What ``gradq workers --json`` prints, run as its own process."""
    out = subprocess.run([*GRADQ, "workers", "--json"], env=env or os.environ.copy(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def without_ages(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in d.items() if k not in ("heartbeat_age_s", "last_heartbeat")}
            for d in docs]


# ------------------------------------------------------------------ migration
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0002_adds_and_removes_the_workers_table(
        backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    engine = db.get_engine(url)

    def tables() -> set[str]:
        return set(sa.inspect(engine).get_table_names())

    # Given a database at the first revision with a job in it
    assert db.upgrade(url, "0001") == "0001"
    assert "workers" not in tables() and "jobs" in tables()
    with engine.begin() as c:
        c.execute(sa.text(
            "INSERT INTO jobs (id, kind, status, spec, seed, optimizer, queue, priority, "
            "attempts, max_attempts, lease_token, cancel_requested, progress, created_at) "
            "VALUES ('a', 'train', 'queued', '{}', 0, '{}', 'cpu', 0, 0, 3, 0, false, '{}', "
            "CURRENT_TIMESTAMP)"))
    # When it is upgraded, the workers table appears and takes a row
    assert db.upgrade(url, "0002") == "0002"
    assert "workers" in tables()
    cols = {c["name"] for c in sa.inspect(engine).get_columns("workers")}
    assert cols == {"name", "host", "pid", "queues", "device", "current_job", "jobs_done",
                    "started_at", "heartbeat_at", "stopped_at"}
    db.upgrade(url)  # the later revisions too: a worker registers on the current schema
    pool_table.register("cpu@h-1-2", "h", 2, ["cpu"], "cpu")
    assert [w["host"] for w in pool_table.list_workers(60)] == ["h"]
    # Then a downgrade removes it again, and the jobs are untouched
    assert db.downgrade(url, "0001") == "0001"
    assert "workers" not in tables()
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT id FROM jobs")).scalars().all() == ["a"]
    assert db.upgrade(url, "0002") == "0002"


# ---------------------------------------------------------------- the rows
def test_a_silent_worker_is_gone_after_a_lease_and_pruned_later(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADQ_LEASE_S", "1")
    pool_table.register("cpu@quiet-1-10", "quiet", 10, ["cpu", "auto"], "cpu")
    pool_table.register("gpu0@busy-1-11", "busy", 11, ["gpu", "auto"], "cuda:0 (NVIDIA H200)")
    pool_table.register("cpu@done-1-12", "done", 12, ["cpu"], "cpu")
    pool_table.job_started("gpu0@busy-1-11", "f" * 32)
    pool_table.stopped("cpu@done-1-12")

    code, out, err = invoke("workers")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["HOST", "PID", "DEVICE", "QUEUES", "STATE", "JOB",
                                "HEARTBEAT", "DONE", "STARTED"]
    assert [ln.split()[0] for ln in lines[1:]] == ["busy", "quiet", "done"]  # live first
    assert "cuda:0 (NVIDIA H200)" in lines[1] and "f" * 32 in lines[1]
    assert " live " in lines[2] and " gone " in lines[3]
    assert "2 live, 1 gone" in err

    time.sleep(1.6)  # over a lease: the two that said nothing are gone too
    pool_table.beat("gpu0@busy-1-11")
    docs = {d["host"]: d for d in json.loads(invoke("workers", "--json")[1])}
    assert {h: d["state"] for h, d in docs.items()} == {"busy": "live", "quiet": "gone",
                                                       "done": "gone"}
    assert docs["quiet"]["heartbeat_age_s"] >= 1.0
    pool_table.job_ended("gpu0@busy-1-11")
    docs = {d["host"]: d for d in json.loads(invoke("workers", "--json")[1])}
    assert docs["busy"]["jobs_done"] == 1 and docs["busy"]["current_job"] is None

    # a day later (here: a second), the gone rows are deleted; a pruned worker registers again
    assert pool_table.prune(1.0) == 2
    assert [d["host"] for d in json.loads(invoke("workers", "--json")[1])] == ["busy"]
    assert pool_table.beat("cpu@quiet-1-10") is False


def test_a_worker_names_its_gpu_by_its_physical_index(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a process that sees one GPU (the probe is faked: no GPU here)
    from gradq.workers import presence

    monkeypatch.setattr(presence, "gpu_name", lambda: "NVIDIA H200")
    # Then a worker pinned to GPU 3 says so, one not pinned says cuda:0, and one told to
    # use the CPU, or finding no GPU, says cpu
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert presence.device_label("auto") == "cuda:3 (NVIDIA H200)"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert presence.device_label("cuda") == "cuda:0 (NVIDIA H200)"
    assert presence.device_label("cpu") == "cpu"
    monkeypatch.setattr(presence, "gpu_name", lambda: None)
    assert presence.device_label("auto") == "cpu"


def test_no_worker_yet_says_how_to_start_one() -> None:
    code, out, err = invoke("workers")
    assert code == 0 and out == ""
    assert "gradq worker" in err
    assert json.loads(invoke("workers", "--json")[1]) == []


def test_a_host_clock_five_minutes_off_still_shows_live(pg_url: str, tmp_path: Path) -> None:
    """Heartbeats are stamped with PostgreSQL's now(): a worker host whose clock is five
    minutes ahead or behind is live to a reader with a correct clock, and vice versa."""
    if shutil.which("faketime") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("faketime is missing, and CI=true requires it")
        pytest.skip("faketime is missing (apt-get install faketime)")
    db.upgrade(pg_url)
    env = {**os.environ, "GRADQ_DATABASE_URL": pg_url, "GRADQ_LEASE_S": "60",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    script = ("import sys; from gradq.service.store import workers as w; "
              "w.register(sys.argv[1], sys.argv[1], 1, ['cpu'], 'cpu'); w.beat(sys.argv[1])")
    for offset, name in (("+5m", "ahead"), ("-5m", "behind")):
        out = subprocess.run(["faketime", "-f", offset, sys.executable, "-c", script, name],
                             env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    docs = {d["host"]: d for d in workers_json(env)}
    assert {h: d["state"] for h, d in docs.items()} == {"ahead": "live", "behind": "live"}
    assert all(d["heartbeat_age_s"] < 30 for d in docs.values())
    # and a reader whose own clock is off sees the same
    out = subprocess.run(["faketime", "-f", "+5m", *GRADQ, "workers", "--json"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert {d["state"] for d in json.loads(out.stdout)} == {"live"}


# -------------------------------------------------------- a three-host pool
class Pool:
    """Three ``gradq worker --cpu`` processes, each under its own host name."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        self.jobs: list[str] = []

    def start(self, host: str) -> None:
        log = (self.home.parent / f"worker-{host}.log").open("wb")
        self.procs[host] = subprocess.Popen(
            [*GRADQ, "worker", "--cpu"], env={**self.env, "GRADQ_WORKER_HOST": host},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, host: str, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.procs[host].pid, sig)
        self.procs[host].wait(timeout=40)

    def stop(self) -> None:
        for _host, p in self.procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _host, p in self.procs.items():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=40)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """Three live workers that ran three jobs between them (SQLite, the real Redis)."""
    need_service("Redis", "127.0.0.1", 6379)
    import redis

    home = tmp_path_factory.mktemp("pool") / "home"
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    env = {**os.environ, "GRADQ_HOME": str(home), "GRADQ_BROKER_URL": REDIS_URL,
           "GRADQ_LEASE_S": str(LEASE_S), "GRADQ_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
    env.pop("GRADQ_DATABASE_URL", None)
    p = Pool(home, env)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("GRADQ_HOME", str(home))
            mp.delenv("GRADQ_DATABASE_URL", raising=False)
            db.upgrade()  # the pools start together: the schema is there before them
            db.dispose_engines()
        for host in HOSTS:
            p.start(host)
        wait_until(lambda: len([d for d in workers_json(env) if d["state"] == "live"]) == 3,
                   120, "three workers to register")
        spec = write_spec(home.parent, TRAIN, "train.json")
        for seed in range(3):
            out = subprocess.run([*GRADQ, "submit", str(spec), "--set", f"seed={seed}"],
                                 env=env, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            p.jobs.append(out.stdout.strip())

        def all_done() -> bool:
            out = subprocess.run([*GRADQ, "ls", "--json"], env=env, capture_output=True,
                                 text=True, timeout=60)
            return all(r["status"] == "succeeded" for r in json.loads(out.stdout))

        wait_until(all_done, 180, "the three jobs to succeed")
        yield p
    finally:
        p.stop()
        client.flushdb()
        client.close()


def test_three_hosts_show_in_gradq_workers(pool: Pool) -> None:
    docs = workers_json(pool.env)
    assert sorted(d["host"] for d in docs) == sorted(HOSTS)
    assert {d["state"] for d in docs} == {"live"}
    assert all(d["device"] == "cpu" and d["queues"] == ["cpu", "auto"] for d in docs)
    assert sum(d["jobs_done"] for d in docs) == 3
    assert all(d["heartbeat_age_s"] < LEASE_S for d in docs)
    # each job names the worker row that ran it, and that row's pid is a live process
    names = {d["name"]: d for d in docs}
    for job in pool.jobs:
        out = subprocess.run([*GRADQ, "results", job, "--json"], env=pool.env,
                             capture_output=True, text=True, timeout=60)
        worker = json.loads(out.stdout)["worker"]
        assert worker in names, (worker, list(names))
        os.kill(names[worker]["pid"], 0)
    out = subprocess.run([*GRADQ, "workers"], env=pool.env, capture_output=True, text=True,
                         timeout=60)
    for host in HOSTS:
        assert host in out.stdout
    assert "3 live, 0 gone" in out.stderr


def test_the_api_and_page_show_the_same_pool(pool: Pool,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from gradq.ui.app import create_app
    from starlette.testclient import TestClient

    for k, v in pool.env.items():
        if k.startswith("GRADQ_"):
            monkeypatch.setenv(k, v)
    with TestClient(create_app(), base_url="http://127.0.0.1:8765") as c:
        api = c.get("/api/workers")
        page = c.get("/workers")
        home = c.get("/")
    assert api.status_code == 200
    assert without_ages(api.json()) == without_ages(workers_json(pool.env))
    assert page.status_code == 200
    assert "3 live on 3 hosts" in page.text
    for d in api.json():
        assert d["host"] in page.text and str(d["pid"]) in page.text
    assert 'href="/workers"' in home.text  # linked from the nav


@pytest.fixture(scope="module")
def ui_url(pool: Pool) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*GRADQ, "ui", "--port", str(port)], env=pool.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            urllib.request.urlopen(url + "/api/workers", timeout=2).read()
            return True
        except OSError:
            assert proc.poll() is None, proc.stderr.read()
            return False

    try:
        wait_until(up, 60, "gradq ui to answer")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_workers_page_in_a_browser_marks_a_killed_host_gone(
        pool: Pool, ui_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    from test_ui_browser import CHROMEDRIVER, CHROMIUM, _need_browser

    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,700", "--no-first-run"):
        options.add_argument(arg)
    out = os.environ.get("GRADQ_SCREENSHOTS")
    shots = Path(out) if out else tmp_path_factory.mktemp("screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        def rows() -> list[list[str]]:  # read in one script: the page swaps its rows live
            return driver.execute_script(
                "return [...document.querySelectorAll('#workers-live tbody tr')]"
                ".map(r => [...r.cells].map(c => c.textContent.trim()))")

        def states() -> dict[str, str]:
            return {r[0]: r[4] for r in rows()}

        # Given the three-host pool on the page
        driver.get(ui_url + "/workers")
        assert states() == {h: "live" for h in HOSTS}
        assert "3 live on 3 hosts" in driver.find_element("id", "pool-count").text
        driver.save_screenshot(str(shots / "workers-three-hosts.png"))
        # When one host's workers are killed (no clean stop: only the lease tells)
        pool.kill(HOSTS[2])
        # Then the page, refreshing itself, shows it gone after a lease, listed last
        wait_until(lambda: states().get(HOSTS[2]) == "gone", 4 * LEASE_S + 10,
                   "the killed host to show as gone")
        assert rows()[-1][0] == HOSTS[2]
        assert states() == {HOSTS[0]: "live", HOSTS[1]: "live", HOSTS[2]: "gone"}
        wait_until(lambda: "2 live on 2 hosts" in driver.find_element("id", "pool-count").text,
                   10, "the count to follow")
        driver.save_screenshot(str(shots / "workers-one-gone.png"))
        bad = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not bad, bad
    finally:
        driver.quit()
