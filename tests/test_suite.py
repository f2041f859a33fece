"""Suites (docs/suites.md): the measures on hand-worked examples and against brute force, the
report against an independent recomputation from the SQLite file, the lifecycle of a suite
(a failed workload, cancel, retry, rm), and bad input refused with one line.

Tiny workloads (iris and moons, a few epochs) keep each test to seconds.
"""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
import statistics
from pathlib import Path
from typing import Any

import pytest
from _cli import cli_json, invoke, run_all, write_spec
from gradq.service.experiments.suite_report import (
    median,
    profiles,
    ratios,
    samples_at,
    win_probability,
)
from gradq.service.present import fmt as _fmt
from scipy import stats

INF = math.inf


# ------------------------------------------------------------ measures by hand
def test_profiles_and_score_on_a_hand_worked_example() -> None:
    # Given three workloads and two arms, with times to target (steps):
    #   w1: a 100, b 200 -> r = 1, 2
    #   w2: a 300, b 100 -> r = 3, 1
    #   w3: a never, b 50 -> r = inf, 1
    times = {"w1": {"a": 100, "b": 200}, "w2": {"a": 300, "b": 100}, "w3": {"a": INF, "b": 50}}
    r = {w: ratios(t) for w, t in times.items()}
    assert r == {"w1": {"a": 1.0, "b": 2.0}, "w2": {"a": 3.0, "b": 1.0},
                 "w3": {"a": INF, "b": 1.0}}
    taus, rho, score = profiles(r, r_max=4.0)
    assert taus[0] == 1.0 and taus[-1] == 4.0 and len(taus) == 61
    at = {t: i for i, t in enumerate(taus)}
    # rho_a(1) = 1/3 (w1), rho_a(3) = 2/3 (w1, w2); rho_b(1) = 2/3, rho_b(2) = 1
    assert rho["a"][at[1.0]] == pytest.approx(1 / 3)
    assert rho["a"][at[2.95]] == pytest.approx(1 / 3)
    assert rho["a"][at[3.0]] == pytest.approx(2 / 3)
    assert rho["b"][at[1.0]] == pytest.approx(2 / 3)
    assert rho["b"][at[2.0]] == pytest.approx(1.0)
    # the integral over [1, 4] / 3: a: (3 + 1 + 0) / 3 / 3; b: (2 + 3 + 3) / 3 / 3
    assert score["a"] == pytest.approx(4 / 9)
    assert score["b"] == pytest.approx(8 / 9)


def test_ratios_when_the_target_is_met_before_training() -> None:
    assert ratios({"a": 0, "b": 10, "c": INF}) == {"a": 1.0, "b": INF, "c": INF}
    assert ratios({"a": INF, "b": INF}) == {"a": INF, "b": INF}


def test_median_counts_never_as_infinite() -> None:
    assert median([10, None, 30]) == 30
    assert median([10, None, None]) == INF
    assert median([10, 20, 30, None]) == 25
    assert median([10, 20, None, None]) == INF


def test_samples_count_each_epochs_last_batch_at_its_size() -> None:
    # 100 rows in batches of 32: 4 steps per epoch (32, 32, 32, 4)
    assert samples_at(4, 32, 100) == 100
    assert samples_at(6, 32, 100) == 164
    assert samples_at(3, "full", 100) == 300
    assert samples_at(5, 500, 100) == 500


def _brute_force_win(values: dict[str, list[float | None]], k: int, low: bool
                     ) -> dict[str, float]:
    """Enumerate every draw of k trials per arm (without replacement); a tie at the top
    splits the win; an arm whose draw is all failures never wins."""
    def key(v: float | None) -> float:
        return -INF if v is None else (-v if low else v)

    arms = list(values)
    draws = [list(itertools.combinations(values[a], min(k, len(values[a])))) for a in arms]
    wins = dict.fromkeys(arms, 0.0)
    total = 0
    for combo in itertools.product(*draws):
        total += 1
        best = [max(key(v) for v in d) for d in combo]
        top = max(best)
        if top == -INF:
            continue
        tied = [a for a, b in zip(arms, best, strict=True) if b == top]
        for a in tied:
            wins[a] += 1 / len(tied)
    return {a: w / total for a, w in wins.items()}


@pytest.mark.parametrize("seed", range(6))
def test_win_probability_against_brute_force(seed: int) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    values: dict[str, list[float | None]] = {}
    for arm in ("a", "b", "c"):
        n = int(rng.integers(1, 6))
        # values on a coarse grid so that ties happen; a failed trial now and then
        values[arm] = [None if rng.random() < 0.15 else float(rng.integers(0, 6)) / 4
                       for _ in range(n)]
    low = bool(seed % 2)
    for k in range(1, 6):
        got = win_probability(values, k, low)
        want = _brute_force_win(values, k, low)
        for arm in values:
            assert got[arm] == pytest.approx(want[arm], abs=1e-12), (arm, k, values)


# ------------------------------------------------------------------- end to end
def _suite(tmp_path: Path, **over: Any) -> Path:
    doc: dict[str, Any] = {
        "kind": "suite", "name": "tiny", "seed": 0,
        "suite": {
            "workloads": [
                {"name": "iris-lin", "metric": "val_loss", "target": 0.6,
                 "spec": {"data": {"dataset": "iris"}, "model": {"hidden": []},
                          "training": {"epochs": 4, "batch_size": 16}}},
                {"name": "moons-auto", "metric": "val_accuracy", "target": "auto",
                 "reference": ["adam"],
                 "spec": {"data": {"dataset": "moons"}, "model": {"hidden": [4]},
                          "training": {"epochs": 3, "batch_size": 64}}},
            ],
            "optimizers": [{"name": "sgd", "lr": {"loguniform": [0.01, 1.0]}},
                           {"name": "adam", "lr": {"loguniform": [0.001, 0.1]}}],
            "search": {"method": "random", "trials": 3},
            "seeds": 3, "budget": "samples", "r_max": 3},
    }
    for k, v in over.items():
        doc["suite"][k] = v
    return write_spec(tmp_path, doc, "suite.json")


def _db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "gradq.db")


def _recompute(home: Path, suite_id: str) -> dict[str, Any]:
    """The suite's measures from the SQLite file, by code that shares nothing with gradq's
    report: SQL rows in, the definitions of docs/suites.md applied by hand."""
    db = _db(home)
    suite_spec = json.loads(db.execute("SELECT spec FROM jobs WHERE id = ?",
                                       (suite_id,)).fetchone()[0])
    cfg = suite_spec["suite"]
    comps = db.execute("SELECT id, spec, status, progress FROM jobs WHERE parent_id = ?",
                       (suite_id,)).fetchall()
    out: dict[str, Any] = {"workloads": {}, "times": {}}
    win_tables = []
    for w in cfg["_workloads"]:
        name, metric = w["name"], w["metric"]
        low = metric.endswith("loss")
        role = {json.loads(s)["_suite_role"]: (cid, json.loads(s), st, json.loads(p))
                for cid, s, st, p in comps if json.loads(s)["_workload"] == name}
        target = w["target"]
        if target is None:  # auto: the reference's best arm's median final metric
            finals: dict[str, list[float]] = {}
            for spec_text, final in db.execute(
                    "SELECT j.spec, r.final FROM jobs j JOIN results r ON r.job_id = j.id "
                    "WHERE j.parent_id = ? AND j.status = 'succeeded'",
                    (role["reference"][0],)):
                s = json.loads(spec_text)
                if s.get("_phase") in (None, "final"):
                    finals.setdefault(s["_arm"], []).append(json.loads(final)[metric])
            pick = min if low else max
            best = pick(finals, key=lambda a: sum(finals[a]) / len(finals[a]))
            target = statistics.median(finals[best])
        cid, cspec, _, cprog = role["workload"]
        arms: dict[str, Any] = {}
        for rid, spec_text, _status in db.execute(
                "SELECT id, spec, status FROM jobs WHERE parent_id = ?", (cid,)):
            s = json.loads(spec_text)
            if s.get("_phase") not in (None, "final"):
                continue
            a = arms.setdefault(s["_arm"], {"samples": [], "finals": []})
            pts = db.execute("SELECT step, value FROM metrics WHERE job_id = ? AND name = ? "
                             "ORDER BY step", (rid, metric)).fetchall()
            hit = next((st for st, v in pts if v is not None
                        and (v <= target if low else v >= target)), None)
            if hit is None:
                a["samples"].append(INF)
            else:  # samples: whole epochs of n rows, then the batches of this one
                n = cspec["_n_train"]
                b = min(s["training"]["batch_size"], n)
                per = -(-n // b)
                a["samples"].append((hit // per) * n + (hit % per) * b)
            final = db.execute("SELECT final FROM results WHERE job_id = ?", (rid,)).fetchone()
            a["finals"].append(json.loads(final[0])[metric])
        times = {}
        for label, a in arms.items():
            x = sorted(a["samples"])
            m = len(x) // 2
            times[label] = x[m] if len(x) % 2 else (x[m - 1] + x[m]) / 2
            f = a["finals"]
            mean = sum(f) / len(f)
            half = stats.t.ppf(0.975, len(f) - 1) * statistics.stdev(f) / math.sqrt(len(f))
            a["ci95"] = [mean - half, mean + half]
        out["times"][name] = times
        out["workloads"][name] = {"target": target, "arms": arms}
        win_tables.append(({a: cprog["search"][a]["values"] for a in arms}, low))
    # profiles and score: r = t / best; score = mean of (r_max - r) / (r_max - 1), r <= r_max
    r_max = cfg["r_max"]
    scores: dict[str, float] = {}
    for times in out["times"].values():
        best = min(t for t in times.values())
        for a, t in times.items():
            r = t / best if math.isfinite(t) else INF
            gain = (r_max - r) / (r_max - 1) if r <= r_max else 0.0
            scores[a] = scores.get(a, 0.0) + gain / len(out["times"])
    out["score"] = scores
    # trials are judged on the validation counterpart: a loss for a loss, else accuracy
    out["win"] = {k: {a: sum(_brute_force_win(t, k, low)[a] for t, low in win_tables)
                      / len(win_tables) for a in win_tables[0][0]} for k in (1, 2, 3)}
    return out


def test_report_equals_a_recomputation_from_the_stored_children(
        tmp_path: Path, gradq_home: Path) -> None:
    # Given a suite of two tiny workloads (one with target: auto), run in process
    code, out, err = invoke("run", _suite(tmp_path), "--json")
    assert code == 0, err
    rep = json.loads(out)
    # Then its report is the one `gradq report` prints, and it matches the recomputation
    assert cli_json("report", rep["id"]) == rep
    want = _recompute(gradq_home, rep["id"])
    assert rep["kind"] == "suite" and rep["budget"] == "samples" and rep["r_max"] == 3
    assert [w["name"] for w in rep["workloads"]] == ["iris-lin", "moons-auto"]
    for w in rep["workloads"]:
        mine = want["workloads"][w["name"]]
        assert w["target"] == pytest.approx(mine["target"])
        assert w["target_set_by"] == ("user" if w["name"] == "iris-lin" else "reference")
        assert {a["label"] for a in w["arms"]} == set(mine["arms"])
        for a in w["arms"]:
            t = want["times"][w["name"]][a["label"]]
            got = a["time_to_target"]["samples"]
            assert (got is None and t == INF) or got == pytest.approx(t)
            assert a["n"] == 3
            assert a["reached"] == sum(1 for x in mine["arms"][a["label"]]["samples"]
                                       if x != INF)
            assert a["final"]["ci95"] == pytest.approx(mine["arms"][a["label"]]["ci95"])
    assert rep["score"] == pytest.approx(want["score"])
    assert rep["win_probability"]["k"] == [1, 2, 3]
    for k in (1, 2, 3):
        for arm, p in want["win"][k].items():
            assert rep["win_probability"][arm][k - 1] == pytest.approx(p)
    # And the table shows each workload's arms with their time to target, and each score
    code, text, _ = invoke("report", rep["id"])
    lines = text.splitlines()
    assert code == 0 and lines[0].startswith("suite tiny (succeeded): time to target in samples")
    for w in rep["workloads"]:
        for a in w["arms"]:
            t = a["time_to_target"]["samples"]
            assert any(line.split()[:1] == [w["name"]] and a["label"] in line
                       and f"{a['reached']}/{a['n']}" in line
                       and (t is None or f"{t:.1f}" in line or str(int(t)) in line)
                       for line in lines), (w["name"], a["label"])
    for arm, score in rep["score"].items():
        assert any(line.startswith(arm + " ") and line[len(arm):].split()[0] == _fmt(score)
                   for line in lines), arm
    # And the plots were written, the profile beside the win probability
    written = sorted(p.name for p in (gradq_home / "reports" / rep["id"]).iterdir())
    assert written == ["profiles-win.png", "profiles.png"]
    # And each workload's comparison is an ordinary comparison with its own report
    kids = cli_json("ls", "--parent", rep["id"])
    assert sorted(k["kind"] for k in kids) == ["compare"] * 3  # two workloads, a reference
    cmp = cli_json("report", rep["workloads"][0]["comparison"])
    assert [a["label"] for a in cmp["arms"]] == [a["label"] for a in rep["workloads"][0]["arms"]]


def test_a_failed_workload_is_marked_and_the_others_stand(tmp_path: Path) -> None:
    from gradq.service import submit
    from gradq.service.store import actions as jobs

    # Given a stored suite whose first workload's comparison is cancelled before it runs
    prepared = submit.prepare(_suite(tmp_path, search=None, optimizers=["sgd", "adam"],
                                     seeds=2))
    ids = submit.create(prepared)
    suite_id = ids[0]
    kids = cli_json("ls", "--parent", suite_id)
    iris = next(k["id"] for k in kids if k["name"].endswith("/iris-lin"))
    jobs.cancel(iris)
    # When the rest runs
    run_all(suite_id)
    # Then the suite succeeded, the iris workload is marked failed, moons is scored
    rep = cli_json("report", suite_id)
    assert cli_json("status", suite_id)["status"] == "succeeded"
    assert rep["failed"] == ["iris-lin"] and rep["scored"] == ["moons-auto"]
    iris_doc = rep["workloads"][0]
    assert iris_doc["status"] == "cancelled"
    assert all(a["n"] == 0 for a in iris_doc["arms"])
    assert all(a["n"] == 2 for a in rep["workloads"][1]["arms"])
    # And retry runs the cancelled workload again; the suite ends with both scored
    todo = jobs.retry(suite_id)
    assert todo and cli_json("status", suite_id)["status"] == "running"
    run_all(suite_id)
    rep = cli_json("report", suite_id)
    assert rep["failed"] == [] and rep["scored"] == ["iris-lin", "moons-auto"]
    assert cli_json("status", suite_id)["status"] == "succeeded"


def test_cancel_and_rm_take_the_whole_suite(tmp_path: Path, gradq_home: Path) -> None:
    from gradq.service import submit

    prepared = submit.prepare(_suite(tmp_path, search=None, optimizers=["sgd"], seeds=2))
    suite_id = submit.create(prepared)[0]
    code, _, err = invoke("cancel", suite_id)
    assert code == 0, err
    db = _db(gradq_home)
    statuses = {st for (st,) in db.execute("SELECT status FROM jobs")}
    assert statuses == {"cancelled"}
    assert cli_json("status", suite_id)["progress"]["comparisons"]["cancelled"] == 3
    comparison = cli_json("ls", "--parent", suite_id)[0]["id"]
    code, out, err = invoke("rm", comparison)
    assert code == 2 and err.strip() == (
        f"error: job {comparison} is a workload of suite {suite_id}: delete the suite "
        f"(gradq rm {suite_id}), or the suite's report would lose it")
    code, out, err = invoke("rm", suite_id, "--json")
    assert code == 0, err
    assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
    code, out, err = invoke("gc", "--json")
    assert code == 0, err
    assert json.loads(out)["freed"]["orphans"]["rows"] == 0


# ---------------------------------------------------------------------- bad input
def _bad(tmp_path: Path, suite: dict[str, Any]) -> dict[str, Any]:
    base = json.loads(_suite(tmp_path).read_text())
    base["suite"].update(suite)
    return base


BAD = [
    ({"workloads": "book-maxi"}, "suite.workloads: unknown suite 'book-maxi'"),
    ({"workloads": [{"name": "w", "metric": "val_loss",
                     "spec": {"data": {"dataset": "iris"}}}]},
     "suite.workloads[0].target: missing"),
    ({"workloads": [{"name": "w", "metric": "val_accuracy", "target": 0.9,
                     "spec": {"data": {"dataset": "diabetes"}}}]},
     "suite.workloads[0].metric: on workload w: val_accuracy needs a classification task"),
    ({"search": None, "optimizers": ["sgd"],
      "workloads": [{"name": "w", "metric": "val_loss", "target": 0.5,
                     "spec": {"data": {"dataset": "iris", "validation": 0}}}]},
     "suite.workloads[0].metric: on workload w: needs a validation part"),
    ({"r_max": 1}, "suite.r_max: must be above 1"),
    ({"optimizers": []}, "suite.optimizers: empty"),
    ({"budget": "epochs"}, "suite.budget: 'epochs' is not a unit of time to target"),
    ({"optimizers": ["sgd", "newton"], "search": None,
      "workloads": [{"name": "big", "metric": "val_loss", "target": 0.5,
                     "spec": {"data": {"dataset": "digits"}, "model": {"hidden": [128]}}}]},
     "suite.optimizers[1].name: on workload big: newton is limited to 5,000 parameters"),
    ({"optimizers": ["sgd", "bfgs"], "search": None, "workloads": "book-mini"},
     "suite.optimizers[1].name: on workload mnist-mlp: bfgs is limited to 5,000 parameters"),
    ({"optimizers": ["closed_form"], "search": None},
     "suite.optimizers[0]: on workload moons-auto: closed_form needs a linear model"),
    ({"optimizers": ["sgd", "closed_form"], "search": None,
      "workloads": [{"name": "iris-lin", "metric": "val_loss", "target": 0.5,
                     "spec": {"data": {"dataset": "iris"}, "model": {"hidden": []}}}]},
     "suite.optimizers[1]: on workload iris-lin: closed_form needs a linear output"),
]


@pytest.mark.parametrize(("suite", "line"), BAD, ids=[b[1].split(":")[0] + str(i)
                                                       for i, b in enumerate(BAD)])
def test_bad_input_exits_2_with_one_line_and_stores_nothing(
        tmp_path: Path, gradq_home: Path, suite: dict[str, Any], line: str) -> None:
    path = write_spec(tmp_path, _bad(tmp_path, suite), "bad.json")
    for command in ("run", "submit"):
        code, out, err = invoke(command, path)
        assert code == 2, (command, err)
        assert err.startswith(f"error: {line}"), err
        assert len(err.strip().splitlines()) == 1 and out == ""
    db = gradq_home / "gradq.db"
    assert not db.exists() or _db(gradq_home).execute(
        "SELECT count(*) FROM jobs").fetchone()[0] == 0


def test_book_mini_expands_into_six_workloads_each_checked_on_its_data() -> None:
    from gradq.service import submit
    from gradq.service.experiments.workloads import BOOK_MINI

    prepared = submit.prepare(Path(__file__).parent.parent / "examples" / "suite-mini.yaml")
    job = prepared.job
    assert job.kind == "suite" and len(BOOK_MINI) >= 6
    assert [c.spec["_workload"] for c in job.children] == [w["name"] for w in BOOK_MINI]
    assert all(c.kind == "compare" and c.spec["_n_train"] > 0 for c in job.children)
    stored = job.spec["suite"]["_workloads"]
    assert all(w["target_set_by"] == "builtin" and w["target"] is not None for w in stored)
    # lbfgs takes the full batch (its default) on every workload; the others minibatches
    for c in job.children:
        batches = {k.spec["optimizer"]["name"]: k.spec["training"]["batch_size"]
                   for k in c.children}
        assert batches["lbfgs"] == "full" and isinstance(batches["adam"], int)


def test_the_contracts_example_validates_each_optimizer_searching_its_lr(
        tmp_path: Path) -> None:
    # Given the suite of the contract's example: optimizers named plainly, with a search
    from gradq.service import submit

    path = tmp_path / "suite.yaml"
    path.write_text(
        "kind: suite\nname: book-mini\nseed: 0\nsuite:\n  workloads: book-mini\n"
        "  optimizers: [sgd, momentum, nesterov, adagrad, rmsprop, adam]\n"
        "  search: {method: random, trials: 16, pruner: {successive_halving: "
        "{eta: 3, min_epochs: 1}}}\n  seeds: 5\n  budget: steps\n  r_max: 4\n")
    job = submit.prepare(path).job
    # Then every workload's comparison searches every optimizer's lr, 16 trials an arm
    assert len(job.children) >= 6
    for c in job.children:
        arms = c.spec["compare"]["optimizers"]
        assert [a["name"] for a in arms] == ["sgd", "momentum", "nesterov", "adagrad",
                                             "rmsprop", "adam"]
        assert all(set(a["lr"]) == {"loguniform"} for a in arms)
        assert c.spec["compare"]["search"]["trials"] == 16


def test_the_second_order_example_judges_every_minimizer_on_each_workload() -> None:
    from gradq.service import submit

    job = submit.prepare(Path(__file__).parent.parent / "examples"
                         / "suite-second-order.yaml").job
    workloads = [c for c in job.children if c.spec.get("_role", "workload") != "reference"]
    names = {c.spec["_workload"] for c in job.children}
    assert names == {"diabetes-linear", "cancer-logistic", "iris-tanh"}
    for c in workloads:
        arms = [a["name"] for a in c.spec["compare"]["optimizers"]]
        if arms == ["adam"]:  # iris-tanh's reference comparison, run first for its target
            continue
        assert arms == ["adam", "newton", "cg_pr", "bfgs", "lbfgs"]
        batches = {k.spec["optimizer"]["name"]: k.spec["training"]["batch_size"]
                   for k in c.children}
        assert all(batches[m] == "full" for m in ("newton", "cg_pr", "bfgs", "lbfgs"))
