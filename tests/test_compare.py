"""Comparisons (docs/spec.md ``compare``): the fan-out into children, the paired design, a grid
tuned on the validation metric, k-fold cross-validation, full-batch arms, and the CLI's
status, curves and plots of a comparison. Runs in this process (``gradq run``), no broker.
"""

from __future__ import annotations

import io
import json
import math
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
import sqlalchemy as sa
from _cli import cli, cli_json, run_all, write_spec
from click.testing import CliRunner
from gradq.cli.main import main
from gradq.service import submit
from gradq.service.store import queries
from gradq.service.store.db import session_scope
from gradq.service.store.models import Job
from gradq.workers.runner import execute

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ helpers
def iris_spec(arms: list[Any] | None = None, *, seeds: int = 2, epochs: int = 2,
              batch_size: int | None = 16, **compare: Any) -> dict[str, Any]:
    """A comparison on iris (90 training samples: 6 minibatches of 16 an epoch)."""
    spec: dict[str, Any] = {"kind": "compare", "seed": 0, "data": {"dataset": "iris"},
                            "model": {"hidden": [8]}, "training": {"epochs": epochs}}
    if batch_size is not None:
        spec["training"]["batch_size"] = batch_size
    spec["compare"] = {"seeds": seeds, **compare}
    if arms is not None:
        spec["compare"]["optimizers"] = arms
    return spec


def stored_children(parent: str) -> list[tuple[str, dict[str, Any], str]]:
    """(id, spec, status) of every child, as stored."""
    with session_scope() as s:
        rows = s.execute(sa.select(Job.id, Job.spec, Job.status)
                         .where(Job.parent_id == parent)).all()
    return [(r.id, json.loads(r.spec), str(getattr(r.status, "value", r.status)))
            for r in rows]


def arrays(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob)) as z:
        return {k: z[k] for k in z.files}


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert float(image[..., :3].std()) > 0  # something is drawn


# ------------------------------------------------------------------- fan-out
def _arm_seed_pairs(children: list[Any]) -> Counter:
    return Counter((c.spec["_arm"], c.seed) for c in children)


def test_fan_out_is_arms_times_seeds(tmp_path: Path) -> None:
    spec = iris_spec([{"name": "sgd", "lr": 0.1}, "momentum", {"name": "adam", "lr": 0.01}],
                     seeds=4)
    prepared = submit.prepare(write_spec(tmp_path, spec))
    pairs = _arm_seed_pairs(prepared.job.children)
    assert pairs == Counter({(arm, seed): 1 for arm in ("sgd(lr=0.1)", "momentum",
                                                        "adam(lr=0.01)")
                             for seed in range(4)})
    # each child is a plain train job carrying its arm's optimizer
    for c in prepared.job.children:
        assert c.kind == "train" and c.spec["kind"] == "train" and c.spec["compare"] is None
        assert c.spec["optimizer"]["name"] == c.spec["_arm"].split("(")[0]
    assert {c.spec["optimizer"]["lr"] for c in prepared.job.children
            if c.spec["optimizer"]["name"] == "adam"} == {0.01}
    # stored: a parent and 12 children, all queued
    ids = submit.create(prepared)
    assert len(ids) == 13
    listed = cli_json("ls", "--parent", ids[0], "--limit", "100")
    assert len(listed) == 12 and {r["status"] for r in listed} == {"queued"}
    assert {r["parent"] for r in listed} == {ids[0]}


def test_fan_out_of_the_default_arms_is_six_by_ten(tmp_path: Path) -> None:
    spec = {"kind": "compare", "data": {"dataset": "iris"}}
    prepared = submit.prepare(write_spec(tmp_path, spec))
    pairs = _arm_seed_pairs(prepared.job.children)
    assert len(pairs) == 60 and set(pairs.values()) == {1}
    assert {a for a, _ in pairs} == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop",
                                     "adam"}


def test_fan_out_of_a_grid_tunes_first_then_runs_the_chosen_setting_on_every_seed(
        tmp_path: Path) -> None:
    # Given a 2 × 2 grid tuned on 2 seeds, beside a plain arm, on 3 seeds
    spec = iris_spec([{"name": "momentum", "lr": [0.1, 0.01], "momentum": [0.5, 0.9]},
                      {"name": "adam", "lr": 0.01}], seeds=3, tune_seeds=2)
    prepared = submit.prepare(write_spec(tmp_path, spec))
    # Then the first children are 4 points × 2 tuning seeds (3 and 4: after the evaluation
    # seeds, never among them), and the plain arm × 3 seeds
    tune = [c for c in prepared.job.children if c.spec.get("_phase") == "tune"]
    plain = [c for c in prepared.job.children if "_phase" not in c.spec]
    assert len(tune) == 8 and len(plain) == 3
    assert Counter((json.dumps(c.spec["_grid"], sort_keys=True), c.seed) for c in tune) == \
        Counter({(json.dumps({"lr": lr, "momentum": m}, sort_keys=True), s): 1
                 for lr in (0.1, 0.01) for m in (0.5, 0.9) for s in (3, 4)})
    assert {c.seed for c in plain} == {0, 1, 2}
    # When it runs, the chosen setting is added on all 3 seeds
    parent = submit.create(prepared)[0]
    assert len(stored_children(parent)) == 11
    run_all(parent)
    kids = stored_children(parent)
    final = [(i, c) for i, c, _ in kids if c.get("_phase") == "final"]
    assert len(kids) == 14 and len(final) == 3
    assert sorted(c["seed"] for _, c in final) == [0, 1, 2]
    assert len({json.dumps(c["_grid"], sort_keys=True) for _, c in final}) == 1


def test_fan_out_of_k_folds_is_one_child_per_fold(tmp_path: Path) -> None:
    spec = {"data": {"dataset": "iris", "folds": 3}, "model": {"hidden": [8]},
            "optimizer": {"name": "adam", "lr": 0.01}}
    prepared = submit.prepare(write_spec(tmp_path, spec))
    assert prepared.job.kind == "compare"
    assert sorted(tuple(c.spec["_fold"]) for c in prepared.job.children) == [
        (3, 0), (3, 1), (3, 2)]
    assert {c.spec["optimizer"]["lr"] for c in prepared.job.children} == {0.01}


# ------------------------------------------------------------- paired design
# lbfgs runs alone while the first-order arms may train together as batched replicas: the
# pairing has to hold across both paths
PAIRED_ARMS = [{"name": "sgd", "lr": 0.1}, {"name": "momentum", "lr": 0.1, "momentum": 0.0},
               {"name": "adam", "lr": 0.01}, "lbfgs"]
SGD, MOMENTUM0, ADAM = "sgd(lr=0.1)", "momentum(lr=0.1, momentum=0.0)", "adam(lr=0.01)"
ALL = (SGD, MOMENTUM0, ADAM, "lbfgs")


def _paired_runs(tmp_path: Path) -> tuple[dict[str, Any], dict[tuple[str, int], str]]:
    """Four arms on two seeds, one of them momentum with μ = 0 — the same update as sgd at
    the same rate, so it can differ from sgd only through its data or its start."""
    spec = iris_spec(PAIRED_ARMS, seeds=2, epochs=2)
    spec["training"]["log_every"] = 1
    rep = cli_json("run", str(write_spec(tmp_path, spec)))
    assert {a["optimizer"] for a in rep["arms"]} == set(ALL)
    docs = [cli_json("results", i) for a in rep["arms"] for i in a["runs"]]
    by = {(d["arm"], d["seed"]): d["id"] for d in docs}
    assert len(by) == 8
    return rep, by


def test_paired_design_same_split_start_and_minibatch_order(tmp_path: Path) -> None:
    # Given four arms on two seeds
    rep, by = _paired_runs(tmp_path)
    docs = {k: cli_json("results", i) for k, i in by.items()}
    curves = {k: cli_json("curves", i)["metrics"] for k, i in by.items()}
    for seed in (0, 1):
        # Then for one seed every arm sees the same split: the same number of steps an
        # epoch (90 training samples, 6 minibatches of 16) and, before the first update,
        # the same train, validation and test losses — the same data and the same start
        for arm in ALL:
            assert docs[(arm, seed)]["final"]["steps"] == 2 * math.ceil(90 / 16)
        for m in ("train_loss", "val_loss", "test_loss", "test_accuracy"):
            at0 = {curves[(arm, seed)][m]["value"][0] for arm in ALL}
            assert len(at0) == 1, m
        # and the same minibatches in the same order: momentum(μ=0) retraces sgd's every
        # step, and ends with the same parameters. Within a few ulps of the training dtype
        # (float32), not bit for bit: the two arms may train in different stacks (another
        # replica count, or alone), which changes only the order in which batched products
        # and loss sums add up — a rounding error of float32 per operation (momentum(μ=0)
        # and sgd were seen 1 float64 ulp apart). Another minibatch order, split or start
        # would move these losses by far more than 1e-3 (compare the seeds' curves).
        for m in ("train_loss", "val_loss", "test_loss"):
            assert len(curves[(SGD, seed)][m]["value"]) == 13
            np.testing.assert_array_max_ulp(
                np.float32(curves[(MOMENTUM0, seed)][m]["value"]),
                np.float32(curves[(SGD, seed)][m]["value"]), maxulp=4)
        a = arrays(queries.artifact(by[(SGD, seed)], "model"))
        b = arrays(queries.artifact(by[(MOMENTUM0, seed)], "model"))
        assert set(a) == set(b) and set(a) >= {"W0", "b0", "W1", "b1"}
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=1e-6, atol=1e-7)
        # while adam, on the same data from the same start, takes other steps
        assert curves[(ADAM, seed)]["train_loss"]["value"][1:] != \
            curves[(SGD, seed)]["train_loss"]["value"][1:]
    # Different seeds differ: another start (or split), other curves
    for arm in ALL:
        assert curves[(arm, 0)]["train_loss"]["value"][0] != \
            curves[(arm, 1)]["train_loss"]["value"][0]
    # and the report pairs the runs by seed: sgd − momentum(μ=0) is exactly zero
    pair = next(p for p in rep["pairs"] if {p["a"], p["b"]} == {SGD, MOMENTUM0})
    assert pair["n"] == 2 and pair["diff"] == pytest.approx(0.0, abs=1e-7)


def test_paired_design_initial_artifacts_are_identical_across_arms(tmp_path: Path) -> None:
    # Given four arms on two seeds
    _, by = _paired_runs(tmp_path)
    initial = {k: arrays(queries.artifact(i, "initial")) for k, i in by.items()}
    # Then the stored initial parameters are the start, not the trained end
    trained = arrays(queries.artifact(by[(SGD, 0)], "model"))
    assert not np.array_equal(initial[(SGD, 0)]["W0"], trained["W0"])
    for seed in (0, 1):
        # and for one seed every arm starts from the very same parameters
        ref = initial[(SGD, seed)]
        assert set(ref) >= {"W0", "b0", "W1", "b1"}
        for arm in ALL[1:]:
            assert set(initial[(arm, seed)]) == set(ref)
            for name in ref:
                np.testing.assert_array_equal(initial[(arm, seed)][name], ref[name])
    # while different seeds start elsewhere
    assert not np.array_equal(initial[(SGD, 0)]["W0"], initial[(SGD, 1)]["W0"])


# --------------------------------------------------------------------- grids
@pytest.mark.parametrize("metric", ["test_loss", "test_accuracy"])
def test_grid_tuning_picks_the_best_setting_on_the_validation_metric(
        tmp_path: Path, metric: str) -> None:
    # Given an sgd grid with one useful and one useless rate, tuned on 2 seeds
    spec = iris_spec([{"name": "sgd", "lr": [0.3, 0.0003]}, {"name": "adam", "lr": 0.01}],
                     seeds=3, tune_seeds=2, epochs=3, metric=metric)
    rep = cli_json("run", str(write_spec(tmp_path, spec)))
    # When the tuning children's validation results are read back
    val = "val_loss" if metric == "test_loss" else "val_accuracy"
    kids = stored_children(rep["id"])
    scores: dict[float, list[float]] = defaultdict(list)
    finals = []
    for job_id, cspec, status in kids:
        assert status == "succeeded"
        if cspec.get("_phase") == "tune":
            doc = cli_json("results", job_id)
            scores[cspec["_grid"]["lr"]].append(doc["final"][val])
        elif cspec.get("_phase") == "final":
            finals.append(job_id)
    assert {lr: len(v) for lr, v in scores.items()} == {0.3: 2, 0.0003: 2}
    means = {lr: statistics.fmean(v) for lr, v in scores.items()}
    best = (min if val == "val_loss" else max)(means, key=means.get)
    assert best == 0.3
    # Then the report says which setting won, and shows the grid's results
    grid_arm, adam = rep["arms"]
    assert grid_arm["optimizer"] == "sgd(lr=[0.3, 0.0003])"
    tuning = grid_arm["tuning"]
    assert tuning["metric"] == val and tuning["chosen"] == {"lr": best}
    assert {g["setting"]["lr"]: (g["n"], g[val]) for g in tuning["grid"]} == {
        lr: (2, pytest.approx(m, rel=1e-9)) for lr, m in means.items()}
    assert "tuning" not in adam
    # and the chosen setting ran on every seed, and only those runs are pooled
    assert sorted(grid_arm["runs"]) == sorted(finals) and grid_arm["n"] == 3
    final_docs = [cli_json("results", i) for i in finals]
    assert sorted(d["seed"] for d in final_docs) == [0, 1, 2]
    assert {d["optimizer"]["lr"] for d in final_docs} == {best}
    assert grid_arm["mean"] == pytest.approx(
        statistics.fmean(d["final"][metric] for d in final_docs), rel=1e-9)
    out = cli("report", rep["id"])
    assert f"tuned sgd(lr=[0.3, 0.0003]) on {val}: chose {{'lr': 0.3}}" in out
    status = cli_json("status", rep["id"])
    assert status["progress"]["children"]["succeeded"] == 4 + 3 + 3
    assert status["progress"]["total"] == 10


def test_report_png_writes_curves_final_and_grid_plots(tmp_path: Path) -> None:
    spec = iris_spec([{"name": "sgd", "lr": [0.3, 0.03]}, {"name": "adam", "lr": 0.01}],
                     seeds=2, tune_seeds=1)
    rep = cli_json("run", str(write_spec(tmp_path, spec)))
    out = tmp_path / "plots" / "cmp.png"
    out.parent.mkdir()
    result = CliRunner().invoke(main, ["report", rep["id"], "--png", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    written = [out, out.with_name("cmp-final.png"), out.with_name("cmp-grid.png")]
    for p in written:
        assert_png(p)
        assert f"wrote {p}" in result.stderr
    # with --json the document stays the only thing on standard output
    again = tmp_path / "again.png"
    doc = cli_json("report", rep["id"], "--png", str(again))
    assert doc["id"] == rep["id"]
    assert_png(again)
    assert_png(again.with_name("again-final.png"))


def test_report_png_without_a_grid_writes_two_files(tmp_path: Path) -> None:
    rep = cli_json("run", str(write_spec(tmp_path, iris_spec(
        [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.01}]))))
    out = tmp_path / "r.png"
    cli("report", rep["id"], "--png", str(out))
    assert_png(out)
    assert_png(tmp_path / "r-final.png")
    assert not (tmp_path / "r-grid.png").exists()


# ----------------------------------------------------------- status, curves
def test_status_of_a_comparison_counts_its_children(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # one child at a time: no sibling is taken along as a batched replica
    monkeypatch.setenv("GRADQ_MAX_REPLICAS", "1")
    prepared = submit.prepare(write_spec(tmp_path, iris_spec(
        [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.01}], seeds=3)))
    ids = submit.create(prepared)
    parent = ids[0]
    doc = cli_json("status", parent)
    assert doc["kind"] == "compare" and doc["status"] == "queued"
    assert doc["progress"]["total"] == 6
    assert doc["progress"]["children"] == {"queued": 6, "running": 0, "succeeded": 0,
                                           "failed": 0, "diverged": 0, "cancelled": 0}
    execute(ids[1], worker="test-local")
    doc = cli_json("status", parent)
    assert doc["status"] == "running"
    assert doc["progress"]["children"]["queued"] == 5
    assert doc["progress"]["children"]["succeeded"] == 1
    run_all(parent)
    doc = cli_json("status", parent)
    assert doc["status"] == "succeeded"
    assert doc["progress"]["children"]["succeeded"] == 6
    assert doc["progress"]["children"]["queued"] == 0
    assert "6 succeeded" in cli("status", parent)


def test_curves_overlay_two_jobs(tmp_path: Path) -> None:
    rep = cli_json("run", str(write_spec(tmp_path, iris_spec(
        [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.01}], seeds=1))))
    a, b = rep["arms"][0]["runs"][0], rep["arms"][1]["runs"][0]
    png, csv = tmp_path / "overlay.png", tmp_path / "overlay.csv"
    doc = cli_json("curves", a, b, "--metric", "train_loss", "--png", str(png),
                   "--csv", str(csv))
    assert [d["id"] for d in doc["jobs"]] == [a, b]
    assert all(list(d["metrics"]) == ["train_loss"] for d in doc["jobs"])
    assert_png(png)
    rows = csv.read_text().splitlines()
    assert rows[0] == "job,metric,step,epoch,time_s,value"
    assert {r.split(",")[0] for r in rows[1:]} == {a, b}
    # every metric overlaid, one panel each
    all_png = tmp_path / "all.png"
    cli("curves", a, b, "--png", str(all_png))
    assert_png(all_png)
    assert matplotlib.image.imread(all_png).shape[0] > matplotlib.image.imread(png).shape[0]


# -------------------------------------------------------------------- k-fold
def test_k_fold_reports_like_a_comparison_over_folds(tmp_path: Path) -> None:
    # Given a train spec with 3 folds
    spec = {"seed": 0, "data": {"dataset": "iris", "folds": 3}, "model": {"hidden": [8]},
            "optimizer": {"name": "adam", "lr": 0.01}, "training": {"epochs": 3,
                                                                     "batch_size": 16}}
    rep = cli_json("run", str(write_spec(tmp_path, spec)))
    kids = stored_children(rep["id"])
    assert sorted(tuple(c["_fold"]) for _, c, _ in kids) == [(3, 0), (3, 1), (3, 2)]
    docs = [cli_json("results", i) for i, _, _ in kids]
    # Then the report pools the folds as a comparison pools its seeds
    assert rep["metric"] == "test_loss" and rep["partial"] is None
    (arm,) = rep["arms"]
    assert arm["n"] == 3 and sorted(arm["runs"]) == sorted(i for i, _, _ in kids)
    values = [d["final"]["test_loss"] for d in docs]
    assert len(set(values)) == 3  # each fold tests on other samples
    assert arm["mean"] == pytest.approx(statistics.fmean(values), rel=1e-9)
    assert arm["std"] == pytest.approx(statistics.stdev(values), rel=1e-9)
    assert arm["ci95"][0] < arm["mean"] < arm["ci95"][1]
    # the human report names the one arm, and says nothing is missing
    assert rep["notes"] == [] and rep["pairs"] == []
    assert cli_json("status", rep["id"])["progress"]["children"]["succeeded"] == 3
    assert "adam" in cli("report", rep["id"])


# ------------------------------------------------------------ full-batch arms
def _batch_sizes(children: list[Any]) -> dict[str, set]:
    out: dict[str, set] = defaultdict(set)
    for c in children:
        out[c.spec["optimizer"]["name"]].add(c.spec["training"]["batch_size"])
    return out


def test_a_full_batch_arm_defaults_to_the_full_batch(tmp_path: Path) -> None:
    # Given sgd and lbfgs arms and no batch size in the spec
    spec = iris_spec([{"name": "sgd", "lr": 0.1}, "lbfgs"], seeds=1, epochs=3,
                     batch_size=None)
    prepared = submit.prepare(write_spec(tmp_path, spec))
    # Then lbfgs's children take the full batch, sgd's the default minibatch
    assert _batch_sizes(prepared.job.children) == {"sgd": {128}, "lbfgs": {"full"}}
    parent = submit.create(prepared)[0]
    run_all(parent)
    steps = {d["optimizer"]["name"]: d["final"]["steps"] for d in queries.children(parent)}
    assert steps["lbfgs"] == 3  # one step an epoch


def test_a_batch_size_the_user_set_is_kept_for_a_full_batch_arm(tmp_path: Path) -> None:
    spec = iris_spec([{"name": "sgd", "lr": 0.1}, "lbfgs"], seeds=1, epochs=2, batch_size=16)
    prepared = submit.prepare(write_spec(tmp_path, spec))
    assert _batch_sizes(prepared.job.children) == {"sgd": {16}, "lbfgs": {16}}
    parent = submit.create(prepared)[0]
    run_all(parent)
    steps = {d["optimizer"]["name"]: d["final"]["steps"] for d in queries.children(parent)}
    assert steps == {"sgd": 12, "lbfgs": 12}  # 6 minibatches an epoch


def test_a_full_batch_grid_keeps_the_full_batch_in_its_final_runs(tmp_path: Path) -> None:
    spec = iris_spec([{"name": "lbfgs", "history": [3, 10]}, {"name": "sgd", "lr": 0.1}],
                     seeds=2, epochs=2, batch_size=None)
    prepared = submit.prepare(write_spec(tmp_path, spec))
    parent = submit.create(prepared)[0]
    run_all(parent)
    kids = stored_children(parent)
    phases = Counter((c["optimizer"]["name"], c.get("_phase"), c["training"]["batch_size"])
                     for _, c, _ in kids)
    assert phases == Counter({("lbfgs", "tune", "full"): 2, ("lbfgs", "final", "full"): 2,
                              ("sgd", None, 128): 2})


@pytest.mark.parametrize(("counts", "cancel", "end"), [
    ({"succeeded": 2, "running": 1}, False, None),  # a child still runs: not over yet
    ({"succeeded": 3}, False, ("succeeded", None)),
    ({"succeeded": 1, "diverged": 2}, False, ("succeeded", "children not succeeded: 2 diverged")),
    ({"failed": 1, "diverged": 1}, False,
     ("failed", "children not succeeded: 1 diverged, 1 failed")),
    ({"succeeded": 1, "cancelled": 2}, True,
     ("cancelled", "children not succeeded: 2 cancelled")),
    ({"queued": 1, "cancelled": 1}, True, None),
])
def test_how_a_comparison_ends_from_its_children(counts, cancel, end) -> None:
    from gradq.service.experiments.settling import conclusion
    from gradq.service.status import JobStatus

    got = conclusion({JobStatus(k): v for k, v in counts.items()}, cancel)
    assert (None if got is None else (got[0].value, got[1])) == end
