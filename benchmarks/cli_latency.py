"""How long the CLI takes to answer, as a user runs it: wall time of whole commands.

A SQLite database of the benchmark's own (a temporary ``GRADQ_HOME``) holds 1,000 jobs,
made through the service in one transaction per job tree (9 comparisons of 99 children
and 100 train jobs). Each command then runs as a new process of the installed ``gradq``
script, in rounds (every command once per round, after a warm-up round), and the median
of the rounds is reported against its target (issue 12):

- ``gradq --help`` ≤ 0.15 s;
- ``gradq ls`` and ``gradq status JOB`` ≤ 0.25 s (issue 22; 0.3 s in issue 12);
- ``gradq status`` with 300 ids in one call, beside 300 calls of one id (the single
  call's median × 300).

Beside them, in the same rounds, the floor that no gradq code can go under: the
interpreter starting with nothing to do (``python -c pass``), and starting plus importing
SQLAlchemy's ORM, which every command that reads the database needs. Each figure has its
CPU time beside it (user + system of the child): on a shared machine the wall time carries
the other tenants' load, the CPU time much less of it. Bytecode is written
for the commands (``PYTHONDONTWRITEBYTECODE`` is dropped for them), as an installed
package has it.

``measure()`` returns the figures as a dict, for other benchmarks to include.

    python benchmarks/cli_latency.py [--quick] [--repeats N]
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGETS_S = {"help": 0.15, "ls": 0.25, "status": 0.25}  # issue 12; ls, status: issue 22


def _gradq_command() -> list[str]:
    """The console script beside this interpreter (what a user runs), else ``-m``."""
    script = Path(sys.executable).with_name("gradq")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "gradq.cli.main"]


def make_jobs(n: int) -> list[str]:
    """``n`` queued jobs in the current GRADQ_HOME's database, made through the service:
    comparisons of 99 children (n // 100 − 1 of them) and single train jobs for the rest."""
    from gradq.service.spec import validate
    from gradq.service.store import create, newjob

    spec = validate({"data": {"dataset": "digits"}})
    train = newjob.NewJob(spec=spec, kind="train", name="bench", seed=0,
                        optimizer=spec["optimizer"], queue="auto")
    ids: list[str] = []
    parents = max(0, n // 100 - 1)
    for i in range(parents):
        tree = newjob.NewJob(spec=spec, kind="compare", name=f"compare-{i}", seed=0,
                           optimizer={}, queue="auto", children=[train] * 99)
        ids += create.create_jobs(tree, dataset=None, priority=0, max_attempts=3)
    while len(ids) < n:
        ids += create.create_jobs(train, dataset=None, priority=0, max_attempts=3)
    return ids


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``argv``: CPU is user + system time of the child,
    what the wall time would be on an idle machine (the command is single-threaded)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}… exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def measure(jobs: int = 1000, repeats: int = 7, many: int = 300) -> dict[str, Any]:
    """Medians (seconds) of each command over ``repeats`` interleaved rounds, on a fresh
    SQLite database holding ``jobs`` jobs; ``many`` ids go to the multi-id ``status``."""
    home = Path(tempfile.mkdtemp(prefix="gradq-cli-latency-"))
    saved = {k: os.environ.get(k) for k in ("GRADQ_HOME", "GRADQ_DATABASE_URL")}
    os.environ["GRADQ_HOME"] = str(home)
    os.environ.pop("GRADQ_DATABASE_URL", None)
    try:
        t = time.perf_counter()
        ids = make_jobs(jobs)
        made_s = time.perf_counter() - t
        from gradq.service.store.db import get_engine

        get_engine().dispose()  # this process holds no connection to the temporary file
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        gradq = _gradq_command()
        job = ids[-1]  # a train job
        commands = {
            "help": [*gradq, "--help"],
            "ls": [*gradq, "ls"],
            "status": [*gradq, "status", job],
            "python_bare": [sys.executable, "-c", "pass"],
            "python_sqlalchemy_orm": [sys.executable, "-c", "import sqlalchemy.orm"],
        }
        if many:  # 0: an older gradq, whose status took one id
            commands["status_many"] = [*gradq, "status", *ids[-many:], "--json"]
        for argv in commands.values():  # warm-up: bytecode written, files cached
            _time(argv, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        names = list(commands)
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                wall, used = _time(commands[name], env)
                times[name].append(wall)
                cpu[name].append(used)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(home, ignore_errors=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    doc: dict[str, Any] = {
        "jobs": len(ids), "jobs_made_s": round(made_s, 2), "repeats": repeats,
        "command": " ".join(gradq),
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "min_s": {k: round(min(v), 4) for k, v in times.items()},
        "median_cpu_s": {k: round(statistics.median(v), 4) for k, v in cpu.items()},
        "targets_s": TARGETS_S,
        "verdicts": {k: "met" if med[k] <= target else "not met"
                     for k, target in TARGETS_S.items()},
    }
    if many:
        doc["status_many"] = {"ids": many, "one_call_s": round(med["status_many"], 4),
                              "one_call_per_id_s": round(med["status"] * many, 2),
                              "speedup": round(med["status"] * many / med["status_many"], 1)}
    return doc


def main() -> None:
    import _common

    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=None, help="jobs in the database (1000)")
    p.add_argument("--many", type=int, default=300,
                   help="ids of the multi-id status (0: skip it, for a gradq without it)")
    args = p.parse_args()
    jobs = args.jobs or (50 if args.quick else 1000)
    repeats = args.repeats or (2 if args.quick else 7)
    doc: dict[str, Any] = {"benchmark": "cli_latency", "quick": args.quick,
                           "machine": _common.machine()}
    doc.update(measure(jobs=jobs, repeats=repeats, many=min(args.many, jobs)))
    for name, target in TARGETS_S.items():
        print(f"{name:8s} median {doc['median_s'][name]:.3f} s (CPU "
              f"{doc['median_cpu_s'][name]:.3f} s)  target ≤ {target} s  "
              f"{doc['verdicts'][name]}", file=sys.stderr)
    if "status_many" in doc:
        s = doc["status_many"]
        print(f"status × {s['ids']} ids: one call {s['one_call_s']:.3f} s, one call per id "
              f"{s['one_call_per_id_s']:.1f} s ({s['speedup']}×)", file=sys.stderr)
    m, c = doc["median_s"], doc["median_cpu_s"]
    print(f"floor: python -c pass {m['python_bare']:.3f} s (CPU {c['python_bare']:.3f} s), "
          f"+ import sqlalchemy.orm {m['python_sqlalchemy_orm']:.3f} s (CPU "
          f"{c['python_sqlalchemy_orm']:.3f} s)", file=sys.stderr)
    _common.report("cli_latency", doc, args.tag)


if __name__ == "__main__":
    main()
