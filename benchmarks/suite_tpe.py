"""TPE against random search on the suite's workloads: the expected best validation metric
of k trials (k = 1 … trials), per workload and arm, for ``method: random`` and ``method:
tpe`` (Optuna's TPESampler in waves of 4), everything else equal.

The suite: three workloads of ``book-mini`` (digits-mlp, spirals-deep-tanh,
moons-bn-dropout), two arms searched over two hyperparameters each (``momentum``: lr and
momentum; ``adam``: lr and beta1), 16 trials per arm, one evaluation seed (only the search
is compared). Each method runs as ``gradq
run`` of the suite in a fresh process and database, once per suite seed (``--repeats``,
default 3: the search is random, so one seed says little); the figures are the mean over
the seeds of each arm's expected-best curve (``report`` of each workload's comparison),
and of the best of the first k trials in the order they were proposed (what a search
stopped after k trials would hold: for tpe, its first waves).

    python benchmarks/suite_tpe.py [--quick] [--repeats R] [--trials N]
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np

WORKLOADS = ("digits-mlp", "spirals-deep-tanh", "moons-bn-dropout")
OPTIMIZERS = [{"name": "momentum", "lr": {"loguniform": [1e-4, 1.0]},
               "momentum": {"uniform": [0.0, 0.99]}},
              {"name": "adam", "lr": {"loguniform": [1e-5, 0.3]},
               "beta1": {"uniform": [0.5, 0.99]}}]


def suite(method: str, trials: int, seed: int, quick: bool) -> dict[str, Any]:
    from gradq.service.experiments.workloads import builtin

    chosen = [w for w in builtin("book-mini") if w["name"] in WORKLOADS]
    if quick:  # an epoch of two workloads, two waves: checks that the script runs
        chosen = chosen[:2]
        for w in chosen:
            w["spec"]["training"]["epochs"] = 1
    return {"kind": "suite", "name": f"tpe-vs-random-{method}", "seed": seed, "device": "cpu",
            "suite": {"workloads": chosen, "optimizers": OPTIMIZERS, "seeds": 1,
                      "search": {"method": method, "trials": trials,
                                 **({"wave": 2 if quick else 4} if method == "tpe" else {})},
                      "budget": "steps"}}


def gradq(*args: str, env: dict[str, str]) -> Any:
    proc = subprocess.run([sys.executable, "-m", "gradq.cli.main", *args, "--json"],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def one(method: str, trials: int, seed: int, quick: bool) -> dict[str, Any]:
    """Run the suite with ``method``; per workload and arm its search's expected best."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GRADQ_HOME": tmp}
        env.pop("GRADQ_DATABASE_URL", None)
        path = Path(tmp) / "suite.json"
        path.write_text(json.dumps(suite(method, trials, seed, quick)))
        t = time.perf_counter()
        rep = gradq("run", str(path), env=env)
        wall = time.perf_counter() - t
        out: dict[str, Any] = {"wall_s": round(wall, 2), "workloads": {}}
        db = sqlite3.connect(Path(tmp) / "gradq.db")
        for w in rep["workloads"]:
            cmp = gradq("report", w["comparison"], env=env)
            (progress,), = db.execute("SELECT progress FROM jobs WHERE id = ?",
                                      (w["comparison"],))
            values = {label.split("(")[0]: st["values"]
                      for label, st in json.loads(progress)["search"].items()}
            out["workloads"][w["name"]] = {
                a["label"].split("(")[0]: {"metric": a["search"]["metric"],
                                           "expected_best": a["search"]["expected_best"],
                                           "values": values[a["label"].split("(")[0]]}
                for a in cmp["arms"]}
        db.close()
    return out


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=None)
    args = p.parse_args()
    _common.set_threads(args.threads)
    trials = args.trials or (4 if args.quick else 16)
    repeats = args.repeats or (1 if args.quick else 3)
    runs: dict[str, list[dict[str, Any]]] = {"random": [], "tpe": []}
    for seed in range(repeats):
        for method in runs:
            runs[method].append(one(method, trials, seed, args.quick))
    curves: dict[str, Any] = {}
    for w in runs["random"][0]["workloads"]:
        curves[w] = {}
        for arm in runs["random"][0]["workloads"][w]:
            curves[w][arm] = {}
            for method, done in runs.items():
                eb = np.array([[np.nan if v is None else v for v in
                                r["workloads"][w][arm]["expected_best"]] for r in done])
                curves[w][arm][method] = [round(float(v), 5) for v in np.nanmean(eb, axis=0)]
                # the best of the first k trials in the order they were proposed: what a
                # search stopped after k trials holds (for tpe, its first waves)
                low = not runs["random"][0]["workloads"][w][arm]["metric"].endswith("accuracy")
                sofar = []
                for r in done:
                    v = np.array([np.nan if x is None else (x if low else -x)
                                  for x in r["workloads"][w][arm]["values"]])
                    sofar.append(np.fmin.accumulate(v) * (1 if low else -1))
                curves[w][arm][method + "_best_of_first_k"] = [
                    round(float(v), 5) for v in np.nanmean(np.array(sofar), axis=0)]
            curves[w][arm]["metric"] = runs["random"][0]["workloads"][w][arm]["metric"]
    _common.report("suite_tpe", {
        "benchmark": "suite_tpe", "quick": args.quick, "device": "cpu",
        "machine": _common.machine(),
        "setup": {"workloads": list(curves), "optimizers": OPTIMIZERS, "trials": trials,
                  "wave": 4, "suite_seeds": repeats},
        "wall_s": {m: [r["wall_s"] for r in done] for m, done in runs.items()},
        "expected_best": curves,
    }, args.tag)


if __name__ == "__main__":
    main()
