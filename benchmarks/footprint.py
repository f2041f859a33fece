"""Bytes per finished job in the database, on SQLite and PostgreSQL (issue 13).

Each case runs what ``gradq run`` runs, in this process, ``K`` times into a fresh
database (after one warm-up run, so that every table and index has its first pages) and
measures what gradq's tables (with their indexes, and PostgreSQL's TOAST) grew by, after
compacting the database (SQLite ``VACUUM``, PostgreSQL ``VACUUM FULL``) so that what
is measured is what the rows take, not free space (the bytes in use of each page: SQLite's
``dbstat``, PostgreSQL's ``pgstattuple``, over tables, indexes and TOAST). Cases:

- ``digits``: the README's quickstart (MLP 64-64-64-10 on digits, 30 epochs);
- ``mnist``: an MLP 784-512-512-10 on the bundled 5,000 mnist images;
- ``child``: one child of the README's main job (6 optimizers × 5 seeds): the
  comparison's growth over its 30 children (the parent's row shared among them).

Each runs twice in the same process: with ``GRADQ_KEEP_CHECKPOINTS=1`` (every job keeps
its last checkpoint, as before issue 13) and with the default (a succeeded job drops it).
The reference is what a job must keep: its final parameters (params × 4 bytes, float32)
plus its curves — both as the bare numbers (4 × 8 bytes per point: step, epoch, time,
value) and as the metric rows take them in the database (table and indexes). Target: the
footprint at most 1.10 × (parameters + curves).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from _common import machine, parser, report, verdict

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.10
CASES: dict[str, dict[str, Any]] = {
    "digits": {"spec": "examples/quickstart.yaml", "sets": [], "repeats": 6},
    "mnist": {"spec": "examples/quickstart.yaml",
              "sets": ["name=mnist-784-512-512-10", "data.dataset=mnist",
                       "model.hidden=[512, 512]", "training.epochs=5"], "repeats": 1},
    "child": {"spec": "examples/compare-optimizers.yaml", "sets": [], "repeats": 1},
}
QUICK_SETS = {"digits": ["training.epochs=2"], "mnist": ["training.epochs=1",
                                                          "model.hidden=[32, 32]"],
              "child": ["training.epochs=2", "compare.seeds=2"]}


# bytes in use (pages less their free space) of a table, its indexes, its TOAST table and
# that one's index, by pgstattuple (a contrib extension that ships with PostgreSQL)
_PG_IN_USE = """
WITH t AS (SELECT oid, reltoastrelid FROM pg_class WHERE oid = CAST(:t AS regclass)),
rels AS (SELECT oid FROM t UNION ALL SELECT reltoastrelid FROM t WHERE reltoastrelid <> 0
         UNION ALL SELECT indexrelid FROM pg_index
         WHERE indrelid IN (SELECT oid FROM t UNION ALL SELECT reltoastrelid FROM t))
SELECT coalesce(sum(s.table_len - s.free_space), 0) FROM rels,
       LATERAL pgstattuple(rels.oid::regclass) s
"""


def table_bytes(url: str) -> dict[str, int]:
    """Bytes per gradq table (its indexes and TOAST included), after compacting."""
    import sqlalchemy as sa
    from gradq.service.store.db import dispose_engines, get_engine

    dispose_engines()
    engine = get_engine(url)
    tables = ("jobs", "metrics", "results", "checkpoints", "artifacts", "datasets")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("VACUUM")
            rows = conn.exec_driver_sql(  # bytes in use: pages less their unused space
                "SELECT m.tbl_name, SUM(s.pgsize - s.unused) FROM dbstat s "
                "JOIN sqlite_master m ON m.name = s.name GROUP BY m.tbl_name").all()
            sizes = {t: int(n) for t, n in rows}
        else:
            conn.exec_driver_sql(f"VACUUM FULL {', '.join(tables)}")
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pgstattuple")
            sizes = {t: int(conn.execute(sa.text(_PG_IN_USE), {"t": t}).scalar())
                     for t in tables}
    dispose_engines()
    return {t: sizes.get(t, 0) for t in tables}


def facts(url: str) -> dict[str, Any]:
    """What the train jobs so far must keep (parameters, curve points), summed, and what
    else they hold."""
    import sqlalchemy as sa
    from gradq.service.store.db import dispose_engines, get_engine

    engine = get_engine(url)
    with engine.connect() as conn:
        runs, params = conn.execute(sa.text(
            "SELECT count(*), coalesce(sum(r.params), 0) FROM results r "
            "JOIN jobs j ON j.id = r.job_id WHERE j.kind = 'train'")).one()
        points = conn.execute(sa.text("SELECT count(*) FROM metrics")).scalar()
        checkpoints = conn.execute(sa.text("SELECT count(*) FROM checkpoints")).scalar()
        artifacts = dict(conn.execute(sa.text(
            "SELECT name, sum(length(data)) FROM artifacts GROUP BY name")).all())
    dispose_engines()
    return {"runs": int(runs), "params": int(params), "points": int(points),
            "checkpoints": int(checkpoints),
            "artifact_bytes": {k: int(v) for k, v in artifacts.items()}}


def run_once(case: str, seed: int, quick: bool) -> None:
    """``gradq run`` in this process: validate, store, run every job (as the CLI does)."""
    from gradq.service import submit
    from gradq.service.store import create
    from gradq.workers.runner import execute

    c = CASES[case]
    sets = [*c["sets"], *(QUICK_SETS[case] if quick else []), f"seed={seed}"]
    ids = submit.create(submit.prepare(ROOT / c["spec"], sets))
    for job_id, _, _ in create.runnable(ids):
        execute(job_id, worker="footprint")
    while todo := create.queued_children(ids[0]):
        for job_id in todo:
            execute(job_id, worker="footprint")


def run_case(case: str, url: str, keep: bool, quick: bool) -> dict[str, Any]:
    """One warm-up run (so that every table and index has its first pages), then
    ``repeats`` runs measured: the growth of the tables per train job."""
    os.environ.update({"GRADQ_DATABASE_URL": url, "GRADQ_DEVICE": "cpu",
                       "GRADQ_KEEP_CHECKPOINTS": "1" if keep else "0"})
    run_once(case, 10_000, quick)
    before, f0 = table_bytes(url), facts(url)
    repeats = 1 if quick else CASES[case]["repeats"]
    for i in range(repeats):
        run_once(case, i, quick)
    after, f1 = table_bytes(url), facts(url)
    runs = f1["runs"] - f0["runs"]
    per_run = {t: (after[t] - before[t]) / runs for t in after}
    total = sum(per_run.values())
    params_b = 4 * (f1["params"] - f0["params"]) / runs
    points = (f1["points"] - f0["points"]) / runs
    curves_nominal, curves_stored = 32 * points, per_run["metrics"]
    return {
        "keep_checkpoints": keep, "runs": runs, "bytes_per_run": round(total),
        "by_table": {t: round(v) for t, v in per_run.items()},
        "params": (f1["params"] - f0["params"]) // runs, "params_bytes": round(params_b),
        "curve_points": round(points), "curves_nominal_bytes": round(curves_nominal),
        "curves_stored_bytes": round(curves_stored),
        "artifact_bytes_per_run": {k: round((v - f0["artifact_bytes"].get(k, 0)) / runs)
                                   for k, v in f1["artifact_bytes"].items()},
        "checkpoints_left": f1["checkpoints"],
        "ratio_vs_params_plus_stored_curves": round(total / (params_b + curves_stored), 3),
        "ratio_vs_params_plus_nominal_curves": round(total / (params_b + curves_nominal), 3),
    }


def databases(which: str) -> list[str]:
    return ["sqlite", "postgresql"] if which == "both" else [which]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument("--cases", default=",".join(CASES))
    args = p.parse_args()
    results: dict[str, Any] = {}
    for dbname in databases(args.db):
        for case in args.cases.split(","):
            for keep in (True, False):
                if dbname == "sqlite":
                    with tempfile.TemporaryDirectory() as d:
                        url = f"sqlite:///{d}/gradq.db"
                        from gradq.service.store.db import upgrade

                        upgrade(url)
                        doc = run_case(case, url, keep, args.quick)
                else:
                    from _services import postgres_database, require

                    require("postgresql")
                    with postgres_database("gradq_footprint") as url:
                        doc = run_case(case, url, keep, args.quick)
                results[f"{dbname}/{case}/{'keep' if keep else 'default'}"] = doc
                print(f"{dbname:10s} {case:6s} keep={int(keep)}  {doc['bytes_per_run']:>10,} "
                      f"B/run  ×{doc['ratio_vs_params_plus_stored_curves']} of params + "
                      "stored curves", flush=True)
    ratios = {k: v["ratio_vs_params_plus_stored_curves"] for k, v in results.items()
              if k.endswith("/default")}
    report("footprint", {
        "benchmark": "footprint", "quick": args.quick, "machine": machine(),
        "target_ratio": TARGET, "results": results,
        "verdict": {k: verdict(r, TARGET) for k, r in ratios.items()},
    }, args.tag)


if __name__ == "__main__":
    main()
