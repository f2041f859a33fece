"""A comparison's report, checked against numbers recomputed here from what the children
stored (docs/results.md): n, mean, std (n − 1), se, the t-interval, the book's ``better`` rule, the
paired per-seed differences (``pairs``: t-intervals, paired t-tests, Holm), excluded
children, ``partial``, ``target`` and ``auc``.

Nothing here calls ``report.interval`` to get its expectations: every interval below is
computed with ``scipy.stats.t.interval`` or by hand.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _cli import cli, cli_json, run_all, write_spec
from click.testing import CliRunner
from gradq.cli.main import main
from gradq.service import submit
from gradq.service.experiments import report
from gradq.service.status import JobStatus
from gradq.service.store.db import session_scope
from gradq.service.store.models import Job
from gradq.workers.runner import execute
from scipy import stats

T975 = {1: 12.706204736174707, 2: 4.302652729749464, 3: 3.182446305284263}


# ------------------------------------------------------------------ helpers
def compare_spec(arms: list[Any], *, seeds: int = 4, metric: str = "test_loss",
                 epochs: int = 3, dataset: str = "iris", **compare: Any) -> dict[str, Any]:
    """A small comparison: a 16-unit MLP; on iris, minibatches of 16 (6 steps an epoch), on
    digits of 64 (17 steps an epoch)."""
    return {"kind": "compare", "seed": 0, "data": {"dataset": dataset},
            "model": {"hidden": [16]},
            "training": {"epochs": epochs, "batch_size": 16 if dataset == "iris" else 64},
            "compare": {"optimizers": arms, "seeds": seeds, "metric": metric, **compare}}


def run_comparison(tmp_path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """``gradq run SPEC --json`` (every child in this process): the report it prints."""
    return cli_json("run", str(write_spec(tmp_path, spec)))


def child_docs(parent: str) -> list[dict[str, Any]]:
    """Each child's docs/results.md result document, read back with ``gradq results CHILD
    --json``."""
    ids = [r["id"] for r in cli_json("ls", "--parent", parent, "--limit", "1000")]
    return [cli_json("results", i) for i in ids]


def t_interval(values: list[float]) -> tuple[float, float, float, list[float]]:
    """(mean, std, se, [lo, hi]) of a sample by scipy, independently of the report."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values)
    se = std / math.sqrt(len(values))
    if se == 0:
        return mean, std, se, [mean, mean]
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=se)
    return mean, std, se, [float(lo), float(hi)]


def assert_close(a: float | None, b: float | None, rel: float = 1e-9) -> None:
    assert a is not None and b is not None
    assert a == pytest.approx(b, rel=rel, abs=1e-12)


def finals_by_arm(docs: list[dict[str, Any]], metric: str
                  ) -> dict[str, dict[int, tuple[str, float]]]:
    """arm → seed → (run id, final metric) over the succeeded children."""
    out: dict[str, dict[int, tuple[str, float]]] = defaultdict(dict)
    for d in docs:
        if d["status"] == "succeeded":
            out[d["arm"]][d["seed"]] = (d["id"], d["final"][metric])
    return out


def check_statistics(rep: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    """Every arm's numbers, the better pairs and the paired differences, recomputed."""
    metric = rep["metric"]
    low = rep["lower_is_better"]
    by_arm = finals_by_arm(docs, metric)
    intervals = {}
    for arm in rep["arms"]:
        runs = by_arm.get(arm["label"], {})
        values = [v for _, v in runs.values()]
        assert arm["n"] == len(values)
        assert sorted(arm["runs"]) == sorted(i for i, _ in runs.values())
        if len(values) >= 2:
            mean, std, se, ci = t_interval(values)
            assert_close(arm["mean"], mean)
            assert_close(arm["std"], std)
            assert_close(arm["se"], se)
            assert_close(arm["ci95"][0], ci[0])
            assert_close(arm["ci95"][1], ci[1])
            intervals[arm["label"]] = ci
    # the book's rule: A beats B when A's interval lies wholly on the good side of B's
    expected = {(a, b) for a, ia in intervals.items() for b, ib in intervals.items()
                if a != b and ((ia[1] < ib[0]) if low else (ia[0] > ib[1]))}
    assert {tuple(p) for p in rep["better"]} == expected
    # pairs: the mean per-seed difference a − b over the seeds both arms finished, its
    # t-interval, the paired t-test (scipy's ttest_rel) and Holm's adjustment over all pairs
    labels = [a["label"] for a in rep["arms"]]
    assert [(p["a"], p["b"]) for p in rep["pairs"]] == [
        (a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]
    expected_p: dict[tuple[str, str], float] = {}
    for p in rep["pairs"]:
        ra, rb = by_arm.get(p["a"], {}), by_arm.get(p["b"], {})
        seeds = sorted(set(ra) & set(rb))
        xa, xb = [ra[s][1] for s in seeds], [rb[s][1] for s in seeds]
        diffs = [x - y for x, y in zip(xa, xb, strict=True)]
        assert p["n"] == len(diffs)
        if len(diffs) < 2:
            assert p["ci95"] is None and p["p"] is None and p["p_holm"] is None
            assert p["significant"] is False
            continue
        mean, _, _, ci = t_interval(diffs)
        assert_close(p["diff"], mean)
        assert_close(p["ci95"][0], ci[0], rel=1e-7)
        assert_close(p["ci95"][1], ci[1], rel=1e-7)
        if len(set(diffs)) == 1:  # no spread: t is 0/0 or ±inf (scipy says nan)
            expected_p[(p["a"], p["b"])] = 1.0 if diffs[0] == 0 else 0.0
        else:
            expected_p[(p["a"], p["b"])] = float(stats.ttest_rel(xa, xb).pvalue)
        assert p["p"] == pytest.approx(expected_p[(p["a"], p["b"])], rel=1e-6, abs=1e-15)
    holm = holm_by_hand(expected_p)
    for p in rep["pairs"]:
        if (p["a"], p["b"]) in holm:
            assert p["p_holm"] == pytest.approx(holm[(p["a"], p["b"])], rel=1e-6, abs=1e-15)
            assert p["significant"] is (holm[(p["a"], p["b"])] < 0.05)


def holm_by_hand(ps: dict[Any, float]) -> dict[Any, float]:
    """Holm (1979), written out: reject in order of p while p_(j) ≤ α/(m − j + 1); as an
    adjusted p-value, p̃_(i) = max over j ≤ i of min(1, (m − j + 1)·p_(j))."""
    ranked = sorted(ps.items(), key=lambda kv: kv[1])
    m = len(ranked)
    out, best = {}, 0.0
    for j, (key, p) in enumerate(ranked, start=1):
        best = max(best, min(1.0, (m - j + 1) * p))
        out[key] = best
    return out


# ------------------------------------------------------- report.interval units
def test_interval_of_no_sample_is_empty() -> None:
    assert report.interval([]) == {"n": 0, "mean": None, "std": None, "se": None,
                                   "ci95": None}


def test_interval_of_one_value_has_a_mean_and_no_spread() -> None:
    assert report.interval([0.25]) == {"n": 1, "mean": 0.25, "std": None, "se": None,
                                       "ci95": None}


def test_interval_of_two_values_by_hand() -> None:
    # mean 2, std √2 (n − 1), se √2/√2 = 1, t(0.975, 1) = 12.7062
    iv = report.interval([1.0, 3.0])
    assert iv["n"] == 2
    assert iv["mean"] == pytest.approx(2.0)
    assert iv["std"] == pytest.approx(math.sqrt(2.0))
    assert iv["se"] == pytest.approx(1.0)
    assert iv["ci95"] == pytest.approx([2.0 - T975[1], 2.0 + T975[1]])


def test_interval_of_a_constant_sample_is_a_point() -> None:
    iv = report.interval([0.5, 0.5, 0.5])
    assert (iv["std"], iv["se"]) == (0.0, 0.0)
    assert iv["ci95"] == [0.5, 0.5]


@pytest.mark.parametrize("values", [
    [0.31, 0.29, 0.35, 0.30],
    [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
    [-3.5, 2.25, 0.0, 7.125, -1.0, 4.5, 3.0],
])
def test_interval_of_many_values_matches_scipy(values: list[float]) -> None:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    lo, hi = stats.t.interval(0.95, n - 1, loc=mean, scale=std / math.sqrt(n))
    iv = report.interval(values)
    assert iv["n"] == n
    assert iv["mean"] == pytest.approx(mean, rel=1e-12)
    assert iv["std"] == pytest.approx(std, rel=1e-12)
    assert iv["se"] == pytest.approx(std / math.sqrt(n), rel=1e-12)
    assert iv["ci95"] == pytest.approx([lo, hi], rel=1e-12)
    if n == 4:
        assert hi - mean == pytest.approx(T975[3] * std / 2, rel=1e-12)


# ------------------------------------------------ a comparison's statistics
# On digits (10 classes, 360 test samples) an untrained network scores about 0.1 whatever
# its seed, and the two good arms above 0.9: far enough apart for the book's rule to fire.
ARMS = [{"name": "sgd", "lr": 0.0005}, {"name": "momentum", "lr": 0.05},
        {"name": "adam", "lr": 0.01}]
LABELS = ["sgd(lr=0.0005)", "momentum(lr=0.05)", "adam(lr=0.01)"]


@pytest.mark.parametrize("metric, low", [("test_loss", True), ("test_accuracy", False)])
def test_report_matches_statistics_recomputed_from_stored_results(
        tmp_path: Path, metric: str, low: bool) -> None:
    # Given three arms, one of them (sgd at a tiny rate) far behind, on 4 paired seeds
    rep = run_comparison(tmp_path, compare_spec(ARMS, metric=metric, dataset="digits"))
    # When every child's stored result is read back
    docs = child_docs(rep["id"])
    # Then the report's numbers are those of the stored results
    assert rep["metric"] == metric
    assert rep["lower_is_better"] is low
    assert [a["optimizer"] for a in rep["arms"]] == LABELS
    assert all(a["n"] == 4 for a in rep["arms"])
    assert len(docs) == 12 and all(d["status"] == "succeeded" for d in docs)
    check_statistics(rep, docs)
    # and the rule is exercised, in the direction the metric asks for
    sgd, momentum, adam = LABELS
    assert [adam, sgd] in rep["better"] and [momentum, sgd] in rep["better"]
    assert [sgd, adam] not in rep["better"]
    pairs = {(p["a"], p["b"]): p for p in rep["pairs"]}
    assert pairs[(sgd, adam)]["significant"] and pairs[(sgd, adam)]["p_holm"] < 0.05
    # sgd − adam: a larger loss, a smaller accuracy
    assert (pairs[(sgd, adam)]["diff"] > 0) is low
    # an optimizer comparison's arms keep "optimizer", equal to the label
    assert all(a["optimizer"] == a["label"] for a in rep["arms"])
    assert rep["partial"] is None and rep["notes"] == [] and rep["status"] == "succeeded"


def test_human_report_prints_the_table_and_the_better_pairs(tmp_path: Path) -> None:
    rep = run_comparison(tmp_path, compare_spec(ARMS, seeds=3, dataset="digits"))
    out = cli("report", rep["id"])
    assert "metric test_loss (lower is better)" in out
    for arm in rep["arms"]:
        assert arm["optimizer"] in out
    assert rep["better"]
    for a, b in rep["better"]:
        assert f"{a} > {b}" in out


# ---------------------------------------------------- failed and diverged runs
def test_an_arm_whose_runs_all_diverge_is_reported_and_left_out(tmp_path: Path) -> None:
    # Given an arm with a rate no network survives (every seed's loss blows up)
    rep = run_comparison(tmp_path, compare_spec(
        [{"name": "sgd", "lr": 1.0e6}, {"name": "adam", "lr": 0.05}], seeds=3))
    docs = child_docs(rep["id"])
    # Then the diverged runs are stored as diverged, not as crashes
    sgd_docs = [d for d in docs if d["arm"] == "sgd(lr=1000000.0)"]
    assert [d["status"] for d in sgd_docs] == ["diverged"] * 3
    # and the report lists them, averages nothing of them, and says so
    sgd, adam = rep["arms"]
    assert sgd["n"] == 0 and sgd["mean"] is None and sgd["ci95"] is None
    assert sgd["runs"] == [] and sgd["excluded"] == {"diverged": 3}
    assert adam["n"] == 3 and "excluded" not in adam
    assert rep["children"] == {"diverged": 3, "succeeded": 3}
    assert rep["notes"] == ["sgd(lr=1000000.0): statistics over 0 runs; excluded 3 diverged"]
    assert rep["better"] == []
    assert rep["pairs"][0]["n"] == 0
    check_statistics(rep, docs)
    out = cli("report", rep["id"])
    assert "note: sgd(lr=1000000.0): statistics over 0 runs; excluded 3 diverged" in out
    assert "diverged=3" in out
    status = cli_json("status", rep["id"])
    assert status["progress"]["children"]["diverged"] == 3
    assert "3 diverged" in status["error"]


def test_a_grid_whose_tuning_runs_all_diverge_is_reported(tmp_path: Path) -> None:
    # Given a grid arm of which no setting survives tuning, beside a sound arm
    rep = run_comparison(tmp_path, compare_spec(
        [{"name": "sgd", "lr": [1.0e6, 1.0e7]}, {"name": "adam", "lr": 0.05}], seeds=2))
    grid_arm, adam = rep["arms"]
    label = "sgd(lr=[1000000.0, 10000000.0])"
    # Then the grid arm has no chosen setting and no runs, and the report says why
    assert grid_arm["optimizer"] == label and grid_arm["n"] == 0 and grid_arm["runs"] == []
    assert grid_arm["tuning"]["chosen"] is None
    assert [(g["n"], g["val_loss"]) for g in grid_arm["tuning"]["grid"]] == [(0, None)] * 2
    assert rep["children"] == {"diverged": 2, "succeeded": 2}
    assert rep["notes"] == [f"{label}: tuning runs left out of the grid: 2 diverged",
                            f"{label}: no grid setting finished tuning; no final runs"]
    assert adam["n"] == 2
    check_statistics(rep, [d for d in child_docs(rep["id"]) if d["arm"] != label])
    # and its plots are still drawn
    png = tmp_path / "g.png"
    result = CliRunner().invoke(main, ["report", rep["id"], "--png", str(png)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for p in (png, tmp_path / "g-final.png", tmp_path / "g-grid.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_diverged_tuning_run_is_named_and_the_setting_chosen_from_the_rest(
        tmp_path: Path) -> None:
    # Given a grid tuned on 2 seeds, one tuning run of the good setting made to diverge
    prepared = submit.prepare(write_spec(tmp_path, compare_spec(
        [{"name": "sgd", "lr": [0.3, 0.0003]}, {"name": "adam", "lr": 0.05}], seeds=2,
        tune_seeds=2)))
    parent = submit.create(prepared)[0]
    with session_scope() as s:
        tune = {(json.loads(j.spec)["_grid"]["lr"], j.seed): j.id for j in s.execute(
            sa.select(Job).where(Job.parent_id == parent)).scalars()
            if json.loads(j.spec).get("_phase") == "tune"}
    _set_child_spec(tune[(0.3, 3)], lr=1.0e6)  # tuning seeds 2, 3
    run_all(parent)
    rep = report.build_report(parent)
    grid_arm = rep["arms"][0]
    # Then the setting is chosen on the run that finished, and the report says one did not
    grid = {g["setting"]["lr"]: g for g in grid_arm["tuning"]["grid"]}
    assert grid[0.3]["n"] == 1 and grid[0.0003]["n"] == 2
    survivor = cli_json("results", tune[(0.3, 2)])["final"]["val_loss"]
    assert grid[0.3]["val_loss"] == pytest.approx(survivor, rel=1e-9)
    assert grid_arm["tuning"]["chosen"] == {"lr": 0.3} and grid_arm["n"] == 2
    assert rep["notes"] == [f"{grid_arm['optimizer']}: tuning runs left out of the grid: "
                            "1 diverged"]


def _set_child_spec(child: str, **optimizer: Any) -> None:
    with session_scope() as s:
        job = s.get(Job, child)
        spec = json.loads(job.spec)
        spec["optimizer"].update(optimizer)
        job.spec = json.dumps(spec)


def test_one_diverged_child_is_left_out_and_the_rest_are_counted(tmp_path: Path) -> None:
    # Given a stored comparison of 2 arms × 3 seeds, nothing run yet
    prepared = submit.prepare(write_spec(tmp_path, compare_spec(
        [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.05}], seeds=3)))
    ids = submit.create(prepared)
    parent = ids[0]
    with session_scope() as s:
        kids = {(json.loads(j.spec)["_arm"], j.seed): j.id for j in s.execute(
            sa.select(Job).where(Job.parent_id == parent)).scalars()}
    # and one child (sgd, seed 1) whose rate is made huge, so that it alone diverges
    bad = kids[("sgd(lr=0.1)", 1)]
    _set_child_spec(bad, lr=1.0e6)
    # When every child runs
    run_all(parent)
    rep = report.build_report(parent)
    docs = child_docs(parent)
    # Then that child diverged in training, and only it
    assert {d["id"]: d["status"] for d in docs if d["status"] != "succeeded"} == {
        bad: "diverged"}
    # and the report computes sgd's statistics over the other two seeds, saying so
    sgd, adam = rep["arms"]
    assert sgd["n"] == 2 and bad not in sgd["runs"]
    assert sgd["excluded"] == {"diverged": 1}
    assert adam["n"] == 3
    assert rep["notes"] == ["sgd(lr=0.1): statistics over 2 runs; excluded 1 diverged"]
    good = [d["final"]["test_loss"] for d in docs
            if d["arm"] == "sgd(lr=0.1)" and d["status"] == "succeeded"]
    assert_close(sgd["mean"], statistics.fmean(good))
    # the paired difference uses only the seeds both arms finished
    assert rep["pairs"][0]["n"] == 2
    check_statistics(rep, docs)


def test_a_child_marked_failed_is_excluded_even_with_a_stored_result(tmp_path: Path) -> None:
    rep = run_comparison(tmp_path, compare_spec(
        [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.05}], seeds=3))
    victim = rep["arms"][1]["runs"][0]
    with session_scope() as s:
        s.execute(sa.update(Job).where(Job.id == victim).values(status=JobStatus.FAILED))
    after = report.build_report(rep["id"])
    adam = after["arms"][1]
    assert adam["n"] == 2 and victim not in adam["runs"]
    assert adam["excluded"] == {"failed": 1}
    assert after["notes"] == ["adam(lr=0.05): statistics over 2 runs; excluded 1 failed"]
    check_statistics(after, child_docs(rep["id"]))


# ----------------------------------------------------------------- partial
def test_report_is_partial_while_children_are_queued(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # one child at a time: no sibling is taken along as a batched replica
    monkeypatch.setenv("GRADQ_MAX_REPLICAS", "1")
    # Given a comparison stored but not run (no broker: prepare + create)
    prepared = submit.prepare(write_spec(tmp_path, compare_spec(
        [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.05}], seeds=3)))
    ids = submit.create(prepared)
    parent, children = ids[0], ids[1:]
    # Then its report can be read at once, marked partial, with nothing excluded
    rep = report.build_report(parent)
    assert rep["partial"] == "6 of 6 runs not finished"
    assert rep["status"] == "queued"
    assert rep["children"] == {"queued": 6}
    assert [a["n"] for a in rep["arms"]] == [0, 0]
    assert all("excluded" not in a for a in rep["arms"]) and rep["notes"] == []
    png = tmp_path / "partial.png"
    result = CliRunner().invoke(main, ["report", parent, "--png", str(png)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "partial: 6 of 6 runs not finished" in result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # plots of nothing yet, still drawn
    # When two children of the first arm have run
    for c in children[:2]:  # children are stored arm by arm: sgd's seeds 0 and 1
        execute(c, worker="test-local")
    rep = report.build_report(parent)
    assert rep["partial"] == "4 of 6 runs not finished"
    assert rep["children"] == {"queued": 4, "succeeded": 2}
    assert [a["n"] for a in rep["arms"]] == [2, 0]
    check_statistics(rep, child_docs(parent))
    # and when all have run, the mark is gone
    run_all(parent)
    rep = cli_json("report", parent)
    assert rep["partial"] is None and rep["status"] == "succeeded"
    assert [a["n"] for a in rep["arms"]] == [3, 3]


def test_partial_report_of_a_grid_still_tuning(tmp_path: Path) -> None:
    prepared = submit.prepare(write_spec(tmp_path, compare_spec(
        [{"name": "sgd", "lr": [0.3, 0.03]}, {"name": "adam", "lr": 0.05}], seeds=3,
        tune_seeds=2)))
    parent = submit.create(prepared)[0]
    rep = report.build_report(parent)
    # 2 settings × 2 tuning seeds + 3 adam runs; the grid's final runs are not planned yet
    assert rep["partial"] == "7 of 7 runs not finished"
    assert [(a["optimizer"], a["n"]) for a in rep["arms"]] == [
        ("sgd(lr=[0.3, 0.03])", 0), ("adam(lr=0.05)", 0)]
    assert "tuning" not in rep["arms"][0]


# ----------------------------------------------------------- target and AUC
def _trapezoid(steps: list[float], values: list[float]) -> float:
    return sum((values[i] + values[i + 1]) / 2 * (steps[i + 1] - steps[i])
               for i in range(len(steps) - 1))


@pytest.mark.parametrize("metric, target", [("test_loss", 0.7), ("test_accuracy", 0.8)])
def test_target_and_auc_follow_the_learning_curves(tmp_path: Path, metric: str,
                                                   target: float) -> None:
    # Given a comparison with a target value of its metric, logged every 3 steps (51 in all)
    spec = compare_spec(ARMS, seeds=3, metric=metric, target=target, dataset="digits")
    spec["training"]["log_every"] = 3
    rep = run_comparison(tmp_path, spec)
    low = metric.endswith("loss")
    for arm in rep["arms"]:
        steps_hit, times_hit, aucs = [], [], []
        for run in arm["runs"]:
            # When each run's curve of the metric is read back
            curve = cli_json("curves", run, "--metric", metric)["metrics"][metric]
            steps, values, times = curve["step"], curve["value"], curve["time_s"]
            final = cli_json("results", run)["final"]
            assert steps[0] == 0 and steps[-1] == final["steps"] and steps == sorted(steps)
            assert len(steps) > 10
            assert values[-1] == pytest.approx(final[metric], rel=1e-6)
            hit = [i for i, v in enumerate(values) if (v <= target if low else v >= target)]
            if hit:
                steps_hit.append(steps[hit[0]])
                times_hit.append(times[hit[0]])
            aucs.append(_trapezoid(steps, values) / steps[-1])
            assert min(values) - 1e-9 <= aucs[-1] <= max(values) + 1e-9
        # Then the first logged point on the good side of the target gives steps and time
        t = arm["target"]
        assert t["value"] == target and t["of"] == 3 and t["reached"] == len(steps_hit)
        if steps_hit:
            assert t["steps"] == pytest.approx(statistics.fmean(steps_hit))
            assert t["time_s"] == pytest.approx(statistics.fmean(times_hit))
        else:
            assert t["steps"] is None and t["time_s"] is None
        # and the AUC is the area under the curve over the steps run, per run, pooled
        auc = arm["auc"]
        assert auc["n"] == 3
        mean, std, _, ci = t_interval(aucs)
        assert auc["mean"] == pytest.approx(mean, rel=1e-9)
        assert auc["std"] == pytest.approx(std, rel=1e-7)
        assert auc["ci95"] == pytest.approx(ci, rel=1e-7)
    # the slow arm (sgd at a tiny rate) never gets there; adam does on every seed, sooner
    # than its last step, and with the better area
    sgd, _, adam = rep["arms"]
    assert sgd["target"]["reached"] == 0
    assert adam["target"]["reached"] == 3 and 0 < adam["target"]["steps"] < 51
    assert (adam["auc"]["mean"] < sgd["auc"]["mean"]) is low
