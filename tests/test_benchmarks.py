"""Every benchmark runs from a fresh checkout with ``--quick`` and reports its figures.

No timing is asserted here: speed targets live in ``benchmarks/`` (and its README), never in
tests. What is checked is that each script runs, prints its figures with the machine it
ran on, and writes them as JSON to ``$OUT``. The queue and ingest benchmarks need the real
PostgreSQL and Redis (they skip without them, and fail under ``CI=true``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, need_service

BENCH = ROOT / "benchmarks"


def run_script(name: str, tmp_path: Path, *args: str, timeout: float = 240) -> dict:
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "GRADQ_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--quick", *args],
                          env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / f"{name}.json").read_text())
    assert doc["benchmark"] == name and doc["quick"] is True
    assert doc["machine"]["numpy"] and doc["machine"]["cpu_count"]
    assert "blas" in doc["machine"]
    assert f'"benchmark": "{name}"' in proc.stdout  # the figures are printed, too
    return doc


def test_mlp_step_reports_gradq_and_torch_per_step(tmp_path: Path) -> None:
    doc = run_script("mlp_step", tmp_path, "--device", "cpu")
    assert set(doc["us_per_step"]) == {"gradq", "torch_eager"}
    assert doc["ratio_gradq_over_torch_eager"] > 0
    assert set(doc["breakdown_us_per_step"]) == {
        f"{side}_{part}" for side in ("gradq", "torch") for part in ("forward_backward",
                                                                     "update")}
    assert doc["sane"]


def _bench_module(name: str):  # noqa: ANN202 - a benchmark script's module
    sys.path.insert(0, str(BENCH))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCH))


def test_flops_reports_model_and_hardware_flops(tmp_path: Path) -> None:
    doc = run_script("flops", tmp_path, "--device", "cpu")
    m = doc["model"]
    assert doc["achieved_gflops"] > 0 and doc["large_matmul"]["gflops"] > 0
    assert doc["fraction_of_large_matmul"] > 0
    assert m["flop_per_step"] == 6 * m["params"] * m["batch"]
    assert 0 < m["hardware_flop_per_step"] < m["flop_per_step"]
    ratio = m["hardware_flop_per_step"] / m["flop_per_step"]
    assert doc["achieved_hardware_gflops"] == pytest.approx(doc["achieved_gflops"] * ratio,
                                                            abs=0.1)  # both rounded to 0.1
    assert doc["products_alone_gflops"] > 0 and doc["hardware_fraction_of_products_alone"] > 0
    assert doc["target"].endswith("in hardware FLOPs")


def test_flop_counts_by_hand() -> None:
    flop_counts = _bench_module("flops").flop_counts
    # 3-4-2 on 5 rows: 26 parameters. Products: layer 0 forward and ∂W, 2·5·3·4 each (its
    # ∂input is skipped); layer 1 forward, ∂W and ∂input, 2·5·4·2 each; biases 2·5·(4+2).
    assert flop_counts((3, 4, 2), 5) == {"model": 6 * 26 * 5, "params": 26,
                                         "hardware": 2 * 120 + 3 * 80 + 60}
    # the figure: on 1024-1024-1024-10 only 83% of the 6N count is done
    big = flop_counts((1024, 1024, 1024, 10), 512)
    assert big["hardware"] / big["model"] == pytest.approx(0.834, abs=0.001)


def test_flops_knows_the_fp32_peak_of_the_cards() -> None:
    peak_tflops = _bench_module("flops").peak_tflops
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 67.0
    assert peak_tflops("NVIDIA H100 PCIe") == 51.2
    assert peak_tflops("NVIDIA H200") == 67.0
    assert peak_tflops("Some Other Card") is None


def test_sweep_reports_batched_replicas_against_a_torch_loop(tmp_path: Path) -> None:
    doc = run_script("sweep", tmp_path, "--device", "cpu")
    assert doc["runs"] == 6 * doc["seeds"]
    assert set(doc["seconds"]) == {"gradq_replicas", "torch_loop"}
    assert doc["samples_note"]  # a scaled-down run says so
    assert set(doc["mean_final_train_loss_by_optimizer"]["gradq"]) == set(doc["optimizers"])


def test_cli_latency_reports_each_command_against_its_target(tmp_path: Path) -> None:
    doc = run_script("cli_latency", tmp_path)
    assert doc["jobs"] == 50
    commands = {"help", "ls", "status", "status_many", "python_bare", "python_sqlalchemy_orm"}
    assert set(doc["median_s"]) == commands and all(v > 0 for v in doc["median_s"].values())
    assert set(doc["median_cpu_s"]) == commands
    assert set(doc["verdicts"]) == set(doc["targets_s"]) == {"help", "ls", "status"}
    many = doc["status_many"]
    assert many["ids"] == 50
    assert many["one_call_per_id_s"] == pytest.approx(doc["median_s"]["status"] * 50, abs=0.01)


def test_dataset_load_reports_source_against_cache(tmp_path: Path) -> None:
    doc = run_script("dataset_load", tmp_path)
    assert doc["dataset"] == "iris" and doc["shape"] == [150, 4]
    assert set(doc["median_s"]) == {"source", "cache"}
    assert all(v > 0 for v in doc["median_s"].values())
    assert len(doc["cache_entry"]) == 2  # builtin-iris.json and <hash>.npz
    assert doc["verdict"] in ("met", "not met")


@pytest.mark.services
def test_queue_reports_overhead_per_job(tmp_path: Path) -> None:
    need_service("PostgreSQL", "127.0.0.1", 5432)
    need_service("Redis", "127.0.0.1", 6379)
    doc = run_script("queue_latency", tmp_path)
    assert doc["statuses"] == ["succeeded"] and doc["jobs"] >= 1
    assert {"median", "p95"} <= set(doc["overhead_ms"])


@pytest.mark.services
def test_ingest_reports_points_per_second(tmp_path: Path) -> None:
    need_service("PostgreSQL", "127.0.0.1", 5432)
    doc = run_script("ingest", tmp_path)
    assert doc["best_points_per_s"] > 0 and doc["rows_stored"] > 0


@pytest.mark.slow
def test_the_gpu_suite_runs_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "GRADQ_HOME": str(tmp_path / "home")}
    proc = subprocess.run(["bash", str(BENCH / "gpu_suite.sh"), "--quick"], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "gpu_suite.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["nn_tests", "mlp_step", "flops",
                                                       "sweep"]
    assert {"mlp_step.json", "flops.json", "sweep.json"} <= set(summary["figures"])


def test_search_reports_trials_per_second_against_optuna_and_torch(tmp_path: Path) -> None:
    pytest.importorskip("optuna")  # the reference side: pip install -e ".[bench]"
    doc = run_script("search", tmp_path, timeout=600)
    assert set(doc["trials_per_s"]) == {"gradq", "optuna_torch"}
    assert all(v > 0 for v in doc["trials_per_s"].values())
    assert doc["search"]["trials"] == 4 and doc["verdict"] in ("met", "not met")


def test_footprint_reports_bytes_per_job_against_params_and_curves(tmp_path: Path) -> None:
    doc = run_script("footprint", tmp_path, "--db", "sqlite", "--cases", "digits",
                     timeout=600)
    kept, default = (doc["results"][f"sqlite/digits/{k}"] for k in ("keep", "default"))
    assert kept["checkpoints_left"] > 0 and default["checkpoints_left"] == 0
    assert default["bytes_per_run"] < kept["bytes_per_run"]
    assert set(default["artifact_bytes_per_run"]) == {"model"}  # no "initial" for a train job
    assert default["params_bytes"] == 4 * default["params"] > 0
    assert doc["verdict"]["sqlite/digits/default"] in ("met", "not met")


def test_ui_reports_the_curve_and_paging_figures(tmp_path: Path) -> None:
    doc = run_script("ui", tmp_path)
    assert doc["curve"]["all_points_read"] == doc["curve"]["points"]
    assert 0 < doc["curve"]["returned"] <= 2000 + 500  # + a nan point per bucket at most
    assert doc["paging"]["listed"] == 50
    assert set(doc["paging"]["timing"]) == {"jobs_page", "api_jobs", "bare_select"}


def test_suite_tpe_reports_the_expected_best_of_both_methods(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    doc = run_script("suite_tpe", tmp_path)
    assert doc["setup"]["trials"] == 4
    assert len(doc["expected_best"]) >= 2  # TPE against random on two workloads at least
    for arms in doc["expected_best"].values():
        for curves in arms.values():
            assert len(curves["random"]) == len(curves["tpe"]) == 4


def test_stack_of_one_reports_both_paths(tmp_path: Path) -> None:
    doc = run_script("stack_of_one", tmp_path, "--device", "cpu")
    assert set(doc["seconds_per_epoch"]) == {"trainer", "stack_of_one"}
    assert doc["ratio_stack_of_one_over_trainer"] > 0 and doc["steps"] == 4


def test_run_wall_reports_the_whole_command_and_its_fixed_cost(tmp_path: Path) -> None:
    doc = run_script("run_wall", tmp_path)
    m = doc["median_s"]
    assert 0 < m["training"] < m["wall"] and m["fixed"] == pytest.approx(
        m["wall"] - m["training"], abs=0.002)
    assert set(doc["verdicts"]) == {"wall", "fixed"}


def test_job_epoch_reports_its_ratios(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    doc = run_script("job_epoch", tmp_path, "--threads", "1", timeout=600)
    assert {"mnist", "digits", "checkpoint_overhead"} <= set(doc["ratios"])
    assert all(v > 0 for v in doc["ms_per_epoch"].values())


def test_quiet_table_prints_one_row_per_figure_with_its_load(tmp_path: Path) -> None:
    # Given the figures of two benchmarks and a stage that did not finish
    out = tmp_path / "out"
    run_script("run_wall", tmp_path)
    (out / "stages.tsv").write_text("search\t124\t60\t0.4\t0.9\n")
    proc = subprocess.run([sys.executable, str(BENCH / "quiet_table.py"), str(out)],
                          capture_output=True, text=True, timeout=60, check=True)
    lines = proc.stdout.splitlines()
    # Then the table has the run's rows, each with the load its benchmark recorded, and
    # says which stage did not finish
    assert lines[0].startswith("| benchmark |") and "load" in lines[0]
    wall = next(line for line in lines if "whole `gradq run`" in line)
    assert wall.rstrip(" |").split("|")[-1].strip() != "—"
    assert any("search |" in line and "did not finish (exit 124, 60 s)" in line
               for line in lines)


def test_expected_best_reports_its_time_per_trial_count(tmp_path: Path) -> None:
    doc = run_script("expected_best", tmp_path)
    assert doc["seconds"] and all(v["median_s"] > 0 for v in doc["seconds"].values())
    assert doc["target_s_at_10000"] == 0.05


def test_suite_mini_reports_its_wall_time_broken_down_by_workload(tmp_path: Path) -> None:
    doc = run_script("suite_mini", tmp_path, timeout=300)
    assert doc["wall_s"] > 0 and doc["verdict"] in ("met", "not met")
    # every workload of book-mini ran, and the breakdown accounts for its runs
    assert len(doc["breakdown"]["workloads"]) >= 6
    assert all(w["runs"] > 0 for w in doc["breakdown"]["workloads"].values())
    assert doc["score"]


def test_mlp_vs_sklearn_reports_both_epochs_and_their_ratio(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    doc = run_script("mlp_vs_sklearn", tmp_path)
    assert {"gradq", "sklearn"} <= set(doc["seconds_per_epoch"])
    assert doc["ratio_gradq_over_sklearn"] > 0


def test_quiet_run_runs_every_stage_under_its_limit_then_prints_the_table(
        tmp_path: Path) -> None:
    # Given a Python that records each benchmark it is asked to run (the scripts' own
    # --quick paths are the tests above) and runs quiet_table.py for real
    calls = tmp_path / "calls"
    stub = tmp_path / "python"
    stub.write_text(f'#!/usr/bin/env bash\nif [[ "$1" == quiet_table.py ]]; then '
                    f'exec {sys.executable} "$@"; fi\necho "$@" >> {calls}\n')
    stub.chmod(0o755)
    env = {**os.environ, "PYTHON": str(stub), "OUT": str(tmp_path / "out")}
    proc = subprocess.run(["bash", str(BENCH / "quiet_run.sh"), "--quick"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Then every CPU benchmark ran once with --quick, each stage was recorded with its
    # exit code and load, and the table was printed
    ran = [line.split()[0] for line in calls.read_text().splitlines()]
    assert ran == ["run_wall.py", "cli_latency.py", "dataset_load.py", "ui.py",
                   "job_epoch.py", "search.py", "search.py", "mlp_step.py", "flops.py",
                   "sweep.py", "queue_latency.py", "ingest.py", "expected_best.py",
                   "suite_mini.py"]
    assert all("--quick" in line for line in calls.read_text().splitlines())
    stages = (tmp_path / "out" / "stages.tsv").read_text().splitlines()
    assert len(stages) == 14 and all(s.split("\t")[1] == "0" for s in stages)
    assert proc.stdout.startswith("| benchmark |")
