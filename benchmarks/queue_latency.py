"""Overhead per job through Redis and PostgreSQL: submit to done, minus the job's run.

Two ``gradq worker --cpu`` pools (each a supervisor, one Celery worker process and a lease
sweeper) on the real Redis (database 13) and a PostgreSQL database of the benchmark's
own, created and dropped around it. 200 one-step jobs (a 4-8-3 network on a 150-row
dataset file) are submitted through ``gradq``'s own submit path, two in flight at a time
(one per worker: the queue never backs up, so what is measured is each job's own path,
not waiting behind others). A job's overhead is ``finished_at − created_at − run_s``: the
broker round trip, the claim, loading the job and its data, the fenced writes of its end —
everything but its training (``run_s``, which already contains its own metric writes).
Target (issue 7): median ≤ 30 ms. The service round trips of this machine are reported
beside it.

    python benchmarks/queue_latency.py [--quick] [--jobs N]
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import _services
import numpy as np


def start_worker(name: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    out = log.open("w")
    return subprocess.Popen([sys.executable, "-m", "gradq.cli.main", "worker", "--cpu"],
                            env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def round_trips(url: str) -> dict[str, float]:
    """Median of 50 bare round trips: Redis PING, PostgreSQL SELECT 1 (milliseconds)."""
    import redis
    import sqlalchemy as sa
    from gradq.service.store.db import get_engine

    r = redis.Redis.from_url(_services.REDIS_URL)
    out = {}
    times = []
    for _ in range(50):
        t = time.perf_counter()
        r.ping()
        times.append(time.perf_counter() - t)
    out["redis_ping_ms"] = round(statistics.median(times) * 1e3, 3)
    times = []
    with get_engine(url).connect() as c:
        for _ in range(50):
            t = time.perf_counter()
            c.execute(sa.text("select 1")).scalar()
            times.append(time.perf_counter() - t)
    out["postgres_select_ms"] = round(statistics.median(times) * 1e3, 3)
    return out


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=None, help="jobs measured (default 200)")
    args = p.parse_args()
    _services.require("postgresql", "redis")
    import redis
    import sqlalchemy as sa
    from gradq.service import submit as submit_service
    from gradq.service.store.db import get_engine

    n_jobs = args.jobs or (6 if args.quick else 200)
    home = Path(tempfile.mkdtemp(prefix="gradq-queue-"))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 4))
    np.savez(home / "tiny.npz", X=X, y=(X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0))
    spec_path = home / "job.yaml"
    spec_path.write_text("data: {dataset: tiny.npz, validation: 0.2, test: 0.2}\n"
                         "model: {hidden: [8]}\n"
                         "training: {epochs: 1, max_steps: 1, batch_size: 32,"
                         " checkpoint_every: 1000}\n")
    redis.Redis.from_url(_services.REDIS_URL).flushdb()
    with _services.postgres_database("gradq_queue") as url:
        env = {**os.environ, "GRADQ_DATABASE_URL": url, "GRADQ_BROKER_URL": _services.REDIS_URL,
               "GRADQ_HOME": str(home)}
        os.environ.update({k: env[k] for k in ("GRADQ_DATABASE_URL", "GRADQ_BROKER_URL",
                                               "GRADQ_HOME")})
        procs = [start_worker(f"w{i}", env, home / f"worker{i}.log") for i in range(2)]
        try:
            engine = get_engine(url)

            def unfinished(ids: list[str]) -> int:
                if not ids:
                    return 0
                with engine.connect() as c:
                    return int(c.execute(sa.text(
                        "select count(*) from jobs where id = any(:ids) and status in "
                        "('queued', 'running')"), {"ids": ids}).scalar())

            def run(count: int, in_flight: int) -> list[str]:
                ids: list[str] = []
                live: list[str] = []
                deadline = time.monotonic() + 60 + 2 * count
                while len(ids) < count or unfinished(live):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"jobs did not finish; see the logs in {home}")
                    if len(ids) < count and unfinished(live) < in_flight:
                        new = submit_service.submit(spec_path)[0]
                        ids.append(new)
                        live = [*live[-in_flight * 4:], new]
                    else:
                        time.sleep(0.002)
                return ids

            run(4, 2)  # warm-up: each worker process imports and caches the dataset
            t0 = time.perf_counter()
            ids = run(n_jobs, 2)
            wall = time.perf_counter() - t0
            with engine.connect() as c:
                rows = c.execute(sa.text(
                    "select j.status, extract(epoch from j.finished_at - j.created_at) total,"
                    " extract(epoch from j.started_at - j.created_at) queued, r.timing "
                    "from jobs j left join results r on r.job_id = j.id where j.id = any(:ids)"
                ), {"ids": ids}).all()
            trips = round_trips(url)
        finally:
            stop(procs)
    redis.Redis.from_url(_services.REDIS_URL).flushdb()
    import json

    statuses = {r.status for r in rows}
    overhead = [float(r.total) - json.loads(r.timing)["run_s"] for r in rows if r.timing]
    queued = [float(r.queued) for r in rows]
    run_s = [json.loads(r.timing)["run_s"] for r in rows if r.timing]
    ms = np.asarray(overhead) * 1e3
    med = float(np.median(ms))
    doc: dict[str, Any] = {
        "benchmark": "queue_latency", "quick": args.quick, "machine": _common.machine(),
        "jobs": len(rows), "statuses": sorted(statuses), "workers": 2, "in_flight": 2,
        "overhead_ms": {"median": round(med, 2), "p95": round(float(np.percentile(ms, 95)),
                                                              2),
                        "min": round(float(ms.min()), 2), "max": round(float(ms.max()), 2)},
        "submit_to_start_ms_median": round(statistics.median(queued) * 1e3, 2),
        "run_ms_median": round(statistics.median(run_s) * 1e3, 2),
        "jobs_per_s": round(len(rows) / wall, 1),
        "reference_round_trips": trips,
        "target": "median <= 30 ms", "verdict": _common.verdict(med, 30.0),
    }
    _common.report("queue_latency", doc, args.tag)


if __name__ == "__main__":
    main()
