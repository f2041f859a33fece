"""The README's main job as a user waits for it: the whole `gradq run` command's wall time.

``gradq run examples/compare-optimizers.yaml`` (6 optimizers × 5 seeds on digits) in a new
process, as a user types it, with the database and the dataset cache already there (a
warm-up run makes them). Beside the wall time: the process's CPU time, the training time
(the longest ``timing.run_s`` of its children, which train as one stack) and the fixed
cost, wall − training: the interpreter, the imports, validation, the database, the
report and its printing. The reference in the same rounds is the bare interpreter
(``python -c pass``). Targets (issue 22): wall ≤ 1.5 s, fixed cost ≤ 0.35 s.

    python benchmarks/run_wall.py [--quick] [--repeats N]
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "compare-optimizers.yaml"
TARGETS_S = {"wall": 1.5, "fixed": 0.35}


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, its stdout) of one command in a new process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def _training_s(home: Path, parent: str) -> float:
    """The longest run_s of the comparison's children (they train as one stack)."""
    with sqlite3.connect(home / "gradq.db") as c:
        rows = c.execute("SELECT r.timing FROM results r JOIN jobs j ON j.id = r.job_id"
                         " WHERE j.parent_id = ?", (parent,)).fetchall()
    return max(json.loads(t)["run_s"] for (t,) in rows)


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    repeats = args.repeats or (1 if args.quick else 7)
    home = Path(tempfile.mkdtemp(prefix="gradq-bench-run-"))
    env = {**os.environ, "GRADQ_HOME": str(home)}
    env.pop("GRADQ_DATABASE_URL", None)
    cmd = [str(Path(sys.executable).with_name("gradq")), "run", str(SPEC), "--json"]
    if not Path(cmd[0]).exists():
        cmd[:1] = [sys.executable, "-m", "gradq.cli.main"]
    if args.quick:
        cmd += ["--set", "training.epochs=2", "--set", "compare.seeds=2"]
    bare = [sys.executable, "-c", "pass"]
    _timed(cmd, env)  # warm-up: the schema, the dataset cache
    rows: dict[str, list[float]] = {"wall": [], "cpu": [], "training": [], "fixed": [],
                                    "python_bare": []}
    for _ in range(repeats):
        wall, cpu, out = _timed(cmd, env)
        training = _training_s(home, json.loads(out)["id"])
        rows["wall"].append(wall)
        rows["cpu"].append(cpu)
        rows["training"].append(training)
        rows["fixed"].append(wall - training)
        rows["python_bare"].append(_timed(bare, env)[0])
    med = {k: round(statistics.median(v), 3) for k, v in rows.items()}
    doc: dict[str, Any] = {
        "benchmark": "run_wall", "quick": args.quick, "machine": _common.machine(),
        "command": "gradq run examples/compare-optimizers.yaml"
                   + (" (2 epochs, 2 seeds)" if args.quick else ""),
        "repeats": repeats, "median_s": med,
        "all_s": {k: [round(x, 3) for x in v] for k, v in rows.items()},
        "targets_s": TARGETS_S,
        "verdicts": {k: _common.verdict(med[k], t) for k, t in TARGETS_S.items()}}
    print(f"gradq run (whole command) median {med['wall']:.3f} s wall, CPU {med['cpu']:.3f} s;"
          f" training {med['training']:.3f} s, fixed {med['fixed']:.3f} s;"
          f" python -c pass {med['python_bare']:.3f} s", file=sys.stderr)
    _common.report("run_wall", doc, args.tag)


if __name__ == "__main__":
    main()
