"""The report's statistics for many pairs and for searches, checked independently
(docs/results.md): Holm's adjustment, paired t-tests and t-intervals against scipy, the expected
best of k trials against a brute-force enumeration of every k-subset, the generalization
gap, the capacity figure's points, and a searched comparison's report built from a database
in which the children and the parent's progress are written as the compare contract says.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
import uuid
from pathlib import Path
from typing import Any

import matplotlib.figure
import numpy as np
import pytest
import sqlalchemy as sa
from _cli import cli, cli_json, write_spec
from gradq.service import submit
from gradq.service.experiments import plots, report
from gradq.service.status import JobStatus
from gradq.service.store.db import session_scope
from gradq.service.store.models import Job, Metric, Result
from scipy import stats


# ------------------------------------------------------------------- Holm
def test_holm_on_a_hand_worked_example() -> None:
    # m = 4: sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → kept at 0.06
    assert report.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1; a pair without a test stays without one and does not count in m
    assert report.holm([0.5, None, 0.9]) == [1.0, None, 1.0]
    assert report.holm([]) == []


@pytest.mark.parametrize("seed", range(20))
def test_holm_adjusted_p_rejects_exactly_what_the_step_down_procedure_rejects(
        seed: int) -> None:
    # Given random p-values (ties included), and Holm's procedure written out: test the
    # ordered p_(j) against α/(m − j + 1), rejecting until the first one that is not below
    rng = random.Random(seed)
    ps = [round(rng.random() ** 3, 3) for _ in range(rng.randint(1, 9))]
    adjusted = report.holm(ps)
    for alpha in [0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]:
        rejected = set()
        for j, i in enumerate(sorted(range(len(ps)), key=lambda i: ps[i]), start=1):
            if ps[i] > alpha / (len(ps) - j + 1):
                break
            rejected.add(i)
        # Then an adjusted p-value is at most α exactly for the rejected hypotheses
        assert {i for i, q in enumerate(adjusted) if q <= alpha + 1e-12} == rejected
    assert all(p <= q <= 1.0 for p, q in zip(ps, adjusted, strict=True))
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    assert [adjusted[i] for i in order] == sorted(adjusted)  # monotone in p


# --------------------------------------------------------- paired t-test
@pytest.mark.parametrize("seed", range(5))
def test_paired_difference_interval_and_p_match_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.5, 0.1, size=6)
    b = a + rng.normal(0.03, 0.05, size=6)
    doc = report.paired(list(a), list(b))
    d = a - b
    lo, hi = stats.t.interval(0.95, 5, loc=d.mean(), scale=stats.sem(d))
    assert doc["n"] == 6
    assert doc["diff"] == pytest.approx(d.mean(), rel=1e-12)
    assert doc["ci95"] == pytest.approx([lo, hi], rel=1e-9)
    assert doc["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)


def test_paired_without_two_seeds_has_no_test_and_without_spread_a_degenerate_one() -> None:
    assert report.paired([1.0], [2.0]) == {"n": 1, "diff": -1.0, "ci95": None, "p": None}
    assert report.paired([1.0, 2.0], [1.0, 2.0])["p"] == 1.0
    assert report.paired([2.0, 3.0], [1.0, 2.0])["p"] == 0.0


# ------------------------------------------------------------ expected best
def brute_force_expected_best(values: list[float | None], k: int, low: bool) -> float | None:
    """The mean over every k-subset of the best value in it (None if a subset has only
    failures: its best is a failure, which has no value)."""
    bests = []
    for subset in itertools.combinations(values, k):
        done = [v for v in subset if v is not None]
        if not done:
            return None
        bests.append(min(done) if low else max(done))
    return statistics.fmean(bests)


@pytest.mark.parametrize("low", [True, False])
@pytest.mark.parametrize("seed", range(12))
def test_expected_best_equals_the_mean_best_over_every_k_subset(seed: int, low: bool) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 8)
    values: list[float | None] = [round(rng.uniform(0, 1), 2) for _ in range(n)]  # ties too
    for i in rng.sample(range(n), rng.randint(0, min(2, n - 1))):
        values[i] = None  # failed trials
    got = report.expected_best(values, low)
    assert len(got) == n
    for k in range(1, n + 1):
        want = brute_force_expected_best(values, k, low)
        if want is None:
            assert got[k - 1] is None
        else:
            assert got[k - 1] == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_expected_best_of_one_trial_is_the_mean_and_of_all_the_best() -> None:
    values = [0.31, 0.12, 0.55, 0.2]
    assert report.expected_best(values, True)[0] == pytest.approx(statistics.fmean(values))
    assert report.expected_best(values, True)[-1] == 0.12
    assert report.expected_best(values, False)[-1] == 0.55
    # k = 2 by hand, lower is better: the 6 pairs' minima are .12 .31 .2 .12 .12 .2
    assert report.expected_best(values, True)[1] == pytest.approx(
        (0.12 + 0.31 + 0.2 + 0.12 + 0.12 + 0.2) / 6)
    # one failure of 3: a single draw may be the failure (no value); two never both are
    assert report.expected_best([0.3, None, 0.1], True) == [
        None, pytest.approx((0.3 + 0.1 + 0.1) / 3), 0.1]


def big_integer_expected_best(values: list[float | None], low: bool) -> list[float | None]:
    """The exact sums with big-integer binomials (the implementation before issue 19,
    kept as the oracle of the log-space one: 0.6 s at 600 trials, 7 s at 1,200)."""
    n = len(values)
    done = [v for v in values if v is not None]
    f = n - len(done)
    ranked = sorted(done, reverse=low)
    out: list[float | None] = []
    for k in range(1, n + 1):
        if k <= f:
            out.append(None)
            continue
        total = math.comb(n, k)
        out.append(float(sum(v * (math.comb(f + j - 1, k - 1) / total)
                             for j, v in enumerate(ranked, start=1))))
    return out


@pytest.mark.parametrize("n,failed", [(1, 0), (2, 1), (9, 3), (40, 0), (41, 5), (257, 7),
                                      (400, 0)])
def test_expected_best_in_log_space_equals_the_big_integer_sums(n: int, failed: int) -> None:
    rng = random.Random(n)
    values: list[float | None] = [rng.lognormvariate(0, 2) for _ in range(n)]
    for i in rng.sample(range(n), failed):
        values[i] = None
    for low in (True, False):
        got, want = report.expected_best(values, low), big_integer_expected_best(values, low)
        assert [g is None for g in got] == [w is None for w in want]
        assert [g for g in got if g is not None] == pytest.approx(
            [w for w in want if w is not None], rel=1e-10)



def test_expected_best_at_the_largest_search_equals_the_big_integer_sums() -> None:
    # 10,000 trials, the spec's largest search, 13 of them failed: at the k where the
    # log-space sums read every position (k ≤ 40), where they read a window (k = 400) and
    # at the end, each value equals the exact sum with big-integer binomials
    n = 10_000
    rng = random.Random(7)
    values: list[float | None] = [rng.lognormvariate(0, 2) for _ in range(n)]
    for i in rng.sample(range(n), 13):
        values[i] = None
    done = [v for v in values if v is not None]
    for low in (True, False):
        got = report.expected_best(values, low)
        assert got[12] is None and got[13] is not None
        ranked = sorted(done, reverse=low)
        for k in (14, 41, 400, 9_999):
            total = math.comb(n, k)
            want = float(sum(v * (math.comb(13 + j - 1, k - 1) / total)
                             for j, v in enumerate(ranked, start=1)))
            assert got[k - 1] == pytest.approx(want, rel=1e-10), k


# ------------------------------------------------------------------ capacity
def test_capacity_axis_is_the_one_numeric_key_the_arms_vary() -> None:
    order = ["a", "b", "c"]
    widths = {"a": {"model.hidden": [4]}, "b": {"model.hidden": [32]},
              "c": {"model.hidden": [256]}}
    assert report._capacity(order, widths) == {
        "key": "model.hidden", "labels": order, "x": [4.0, 32.0, 256.0]}
    # a list of several numbers counts its sum (all the hidden units)
    deep = {"a": {"model.hidden": [4, 4]}, "b": {"model.hidden": [16, 16]}}
    assert report._capacity(["a", "b"], deep) == {
        "key": "model.hidden", "labels": ["a", "b"], "x": [8.0, 32.0], "sum": True}
    # a key the arms share is no axis; two varying keys, a non-number or a bool are none
    same = {k: {**v, "regularization.l2": 0.01} for k, v in widths.items()}
    assert report._capacity(order, same)["key"] == "model.hidden"
    two = {"a": {"model.hidden": [4], "training.batch_size": 8},
           "b": {"model.hidden": [8], "training.batch_size": 16}}
    assert report._capacity(["a", "b"], two) is None
    assert report._capacity(["a", "b"], {"a": {"model.activation": "relu"},
                                         "b": {"model.activation": "tanh"}}) is None
    assert report._capacity(["a", "b"], {"a": {"model.batch_norm": True},
                                         "b": {"model.batch_norm": False}}) is None
    # an arm without the key (the base spec's value, unknown here) gives no axis
    assert report._capacity(["a", "b"], {"a": {}, "b": {"regularization.l2": 0.1}}) is None


# ------------------------------------------- a searched comparison, by contract
WIDTHS = {"narrow": 4, "mid": 32, "wide": 256}
EVAL_SEEDS = [0, 1, 2, 3]
TUNE_SEEDS = [1000]


def _store_parent(tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """A stored comparison (through the service, nothing run), its own children removed:
    (parent id, a child's spec to copy)."""
    spec = {"kind": "compare", "seed": 0, "data": {"dataset": "iris"},
            "model": {"hidden": [16]}, "training": {"epochs": 2, "batch_size": 16},
            "compare": {"optimizers": ["sgd", "adam"], "seeds": 1, "metric": "test_loss"}}
    parent = submit.create(submit.prepare(write_spec(tmp_path, spec)))[0]
    with session_scope() as s:
        kids = s.execute(sa.select(Job).where(Job.parent_id == parent)).scalars().all()
        base = json.loads(kids[0].spec)
        for k in kids:
            s.delete(k)
        job = s.get(Job, parent)
        pspec = json.loads(job.spec)
        pspec["compare"]["arms"] = [{"label": label, "model.hidden": {"choice": [w]}}
                                    for label, w in WIDTHS.items()]
        pspec["compare"]["optimizers"] = None
        job.spec = json.dumps(pspec)
    return parent, base


def _child(parent: str, base: dict[str, Any], label: str, seed: int, *, phase: str | None,
           status: str = "succeeded", final: dict[str, float] | None = None,
           stacked: int | None = None, trial: int | None = None,
           curve: list[float] | None = None) -> str:
    """One child row as the compare contract describes it, with its result and curve."""
    spec = json.loads(json.dumps(base))
    spec.update({"_arm": label, "_arm_index": list(WIDTHS).index(label),
                 "_arm_overrides": {"model.hidden": [WIDTHS[label]]}, "seed": seed})
    spec["model"]["hidden"] = [WIDTHS[label]]
    for key, value in (("_phase", phase), ("_trial", trial)):
        if value is not None:
            spec[key] = value
        else:
            spec.pop(key, None)
    jid = uuid.uuid4().hex
    with session_scope() as s:
        s.add(Job(id=jid, kind="train", parent_id=parent, spec=json.dumps(spec), seed=seed,
                  optimizer=json.dumps(spec["optimizer"]), status=JobStatus(status)))
        s.flush()
        if final is not None:
            timing = {"queued_s": 0.0, "run_s": 0.1, "samples_per_s": 1.0}
            if stacked is not None:
                timing["stacked"] = stacked
            s.add(Result(job_id=jid, final=json.dumps(final), timing=json.dumps(timing),
                         params=10, extra="{}"))
        for step, value in enumerate(curve or []):
            s.add(Metric(job_id=jid, name="test_loss", step=step * 10, epoch=float(step),
                         time_s=0.01 * step, value=value))
    return jid


def _searched_comparison(tmp_path: Path) -> dict[str, Any]:
    """Three width arms × 4 evaluation seeds, each after a 5-trial search on a tuning seed,
    with one pruned and one failed trial, beside tuning runs and trials whose values would
    wreck every statistic if they were pooled."""
    parent, base = _store_parent(tmp_path)
    rng = np.random.default_rng(7)
    # test loss: U-shaped in width; train loss falls with width
    centre = {"narrow": (0.9, 0.85), "mid": (0.45, 0.3), "wide": (0.6, 0.05)}
    finals: dict[str, list[str]] = {}
    for label in WIDTHS:
        for t in range(5):
            _child(parent, base, label, TUNE_SEEDS[0], phase="search", trial=t,
                   status="failed" if t == 4 else "succeeded",
                   final=None if t == 4 else {"test_loss": 50.0, "train_loss": 0.0,
                                              "val_loss": 50.0},
                   curve=[90.0, 80.0, 70.0])
        _child(parent, base, label, TUNE_SEEDS[0], phase="tune",
               final={"test_loss": 60.0, "train_loss": 0.0}, curve=[99.0, 99.0, 99.0])
        for i, seed in enumerate(EVAL_SEEDS):
            test, train = centre[label]
            t_val = float(test + rng.normal(0, 0.04))
            finals.setdefault(label, []).append(_child(
                parent, base, label, seed, phase="final",
                final={"test_loss": t_val, "train_loss": float(train + rng.normal(0, 0.02)),
                       "val_loss": t_val},
                stacked=1 if label == "wide" else (3 if i < 3 else 1),
                curve=[1.5, 1.0, t_val]))
    search = {label: {"space": {"optimizer.lr": {"loguniform": [1e-4, 1.0]}},
                      "method": "random", "trials": 5, "pruned": 1,
                      "chosen": {"optimizer.lr": 0.01 * (n + 1)},
                      "budget": {"epochs": 11, "samples": 1650, "run_s": 0.7 + n},
                      "values": [0.5 - 0.1 * n, 0.4, None, 0.7, 0.35 + 0.05 * n],
                      "epochs": [3, 3, 1, 1, 3]}
              for n, label in enumerate(WIDTHS)}
    progress = {"children": {}, "search": search,
                "seeds": {"tune": TUNE_SEEDS, "eval": EVAL_SEEDS},
                "shapes": {label: f"4-{w}-3" for label, w in WIDTHS.items()}}
    with session_scope() as s:
        job = s.get(Job, parent)
        job.progress = json.dumps(progress)
        job.status = JobStatus.SUCCEEDED
    return {"id": parent, "finals": finals, "search": search}


def _stored_finals(parent: str) -> dict[str, dict[int, dict[str, float]]]:
    """arm → seed → final, read back with ``gradq ls --parent`` and ``gradq results``, of
    the runs the contract says enter the statistics (no _phase, or final)."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for row in cli_json("ls", "--parent", parent, "--limit", "1000"):
        with session_scope() as s:
            phase = json.loads(s.get(Job, row["id"]).spec).get("_phase")
        doc = cli_json("results", row["id"])
        if phase in (None, "final") and doc["status"] == "succeeded":
            out.setdefault(doc["arm"], {})[doc["seed"]] = doc["final"]
    return out


def test_searched_comparison_report_follows_the_contract(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    made = _searched_comparison(tmp_path)
    with monkeypatch.context() as m:  # NumPy 1.x has no np.trapezoid: the AUC must not need it
        m.delattr(np, "trapezoid", raising=False)
        rep = report.build_report(made["id"])
    stored = _stored_finals(made["id"])
    labels = list(WIDTHS)
    # arms in spec order, labelled, no "optimizer" (this is not an optimizer comparison)
    assert [a["label"] for a in rep["arms"]] == labels
    assert all("optimizer" not in a for a in rep["arms"])
    assert rep["seeds"] == {"tune": TUNE_SEEDS, "eval": EVAL_SEEDS}
    assert rep["shapes"] == {"narrow": "4-4-3", "mid": "4-32-3", "wide": "4-256-3"}
    assert any("differ in shape" in n for n in rep["notes"])
    for a in rep["arms"]:
        # only the evaluation runs are pooled: no search trial, no tuning run
        assert sorted(a["runs"]) == sorted(made["finals"][a["label"]])
        values = [f["test_loss"] for f in stored[a["label"]].values()]
        gaps = [f["test_loss"] - f["train_loss"] for f in stored[a["label"]].values()]
        assert a["n"] == 4 and max(values) < 2  # a trial's 50.0 would show
        assert a["mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)
        lo, hi = stats.t.interval(0.95, 3, loc=statistics.fmean(values),
                                  scale=statistics.stdev(values) / 2)
        assert a["ci95"] == pytest.approx([lo, hi], rel=1e-9)
        # the gap: test − train per run, with its t-interval
        glo, ghi = stats.t.interval(0.95, 3, loc=statistics.fmean(gaps),
                                    scale=statistics.stdev(gaps) / 2)
        assert a["gap"]["mean"] == pytest.approx(statistics.fmean(gaps), rel=1e-12)
        assert a["gap"]["ci95"] == pytest.approx([glo, ghi], rel=1e-9)
        # the search, as progress has it, with the expected best computed from its values
        sr, want = a["search"], made["search"][a["label"]]
        for key in ("space", "method", "trials", "pruned", "chosen", "budget"):
            assert sr[key] == want[key]
        assert sr["failed"] == 1
        assert len(sr["expected_best"]) == want["trials"]
        # the AUC of the pooled curves only
        assert a["auc"]["n"] == 4 and a["auc"]["mean"] < 2
    assert rep["arms"][0]["stacked"] == {"stacked": 3, "alone": 1}
    assert rep["arms"][2]["stacked"] == {"stacked": 0, "alone": 4}
    assert rep["children"] == {"succeeded": 3 * (4 + 4 + 1), "failed": 3}
    assert any("1 of 5 search trials failed" in n for n in rep["notes"])
    # pairs: paired t-test and Holm over the 3 pairs, from the stored results
    ps = {}
    for p in rep["pairs"]:
        xa = [stored[p["a"]][s]["test_loss"] for s in EVAL_SEEDS]
        xb = [stored[p["b"]][s]["test_loss"] for s in EVAL_SEEDS]
        ps[(p["a"], p["b"])] = float(stats.ttest_rel(xa, xb).pvalue)
        assert p["n"] == 4
        assert p["diff"] == pytest.approx(statistics.fmean(xa) - statistics.fmean(xb))
        assert p["p"] == pytest.approx(ps[(p["a"], p["b"])], rel=1e-9)
    assert [(p["a"], p["b"]) for p in rep["pairs"]] == [
        ("narrow", "mid"), ("narrow", "wide"), ("mid", "wide")]
    ranked = sorted(ps, key=ps.get)
    holm = {k: min(1.0, max((3 - j) * ps[ranked[j]] for j in range(i + 1)))
            for i, k in enumerate(ranked)}
    for p in rep["pairs"]:
        assert p["p_holm"] == pytest.approx(holm[(p["a"], p["b"])], rel=1e-9)
        assert p["significant"] is (holm[(p["a"], p["b"])] < 0.05)
    # the capacity axis: the one key the arms vary
    assert rep["capacity"] == {"key": "model.hidden", "labels": labels,
                               "x": [4.0, 32.0, 256.0]}
    # and the learning curves pool the evaluation runs only
    curves = report.mean_curves(made["id"], "test_loss")
    for label in labels:
        steps, mean, _ = curves[label]
        last = [stored[label][s]["test_loss"] for s in EVAL_SEEDS]
        assert list(steps) == [0, 10, 20]
        assert mean == pytest.approx([1.5, 1.0, statistics.fmean(last)])


def test_expected_best_of_the_report_matches_brute_force(tmp_path: Path) -> None:
    made = _searched_comparison(tmp_path)
    rep = report.build_report(made["id"])
    for a in rep["arms"]:
        values = made["search"][a["label"]]["values"]
        want = [brute_force_expected_best(values, k, True) for k in range(1, 6)]
        assert want[0] is None and a["search"]["expected_best"][0] is None
        assert a["search"]["expected_best"][1:] == pytest.approx(want[1:], rel=1e-12)
        assert a["search"]["expected_best"][-1] == min(v for v in values if v is not None)


def test_capacity_plot_draws_the_reports_numbers(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    made = _searched_comparison(tmp_path)
    rep = report.build_report(made["id"])
    stored = _stored_finals(made["id"])
    # the points: the report's numbers, sorted by the key
    pts = plots.capacity_points(rep)
    assert pts is not None and pts["key"] == "model.hidden"
    assert pts["x"] == [4.0, 32.0, 256.0] and pts["label"] == list(WIDTHS)
    for i, a in enumerate(rep["arms"]):
        assert pts["test"][i] == a["mean"] and pts["test_ci95"][i] == a["ci95"]
        assert pts["train"][i] == a["train"]["mean"]
        assert pts["train_ci95"][i] == a["train"]["ci95"]
        train = [f["train_loss"] for f in stored[a["label"]].values()]
        assert a["train"]["mean"] == pytest.approx(statistics.fmean(train), rel=1e-12)
    # and the figure draws exactly those points, on a log axis (4 … 256 spans > a decade)
    drawn: dict[str, Any] = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def capture(fig: matplotlib.figure.Figure, path: Any, **kw: Any) -> None:
        drawn[Path(path).name] = fig.axes[0]
        real_savefig(fig, path, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", capture)
    out = tmp_path / "r.png"
    written = plots.plot_report(rep, out)
    assert [p.name for p in written] == ["r.png", "r-final.png", "r-search.png",
                                         "r-capacity.png"]
    ax = drawn["r-capacity.png"]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "model.hidden"
    test_line, train_line = ax.get_lines()
    assert list(test_line.get_xdata()) == pts["x"]
    assert list(test_line.get_ydata()) == pts["test"]
    assert list(train_line.get_ydata()) == pts["train"]
    bands = [c.get_paths()[0].vertices for c in ax.collections]
    assert len(bands) == 2
    for band, cis in zip(bands, (pts["test_ci95"], pts["train_ci95"]), strict=True):
        assert min(band[:, 1]) == pytest.approx(min(c[0] for c in cis))
        assert max(band[:, 1]) == pytest.approx(max(c[1] for c in cis))
    search_ax = drawn["r-search.png"]
    for line, a in zip(search_ax.get_lines(), rep["arms"], strict=True):
        assert list(line.get_xdata()) == [2, 3, 4, 5]  # k = 1 may be the failed trial
        assert list(line.get_ydata()) == a["search"]["expected_best"][1:]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_terminal_report_of_a_search_names_space_trials_choice_budget_and_holm(
        tmp_path: Path) -> None:
    made = _searched_comparison(tmp_path)
    rep = report.build_report(made["id"])
    out = cli("report", made["id"])
    assert "seeds: tune [1000], eval [0, 1, 2, 3]" in out
    assert "GAP ± 95%" in out and "STACKED" in out
    assert "search narrow: random over optimizer.lr ~ loguniform[0.0001, 1.0]; 5 trials, " \
           "1 pruned, 1 failed; chose optimizer.lr=0.01; budget 11 epochs, 1650 samples, " \
           "0.7 s" in out
    assert "expected best validation metric of k trials: k=1 -, k=2" in out
    assert "Holm-adjusted over 3 pairs" in out
    for p in rep["pairs"]:
        row = next(line for line in out.splitlines()
                   if line.startswith(f"{p['a']} ") and f" {p['b']} " in line)
        assert row.rstrip().endswith("*") is p["significant"]
    assert any(p["significant"] for p in rep["pairs"])  # the U shape is far from noise
    narrow = next(line for line in out.splitlines() if line.startswith("narrow "))
    a = rep["arms"][0]
    half = (a["ci95"][1] - a["ci95"][0]) / 2
    assert f"{a['mean']:.4f}".rstrip("0") in narrow and f"{half:.4f}".rstrip("0") in narrow


def test_no_capacity_figure_when_the_arms_vary_no_numeric_key(tmp_path: Path) -> None:
    spec = {"kind": "compare", "seed": 0, "data": {"dataset": "iris"},
            "model": {"hidden": [8]}, "training": {"epochs": 2, "batch_size": 16},
            "compare": {"optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "adam",
                                                                   "lr": 0.01}],
                        "seeds": 2}}
    rep = cli_json("run", str(write_spec(tmp_path, spec)))
    assert "capacity" not in rep and plots.capacity_points(rep) is None
    assert [a["label"] for a in rep["arms"]] == ["sgd(lr=0.1)", "adam(lr=0.01)"]
    assert "search" not in rep["arms"][0] and "seeds" not in rep
    # the gap is there for an optimizer comparison too: test − train of each run
    docs = [cli_json("results", r) for r in rep["arms"][0]["runs"]]
    gaps = [d["final"]["test_loss"] - d["final"]["train_loss"] for d in docs]
    assert rep["arms"][0]["gap"]["mean"] == pytest.approx(statistics.fmean(gaps), rel=1e-12)
    assert math.isfinite(rep["pairs"][0]["p"])


def test_a_long_pairs_table_shows_the_pairs_below_005_and_says_how_many_it_hides() -> None:
    from gradq.service.present import pair_lines

    # Given 7 arms: 21 pairs, of which every third has p < 0.05
    labels = [f"arm{i}" for i in range(7)]
    pairs = [{"a": a, "b": b, "n": 5, "diff": 0.1, "ci95": [0.0, 0.2],
              "p": 0.01 if k % 3 == 0 else 0.5, "p_holm": None, "significant": False}
             for k, (a, b) in enumerate(itertools.combinations(labels, 2))]
    for p, q in zip(pairs, report.holm([p["p"] for p in pairs]), strict=True):
        p["p_holm"], p["significant"] = q, q < 0.05
    out = "\n".join(pair_lines({"pairs": pairs}))
    shown = [p for p in pairs if p["p"] < 0.05]
    assert "Holm-adjusted over 21 pairs" in out
    assert f"({len(pairs) - len(shown)} pairs with p ≥ 0.05 not shown" in out
    rows = [line for line in out.splitlines() if line.startswith("arm")]
    assert [tuple(r.split()[:2]) for r in rows] == [(p["a"], p["b"]) for p in shown]


def test_the_example_specs_validate_and_the_capacity_one_varies_one_numeric_key() -> None:
    root = Path(__file__).resolve().parent.parent / "examples"
    reg = submit.prepare(root / "regularizers.yaml").job.children
    assert {c.spec["_arm"] for c in reg} == {"none", "l2", "l1", "dropout", "early stopping",
                                            "bagging"}
    cap = submit.prepare(root / "capacity.yaml").job.children
    order = list(dict.fromkeys(c.spec["_arm"] for c in cap))
    overrides = {c.spec["_arm"]: c.spec["_arm_overrides"] for c in cap}
    axis = report._capacity(order, overrides)
    assert axis is not None and axis["key"] == "model.hidden"
    assert axis["x"] == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 29, 99, 999])
def test_the_t_distribution_is_scipy_stats_own_to_the_last_bit(df: int) -> None:
    # the report takes it from scipy.special (scipy.stats costs ~1 s to import): the same
    # functions scipy.stats.t calls, so every interval and p-value is the same number
    assert report._t_ppf(0.975, df) == stats.t.ppf(0.975, df)
    for x in (0.0, 0.3, 1.7, 2.5, 8.0, 40.0):
        assert report._t_sf(x, df) == stats.t.sf(x, df)
