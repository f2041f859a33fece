"""``gradq run examples/suite-mini.yaml``: its wall time, and where that time goes.

Runs the example (book-mini, five optimizers, 8 random trials per arm, 5 seeds; ``--quick``
runs 1 trial of two optimizers and 2 seeds) in a fresh process and SQLite database, as a
user would, and breaks the wall time down from what the database recorded:

- ``before_first_run_s``: process start, imports, validation, loading the six datasets,
  storing the job tree (the suite's ``created_at`` to its first run's start, plus the time
  from process start to ``created_at``);
- per workload: the span from its first run's start to its last run's end, its runs, how
  many trained stacked, and the sum of their recorded training time (``run_s``: the
  trainer's own clock, a stack's time counted once per stack);
- ``after_last_run_s``: the report and its two plots.

Target (issue 21): ≤ 15 minutes on 2 CPU cores. The load average of the machine is
recorded before and after, since other work shares the cores.

    python benchmarks/suite_mini.py [--quick]
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import _common

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "suite-mini.yaml"
TARGET_S = 15 * 60


def _t(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def breakdown(db: Path) -> dict[str, Any]:
    con = sqlite3.connect(db)
    suite = con.execute("SELECT id, created_at FROM jobs WHERE kind = 'suite'").fetchone()
    comps = con.execute("SELECT id, spec FROM jobs WHERE parent_id = ?", (suite[0],)).fetchall()
    out: dict[str, Any] = {"workloads": {}}
    first = last = None
    for cid, spec in comps:
        name = json.loads(spec)["_workload"]
        rows = con.execute(
            "SELECT j.started_at, j.finished_at, j.spec, r.timing FROM jobs j "
            "LEFT JOIN results r ON r.job_id = j.id WHERE j.parent_id = ?", (cid,)).fetchall()
        starts = [_t(r[0]) for r in rows if r[0]]
        ends = [_t(r[1]) for r in rows if r[1]]
        stacks: dict[tuple, float] = {}
        phases: dict[str, int] = defaultdict(int)
        stacked = 0
        for started, _, rspec, timing in rows:
            t = json.loads(timing or "{}")
            phases[json.loads(rspec).get("_phase") or "final"] += 1
            if (t.get("stacked") or 1) > 1:
                stacked += 1
            stacks[(started, t.get("run_s"))] = float(t.get("run_s") or 0.0)
        out["workloads"][name] = {
            "span_s": round(max(ends) - min(starts), 2), "runs": len(rows),
            "runs_by_phase": dict(phases), "stacked_runs": stacked,
            "training_s": round(sum(stacks.values()), 2)}
        first = min(starts) if first is None else min(first, min(starts))
        last = max(ends) if last is None else max(last, max(ends))
    out["created_to_first_run_s"] = round(first - _t(suite[1]), 2)
    out["runs_span_s"] = round(last - first, 2)
    out["first_run_at"], out["last_run_end_at"] = first, last
    return out


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GRADQ_HOME": tmp}
        env.pop("GRADQ_DATABASE_URL", None)
        sets = []
        if args.quick:
            sets = ["--set", "suite.search.trials=1", "--set", "suite.seeds=2",
                    "--set", "suite.optimizers=[{name: sgd, lr: {loguniform: [0.01, 1]}}, "
                    "{name: adam, lr: {loguniform: [0.001, 0.1]}}]"]
        load_before = os.getloadavg()
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "gradq.cli.main", "run", str(EXAMPLE),
                               *sets, "--json"], env=env, capture_output=True, text=True)
        wall = time.time() - t0
        load_after = os.getloadavg()
        if proc.returncode != 0:
            sys.exit(proc.stderr[-3000:])
        rep = json.loads(proc.stdout)
        parts = breakdown(Path(tmp) / "gradq.db")
    parts["before_first_run_s"] = round(parts.pop("first_run_at") - t0, 2)
    parts["after_last_run_s"] = round(t0 + wall - parts.pop("last_run_end_at"), 2)
    _common.report("suite_mini", {
        "benchmark": "suite_mini", "quick": args.quick, "device": "cpu",
        "machine": _common.machine(), "load_average": {"before": load_before,
                                                        "after": load_after},
        "wall_s": round(wall, 2), "target_s": TARGET_S,
        "verdict": _common.verdict(wall, TARGET_S),
        "breakdown": parts,
        "score": rep["score"],
    }, args.tag)


if __name__ == "__main__":
    main()
