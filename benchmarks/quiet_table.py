"""The one table of benchmarks/README.md, as markdown, from the JSON figures of a run.

``benchmarks/quiet_run.sh`` runs every CPU benchmark of the table with ``OUT`` set, then
this script reads ``$OUT/<name>.json`` (and the stage log ``$OUT/stages.tsv``: name, exit
code, seconds, load average before and after) and prints one row per figure, with the
load average the benchmark itself recorded beside it. A benchmark that did not run, or
failed, gets a row that says so.

    python benchmarks/quiet_table.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Row = tuple[str, str, str, str, str, str]  # figure, gradq, reference, ratio, target, verdict


def _f(x: Any, unit: str = "", digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}{unit}" if isinstance(x, float) else f"{x}{unit}"


def run_wall(d: dict) -> Iterator[Row]:
    m = d["median_s"]
    yield ("README main job, whole `gradq run` (wall)", _f(m["wall"], " s"),
           f"`python -c pass` {_f(m['python_bare'], ' s')}", "—", "≤ 1.5 s",
           d["verdicts"]["wall"])
    yield ("… its fixed cost (wall − training)", _f(m["fixed"], " s"),
           f"training {_f(m['training'], ' s')}, CPU {_f(m['cpu'], ' s')}", "—", "≤ 0.35 s",
           d["verdicts"]["fixed"])


def search(d: dict) -> Iterator[Row]:
    t, s = d["trials_per_s"], d["search"]
    yield (f"search, {s['trials']} trials × {s['epochs']} epochs (trials/s)",
           _f(t["gradq"]), f"Optuna + torch {_f(t['optuna_torch'])}", f"{d['speedup']}×",
           "≥ 5×", d["verdict"])


def job_epoch(d: dict) -> Iterator[Row]:
    ms, r, v = d["ms_per_epoch"], d["ratios"], d["verdicts"]
    yield ("job_epoch mnist, `train_metrics: full` (ms/epoch)", _f(ms["gradq_mnist"], "", 1),
           f"torch {_f(ms['torch_mnist'], '', 1)}", f"{r['mnist']}×", "≤ 0.8×",
           v.get("mnist", "—"))
    yield ("job_epoch mnist, `running`", _f(ms["gradq_mnist_running"], "", 1),
           f"torch {_f(ms['torch_mnist'], '', 1)}", f"{r['mnist_running']}×", "—", "—")
    yield ("job_epoch digits (ms/epoch)", _f(ms["gradq_digits"], "", 1),
           f"MLPClassifier {_f(ms['sklearn_digits'], '', 1)}", f"{r['digits']}×", "≤ 0.8×",
           v.get("digits", "—"))
    yield ("job_epoch checkpoint overhead", f"{r['checkpoint_overhead'] * 100:+.1f}%",
           "no checkpoints", "—", "≤ 5%", v.get("checkpoint_overhead", "—"))


def cli_latency(d: dict) -> Iterator[Row]:
    m, v = d["median_s"], d["verdicts"]
    for k in ("help", "ls", "status"):
        what = "`gradq --help`" if k == "help" else f"`gradq {k}` (1,000 jobs, SQLite)"
        yield (what,
               _f(m[k], " s"), f"`python -c pass` {_f(m['python_bare'], ' s')}", "—",
               f"≤ {d['targets_s'][k]} s", v[k])


def ui(d: dict) -> Iterator[Row]:
    c, p = d["curve"], d["paging"]
    med = c["timing"]["api_downsampled"]["median_s"]
    yield (f"ui, {c['points']:,}-point curve → {c['returned']} points (median / p95)",
           f"{_f(med, ' s')} / {_f(c.get('p95_s'), ' s')}",
           f"every point {_f(c['timing']['read_every_point']['median_s'], ' s')}",
           f"{c['ratio_api_over_full_read']}×", "≤ 0.3 s / ≤ 0.5 s", c["verdict"])
    yield ("ui, 20 such curves one after another", _f(c.get("twenty_curves_s"), " s"), "—",
           "—", "≤ 1 s", "—")
    yield (f"ui, page of {p['jobs']:,} jobs / API offset",
           f"{_f(p['timing']['jobs_page']['median_s'], ' s')} / "
           f"{_f(p['timing']['api_jobs']['median_s'], ' s')}",
           f"bare SELECT {_f(p['timing']['bare_select']['median_s'], ' s')}", "—", "< 0.3 s",
           p["verdict"])


def mlp_step(d: dict) -> Iterator[Row]:
    u = d["us_per_step"]
    yield ("mlp_step, CPU (µs/step)", _f(u["gradq"], "", 0),
           f"torch eager {_f(u['torch_eager'], '', 0)}", f"{d['ratio_gradq_over_torch_eager']}×",
           "≤ 0.8×", d["verdict"])


def flops(d: dict) -> Iterator[Row]:
    yield ("flops, CPU (hardware GFLOP/s)", _f(d["achieved_hardware_gflops"], "", 1),
           f"sgemm {_f(d['large_matmul']['gflops'], '', 1)}",
           f"{d['hardware_fraction_of_large_matmul']}", "≥ 0.8", d.get("verdict", "—"))


def sweep(d: dict) -> Iterator[Row]:
    s = d["seconds"]
    gradq = next((v for k, v in s.items() if "gradq" in k), None)
    ref = next((v for k, v in s.items() if "torch" in k), None)
    yield (f"sweep, CPU, {d['samples']:,} samples (s)", _f(gradq, " s"),
           f"torch loop {_f(ref, ' s')}", f"{d['ratio_gradq_over_torch_loop']}×", "reported",
           "—")


def queue_latency(d: dict) -> Iterator[Row]:
    o = d["overhead_ms"]
    yield ("queue, overhead per job (ms, median / p95)", f"{o['median']} / {o['p95']}", "—",
           "—", "≤ 30 ms", d["verdict"])


def ingest(d: dict) -> Iterator[Row]:
    yield ("ingest, PostgreSQL (best points/s)", f"{d['best_points_per_s']:,}", "bare COPY",
           "—", "≥ 100,000/s", d["verdict"])


def dataset_load(d: dict) -> Iterator[Row]:
    m = d["median_s"]
    yield ("mnist load from the cache, new process", _f(m["cache"], " s"),
           f"from source {_f(m['source'], ' s')}", f"{d['cache_over_source']}×", "≤ 0.2 s",
           d["verdict"])


def expected_best(d: dict) -> Iterator[Row]:
    n = max(d["seconds"], key=int)
    yield (f"search report's expected best, {int(n):,} trials", _f(
        d["seconds"][n]["median_s"] * 1000, " ms", 1), "—", "—", "< 50 ms", d["status"])


def suite_mini(d: dict) -> Iterator[Row]:
    b = d["breakdown"]
    runs = sum(w["runs"] for w in b["workloads"].values())
    yield (f"`gradq run examples/suite-mini.yaml` (wall, {runs} runs)", _f(d["wall_s"], " s", 1),
           f"before the first run {_f(b['before_first_run_s'], ' s', 1)}, after the last "
           f"{_f(b['after_last_run_s'], ' s', 1)}", "—", "≤ 15 min", d["verdict"])


TABLE: dict[str, Callable[[dict], Iterator[Row]]] = {
    "run_wall": run_wall, "search": search, "search_30": search, "job_epoch": job_epoch,
    "cli_latency": cli_latency, "ui": ui, "mlp_step": mlp_step, "flops": flops,
    "sweep": sweep, "queue_latency": queue_latency, "ingest": ingest,
    "dataset_load": dataset_load, "expected_best": expected_best, "suite_mini": suite_mini}


def main(out: Path) -> None:
    stages: dict[str, list[str]] = {}
    log = out / "stages.tsv"
    if log.exists():
        for line in log.read_text().splitlines():
            name, *rest = line.split("\t")
            stages[name] = rest
    print("| benchmark | gradq | reference | ratio | target | status | load (1 min) |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in TABLE.items():
        path = out / f"{name}.json"
        if not path.exists():
            rc, secs = (stages.get(name) or ["not run", "—"])[:2]
            print(f"| {name} | — | — | — | — | did not finish (exit {rc}, {secs} s) | — |")
            continue
        doc = json.loads(path.read_text())
        load = doc.get("machine", {}).get("load_average") or [None]
        for row in rows(doc):
            print("| " + " | ".join(row) + f" | {_f(load[0], '', 2)} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
