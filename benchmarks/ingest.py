"""Metric points per second written to PostgreSQL by the worker's own writer.

The writer is ``service.store.writes.log``: one fenced transaction per log interval that renews the
lease, inserts the interval's points (idempotent on job, name, step) and stores the
progress document — what ``DbHooks.log`` calls while a job trains. It is timed at several
interval sizes (points per call), each call its own transaction, with the reference in the
same process: a bare psycopg ``COPY`` of the same rows into the same table, the fastest
way into PostgreSQL. Target (issue 7): ≥ 100,000 points per second.

Needs PostgreSQL (see ``_services.py``); creates and drops its own database.

    python benchmarks/ingest.py [--quick]
"""

from __future__ import annotations

import math
import time
from typing import Any

import _common
import _services


def rows_for(step0: int, points: int, names: int = 8) -> list[tuple]:
    """``points`` metric rows: ``names`` metrics per step, steps from ``step0``; a few
    non-finite values, as a diverging run writes."""
    out = []
    for i in range(points):
        step = step0 + i // names
        value = math.nan if i % 997 == 13 else (math.inf if i % 991 == 7 else 1.0 / (i + 1))
        out.append((f"metric_{i % names}", step, step / 100.0, step * 0.01, value))
    return out


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    _services.require("postgresql")
    from gradq.service.experiments.compare import expand
    from gradq.service.spec import validate
    from gradq.service.store import create, leases, writes

    sizes = (8, 1000) if args.quick else (8, 100, 1_000, 10_000, 50_000)
    calls = 3 if args.quick else 5
    total_target = 2_000 if args.quick else 200_000  # points per size and side
    with _services.postgres_database("gradq_ingest") as url:
        spec = validate({"data": {"dataset": "iris"}})
        job_id = create.create_jobs(expand(spec), dataset=None, priority=0, max_attempts=3,
                                  url=url)[0]
        lease = leases.claim(job_id, "bench", url=url)
        assert lease is not None
        step = {"next": 0}

        def per_repeat(points: int) -> int:
            """Calls per timed repeat: ``total_target`` points in all, but at most 1,000
            transactions (8 points a call is transaction-bound: 25,000 commits a side)."""
            return max(1, min(total_target // points, 1_000) // calls)

        def writer(points: int) -> Any:
            def run() -> None:
                n_calls = per_repeat(points)
                for _ in range(n_calls):
                    rows = rows_for(step["next"], points)
                    step["next"] += points // 8 + 1
                    writes.log(lease, rows, {"step": step["next"]}, url=url)
            run.points = per_repeat(points) * points  # type: ignore
            return run

        def copy(points: int) -> Any:
            import psycopg

            dsn = url.replace("postgresql+psycopg://", "postgresql://")

            def run() -> None:
                n_calls = per_repeat(points)
                with psycopg.connect(dsn) as conn:
                    for _ in range(n_calls):
                        rows = rows_for(step["next"], points)
                        step["next"] += points // 8 + 1
                        with conn.cursor() as cur, cur.copy(
                                "COPY metrics (job_id, name, step, epoch, time_s, value, "
                                "special) FROM STDIN") as cp:
                            for name, st, ep, ts, v in rows:
                                finite = math.isfinite(v)
                                cp.write_row((job_id, name, st, ep, ts, v if finite else None,
                                              None if finite else str(v)))
                        conn.commit()
            run.points = per_repeat(points) * points  # type: ignore
            return run

        results: dict[str, Any] = {}
        for points in sizes:
            w, c = writer(points), copy(points)
            timing = _common.interleaved({"gradq_log": w, "psycopg_copy": c}, calls,
                                         warmup=1)
            results[str(points)] = {
                "gradq_points_per_s": round(w.points / timing["gradq_log"]["median_s"]),
                "copy_points_per_s": round(c.points / timing["psycopg_copy"]["median_s"]),
                "ratio_gradq_over_copy": round(timing["psycopg_copy"]["median_s"]
                                               / timing["gradq_log"]["median_s"], 3),
                "timing": timing}
        stored = _count(url, job_id)
    best = max(r["gradq_points_per_s"] for r in results.values())
    doc = {"benchmark": "ingest", "quick": args.quick, "machine": _common.machine(),
           "database": "postgresql", "points_per_call": results,
           "best_points_per_s": best, "rows_stored": stored,
           "target": ">= 100,000 points/s", "verdict": _common.verdict(best, 100_000, False)}
    _common.report("ingest", doc, args.tag)


def _count(url: str, job_id: str) -> int:
    import sqlalchemy as sa
    from gradq.service.store.db import get_engine

    with get_engine(url).connect() as c:
        return int(c.execute(sa.text("select count(*) from metrics where job_id = :j"),
                             {"j": job_id}).scalar())


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t:.1f} s)")
