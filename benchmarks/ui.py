"""The dashboard's two speed targets (issue 11), through its own HTTP stack in process.

1. A 1,000,000-point curve: ``GET /api/jobs/<id>/curves`` (downsampled on the server to
   2,000 points per series, the page's request) against the reference in the same run:
   reading every point, as ``gradq curves --json`` does. Targets (issue 22): median
   <= 0.3 s, p95 <= 0.5 s over 20 requests, and 20 such curves, as an overlay page of 20
   jobs asks for them one after another, <= 1 s (the same job's curve 20 times: writing
   20 M points would take the run's whole budget).
2. Paging 10,000 jobs: ``GET /?page=100`` (the jobs page, with its count) and
   ``GET /api/jobs?offset=5000`` against a bare ``SELECT … LIMIT 50 OFFSET 5000``.
   Target: < 300 ms on the server.

On the embedded SQLite database (a fresh GRADQ_HOME), as ``gradq ui`` runs by default.

    python benchmarks/ui.py [--quick]
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import _common


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    os.environ.setdefault("GRADQ_HOME", tempfile.mkdtemp(prefix="gradq-bench-ui-"))
    os.environ.pop("GRADQ_DATABASE_URL", None)
    import numpy as np
    import sqlalchemy as sa
    from gradq.service.experiments.compare import expand
    from gradq.service.spec import validate
    from gradq.service.status import JobStatus
    from gradq.service.store import create, leases, queries, writes
    from gradq.service.store.db import get_engine, session_scope
    from gradq.service.store.models import Job
    from gradq.ui.app import create_app
    from starlette.testclient import TestClient

    points = 20_000 if args.quick else 1_000_000
    n_jobs = 600 if args.quick else 10_000
    repeats = args.repeats or (2 if args.quick else 5)

    # a job that logged `points` steps of train_loss (a noisy decay with spikes)
    [job_id] = create.create_jobs(expand(validate({"data": {"dataset": "iris"}})), dataset=None,
                                priority=0, max_attempts=3)
    lease = leases.claim(job_id, "bench")
    rng = np.random.default_rng(0)
    values = np.exp(-np.arange(points) / (points / 5)) + 0.01 * rng.standard_normal(points)
    t = time.perf_counter()
    chunk = 50_000
    for k in range(0, points, chunk):
        writes.log(lease, [("train_loss", s, s / 1000, s * 1e-3, float(values[s]))
                         for s in range(k, min(points, k + chunk))], {"step": k + chunk})
    write_s = time.perf_counter() - t
    # and n_jobs finished jobs to page through
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with session_scope() as s:
        s.execute(sa.insert(Job), [
            {"id": f"{i:032x}", "kind": "train", "name": f"job-{i:05d}",
             "status": JobStatus.SUCCEEDED, "spec": "{}", "seed": 0, "optimizer": "{}",
             "queue": "cpu", "priority": 0, "attempts": 1, "max_attempts": 3,
             "lease_token": 0, "cancel_requested": False, "progress": "{}",
             "created_at": t0 + timedelta(seconds=i)} for i in range(n_jobs)])

    client = TestClient(create_app(), base_url="http://127.0.0.1:8765")
    client.__enter__()
    page = max(1, n_jobs // 100)
    offset = n_jobs // 2
    got: dict[str, Any] = {}

    def api_curves() -> None:
        r = client.get(f"/api/jobs/{job_id}/curves")
        got["curve_points"] = len(r.json()["metrics"]["train_loss"]["step"])

    def full_read() -> None:
        got["all_points"] = len(queries.curves(job_id)["metrics"]["train_loss"]["step"])

    def jobs_page() -> None:
        assert client.get(f"/?page={page}").status_code == 200

    def api_jobs() -> None:
        got["listed"] = len(client.get(f"/api/jobs?offset={offset}&limit=50").json())

    def bare_select() -> None:
        with get_engine().connect() as c:
            c.execute(sa.text("SELECT id, kind, status, name, parent_id, created_at FROM jobs "
                              "ORDER BY created_at DESC, id LIMIT 50 OFFSET :o"),
                      {"o": offset}).all()

    curves = _common.interleaved({"api_downsampled": api_curves, "read_every_point": full_read},
                                 repeats, warmup=1)
    paging = _common.interleaved({"jobs_page": jobs_page, "api_jobs": api_jobs,
                                  "bare_select": bare_select}, repeats * 2, warmup=1)
    many: list[float] = []
    for _ in range(4 if args.quick else 20):
        t = time.perf_counter()
        api_curves()
        many.append(time.perf_counter() - t)
    many.sort()
    p95 = many[min(len(many) - 1, int(round(0.95 * (len(many) - 1))))]
    page_of_20 = sum(many[:20]) if len(many) >= 20 else sum(many) * 20 / len(many)
    client.__exit__(None, None, None)
    curve_s = curves["api_downsampled"]["median_s"]
    page_s = max(paging["jobs_page"]["median_s"], paging["api_jobs"]["median_s"])
    doc = {"benchmark": "ui", "quick": args.quick, "machine": _common.machine(),
           "database": get_engine().dialect.name,
           "curve": {"points": points, "returned": got["curve_points"],
                     "all_points_read": got["all_points"], "write_s": round(write_s, 2),
                     "timing": curves,
                     "ratio_api_over_full_read": round(
                         curve_s / curves["read_every_point"]["median_s"], 3),
                     "requests": len(many), "median_of_requests_s": round(many[len(many) // 2], 4),
                     "p95_s": round(p95, 4), "twenty_curves_s": round(page_of_20, 3),
                     "target": "median <= 0.3 s, p95 <= 0.5 s, 20 curves <= 1 s",
                     "verdict": "met" if (curve_s <= 0.3 and p95 <= 0.5 and page_of_20 <= 1.0)
                     else "not met"},
           "paging": {"jobs": n_jobs, "page": page, "offset": offset, "listed": got["listed"],
                      "timing": paging, "target": "< 0.3 s",
                      "verdict": _common.verdict(page_s, 0.3)}}
    _common.report("ui", doc, args.tag)


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t:.1f} s)")
