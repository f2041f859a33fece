"""Searches (issue 10): spaces sampled deterministically, equal budgets across arms,
successive halving decided as a hand-worked example says, tuning and evaluation seeds
apart, cancel and retry, and a worker killed with SIGKILL in the middle of a search on the
real PostgreSQL and Redis.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from _cli import run_all, write_spec
from gradq.service import submit
from gradq.service.experiments import search
from gradq.service.experiments.compare import Kid, advance
from gradq.service.store import actions, create, queries
from gradq.service.store.db import session_scope
from gradq.service.store.models import Checkpoint, Job, Metric, Result
from gradq.workers.runner import execute

SPACES = {
    "a": {"loguniform": [1e-4, 1.0]},
    "b": {"uniform": [-2.0, 3.0]},
    "c": {"int": [2, 5]},
    "d": {"choice": [[4], [16], "x"]},
}


def search_spec(*, trials: int = 6, epochs: int = 9, seeds: int = 2, method: str = "random",
                pruner: bool = True, arms: list[Any] | None = None) -> dict[str, Any]:
    """sgd and adam, each with a log-uniform learning rate, on iris in float64."""
    cmp: dict[str, Any] = {"seeds": seeds, "search": {"method": method, "trials": trials}}
    if pruner:
        cmp["search"]["pruner"] = {"successive_halving": {"eta": 3, "min_epochs": 1}}
    if arms is None:
        cmp["optimizers"] = [{"name": "sgd", "lr": {"loguniform": [1e-3, 1.0]}},
                             {"name": "adam", "lr": {"loguniform": [1e-4, 0.1]}}]
    else:
        cmp["arms"] = arms
    return {"kind": "compare", "seed": 0, "dtype": "float64", "data": {"dataset": "iris"},
            "model": {"hidden": [8]}, "training": {"epochs": epochs, "batch_size": 16},
            "compare": cmp}


def kids_of(parent: str) -> list[dict[str, Any]]:
    """Every child: id, spec, status, final, extra, checkpoints, val_loss steps."""
    with session_scope() as s:
        rows = s.execute(sa.select(Job, Result).outerjoin(Result, Result.job_id == Job.id)
                         .where(Job.parent_id == parent).order_by(Job.created_at)).all()
        out = []
        for job, res in rows:
            steps = list(s.execute(sa.select(Metric.step).where(
                Metric.job_id == job.id, Metric.name == "val_loss")
                .order_by(Metric.step)).scalars())
            n_ck = s.execute(sa.select(sa.func.count()).select_from(Checkpoint)
                             .where(Checkpoint.job_id == job.id)).scalar()
            out.append({"id": job.id, "spec": json.loads(job.spec),
                        "status": str(getattr(job.status, "value", job.status)),
                        "final": json.loads(res.final) if res else None,
                        "extra": json.loads(res.extra) if res and res.extra else {},
                        "checkpoints": n_ck, "val_steps": steps})
    return out


def progress_of(parent: str) -> dict[str, Any]:
    with session_scope() as s:
        return json.loads(s.get(Job, parent).progress)


def run_search(tmp_path: Path, spec: dict[str, Any], name: str = "spec.json") -> str:
    parent = submit.create(submit.prepare(write_spec(tmp_path, spec, name)))[0]
    run_all(parent)
    return parent


# ------------------------------------------------------------------- sampling
@pytest.mark.parametrize("method", ["random", "qmc"])
def test_sampling_is_deterministic_and_inside_the_spaces(method: str) -> None:
    a = search.sample(SPACES, 64, method, seed=7)
    assert a == search.sample(SPACES, 64, method, seed=7)
    assert a != search.sample(SPACES, 64, method, seed=8)
    for point in a:
        assert 1e-4 <= point["a"] <= 1.0 and -2.0 <= point["b"] <= 3.0
        assert isinstance(point["c"], int) and 2 <= point["c"] <= 5
        assert point["d"] in ([4], [16], "x")
    # every value of the small spaces is reached, and the log scale is used: about as
    # many draws below 1e-2 as above
    assert {p["c"] for p in a} == {2, 3, 4, 5}
    assert {json.dumps(p["d"]) for p in a} == {"[4]", "[16]", '"x"'}
    below = sum(p["a"] < 1e-2 for p in a)
    assert 20 <= below <= 44


def test_qmc_fills_the_unit_interval_evenly() -> None:
    u = search.unit_points(1, 16, "qmc", seed=3)[:, 0]
    # a scrambled Sobol sequence of 16 points puts one in each sixteenth
    assert sorted(np.floor(u * 16).astype(int).tolist()) == list(range(16))


def test_the_same_spec_gives_the_same_trials_and_every_arm_the_same_budget(
        tmp_path: Path) -> None:
    a = submit.prepare(write_spec(tmp_path, search_spec(trials=9), "a.json")).job
    b = submit.prepare(write_spec(tmp_path, search_spec(trials=9), "b.json")).job
    assert [c.spec for c in a.children] == [c.spec for c in b.children]
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for c in a.children:
        by_arm.setdefault(c.spec["_arm"], []).append(c.spec)
    assert sorted(len(v) for v in by_arm.values()) == [9, 9]
    for trials in by_arm.values():
        assert [t["_trial"] for t in trials] == list(range(9))
        assert {t["training"]["epochs"] for t in trials} == {1}  # the first rung
        assert all(t["_phase"] == "search" and t["_checkpoint_end"] for t in trials)
    # the same quantiles of each arm's range (common random numbers)
    sgd, adam = by_arm.values()
    for s, t in zip(sgd, adam, strict=True):
        qs = math.log(s["optimizer"]["lr"] / 1e-3) / math.log(1.0 / 1e-3)
        qa = math.log(t["optimizer"]["lr"] / 1e-4) / math.log(0.1 / 1e-4)
        assert qs == pytest.approx(qa, abs=1e-9)
    state = a.progress["search"]
    assert {k: (v["trials"], v["rungs"]) for k, v in state.items()} == {
        k: (9, [1, 3, 9]) for k in state}


# --------------------------------------------------------- successive halving
def test_successive_halving_decides_as_the_hand_worked_example() -> None:
    """9 trials, eta 3, rungs at 1, 3 and 9 epochs (worked by hand):

    rung 1: values .9 .5 nan .3 .7 .4 .8 .6 .35 → top ⌊9/3⌋ = 3: trials 3, 8, 5 go on
    rung 3: trials 3 → .2, 5 → .1, 8 → .25 → top max(1, ⌊3/3⌋) = 1: trial 5 goes on
    rung 9: trial 5 → .05: chosen; 8 trials pruned; trial 5's setting runs on every seed.
    """
    spec = submit.prepare(write_spec(Path("/tmp"), search_spec(trials=9, seeds=3),
                                     f"sh-{id(object())}.json")).job
    arm = "sgd(lr~loguniform[0.001, 1])"
    trials = [c.spec for c in spec.children if c.spec["_arm"] == arm]
    others = [c.spec for c in spec.children if c.spec["_arm"] != arm]
    state = {"search": {arm: spec.progress["search"][arm]}}
    parent = spec.spec

    def kids(values: dict[int, float | None], epochs: int, waiting: set[int] = frozenset()
             ) -> list[Kid]:
        out = []
        for t, c in enumerate(trials):
            v = values.get(t)
            ended = t in values and t not in waiting
            out.append(Kid(f"t{t}", c, ("succeeded" if v is not None else "diverged")
                           if ended else "queued",
                           {"val_loss": v, "epochs": epochs} if v is not None else None,
                           {"run_s": 1.0, "samples_per_s": 90.0 * epochs}))
        return out + [Kid(f"o{i}", c, "queued") for i, c in enumerate(others)]

    rung1 = {0: .9, 1: .5, 2: None, 3: .3, 4: .7, 5: .4, 6: .8, 7: .6, 8: .35}
    # a rung is not decided while one of its trials has not reported
    early = advance(parent, kids(rung1, 1, waiting={6}), state)
    assert not early.changed and early.promote == {} and early.new == []
    step1 = advance(parent, kids(rung1, 1), state)
    assert step1.promote == {"t3": 3, "t5": 3, "t8": 3}
    assert sorted(step1.drop_checkpoints) == sorted(f"t{t}" for t in (0, 1, 2, 4, 6, 7))
    st = step1.progress["search"][arm]
    assert (st["pruned"], st["alive"], st["rung"]) == (6, [3, 5, 8], 1)
    assert st["values"][2] is None and st["values"][3] == .3
    # settling again (the promoted trials queued once more) decides nothing twice
    again = advance(parent, kids(rung1, 1, waiting={3, 5, 8}), step1.progress)
    assert not again.changed and again.promote == {}

    rung3 = {**rung1, 3: .2, 5: .1, 8: .25}
    step2 = advance(parent, kids(rung3, 3), step1.progress)
    assert step2.promote == {"t5": 9}
    assert sorted(step2.drop_checkpoints) == ["t3", "t8"]
    rung9 = {**rung3, 5: .05}
    step3 = advance(parent, kids(rung9, 9), step2.progress)
    st = step3.progress["search"][arm]
    assert st["done"] and st["pruned"] == 8 and st["chosen"] == trials[5]["_grid"]
    assert st["values"] == [.9, .5, None, .2, .7, .05, .8, .6, .25]
    assert st["epochs"] == [1, 1, 0, 3, 1, 9, 1, 1, 3]
    assert st["budget"]["epochs"] == 5 * 1 + 2 * 3 + 9  # the diverged trial: none
    finals = [j.spec for j in step3.new]
    assert [f["seed"] for f in finals] == [0, 1, 2]
    assert all(f["_phase"] == "final" and f["optimizer"]["lr"] == trials[5]["optimizer"]["lr"]
               and f["training"]["epochs"] == 9 for f in finals)


def test_rungs_and_promotion_rules() -> None:
    assert search.rungs(9, 3, 1) == [1, 3, 9]
    assert search.rungs(10, 3, 1) == [1, 3, 9, 10]
    assert search.rungs(4, 2, 4) == [4]
    assert search.promote({0: 1.0, 1: 1.0, 2: 0.5}, 3, True) == [2]
    assert search.promote({0: 1.0, 1: 1.0, 2: 2.0, 3: 3.0}, 2, True) == [0, 1]  # ties: index
    assert search.promote({0: 0.9, 1: 0.7, 2: None}, 3, False) == [0]  # an accuracy
    assert search.promote({0: None, 1: math.nan}, 2, True) == []


# ---------------------------------------------------------- a search that runs
def test_a_search_runs_prunes_and_evaluates_the_chosen_point(tmp_path: Path) -> None:
    parent = run_search(tmp_path, search_spec())
    kids = kids_of(parent)
    progress = progress_of(parent)
    assert queries.result(parent)["status"] == "succeeded"
    assert progress["seeds"] == {"tune": [2], "eval": [0, 1]}
    for label, st in progress["search"].items():
        trials = [k for k in kids if k["spec"]["_arm"] == label
                  and k["spec"].get("_phase") == "search"]
        finals = [k for k in kids if k["spec"]["_arm"] == label
                  and k["spec"].get("_phase") == "final"]
        # every trial once, on the tuning seed; 6 → 2 → 1 with eta 3
        assert sorted(k["spec"]["_trial"] for k in trials) == list(range(6))
        assert {k["spec"]["seed"] for k in trials} == {2}
        assert st["done"] and st["pruned"] == 5 and st["trials"] == 6
        assert sorted(st["epochs"]) == [1, 1, 1, 1, 3, 9]
        assert st["budget"]["epochs"] == 16
        assert st["budget"]["samples"] == 16 * 90
        top = next(k for k in trials if k["spec"]["_trial"] == st["chosen_trial"])
        # the chosen trial trained 9 epochs in one job: its curve is whole, every epoch once
        assert top["final"]["epochs"] == 9 and len(top["val_steps"]) == 10
        assert top["val_steps"] == sorted(set(top["val_steps"]))
        assert top["extra"]["resumed_from"] == {"epoch": 3, "step": 18}
        # its speed is this run's samples (epochs 4-9) over this run's seconds, not over
        # the cumulative run_s that counts the rungs before it
        timing = queries.result(top["id"])["timing"]
        assert 0 < timing["session_s"] < timing["run_s"]
        assert timing["samples_per_s"] == pytest.approx(6 * 90 / timing["session_s"],
                                                        rel=1e-3, abs=0.1)
        assert st["values"][st["chosen_trial"]] == top["final"]["val_loss"]
        # no checkpoint outlives the search
        assert all(k["checkpoints"] == 0 for k in trials)
        # the chosen point runs on every evaluation seed; pruned trials never do
        assert sorted(k["spec"]["seed"] for k in finals) == [0, 1]
        assert all(k["spec"]["_grid"] == st["chosen"] == top["spec"]["_grid"]
                   for k in finals)
        stats_runs = [k for k in kids if k["spec"].get("_phase") in (None, "final")]
        pruned = {k["id"] for k in trials} - {top["id"]}
        assert not pruned & {k["id"] for k in stats_runs}
    status = queries.status(parent)["progress"]["search"]
    assert {v["done"] for v in status.values()} == {6}
    assert {v["pruned"] for v in status.values()} == {5}


def test_a_search_over_a_regularizer_and_a_width_of_an_arm(tmp_path: Path) -> None:
    arms = [{"label": "l2", "regularization.l2": {"loguniform": [1e-6, 1e-1]}},
            {"label": "width", "model.hidden": {"choice": [[2], [8], [32]]},
             "optimizer.lr": {"loguniform": [1e-3, 1e-1]}}]
    parent = run_search(tmp_path, search_spec(trials=4, epochs=3, method="qmc", arms=arms))
    kids = kids_of(parent)
    st = progress_of(parent)["search"]
    assert st["l2"]["space"] == {"regularization.l2": {"loguniform": [1e-6, 0.1]}}
    for k in kids:
        over = k["spec"]["_arm_overrides"]
        if k["spec"]["_arm"] == "l2":
            assert k["spec"]["regularization"]["l2"] == over["regularization.l2"]
        else:
            assert k["spec"]["model"]["hidden"] == over["model.hidden"]
    assert st["width"]["chosen"]["model.hidden"] in ([2], [8], [32])
    assert queries.result(parent)["status"] == "succeeded"


def test_cancel_stops_a_search_and_retry_resumes_it_to_the_same_choice(tmp_path: Path
                                                                        ) -> None:
    reference = progress_of(run_search(tmp_path, search_spec(), "ref.json"))["search"]
    parent = submit.create(submit.prepare(write_spec(tmp_path, search_spec(), "b.json")))[0]
    # Given a search part-way through its first rung
    for job_id in create.queued_children(parent)[:1]:
        execute(job_id, worker="test-local", batch=False)
    # When it is cancelled, nothing more runs
    actions.cancel(parent)
    assert queries.result(parent)["status"] == "cancelled"
    assert create.queued_children(parent) == []
    # and when it is retried, it goes on where it stopped and chooses what an
    # uninterrupted search chooses
    todo = actions.retry(parent)
    assert len(todo) == 11
    run_all(parent)
    assert queries.result(parent)["status"] == "succeeded"
    got = progress_of(parent)["search"]
    for label in reference:
        assert got[label]["chosen"] == reference[label]["chosen"]
        assert got[label]["values"] == pytest.approx(reference[label]["values"], rel=1e-12)
    trials = [k for k in kids_of(parent) if k["spec"].get("_phase") == "search"]
    assert len(trials) == 12


# ------------------------------------------------ kill -9 on the real services
@pytest.mark.services
def test_a_worker_killed_during_a_search_loses_no_trial_and_changes_no_choice(
        tmp_path: Path, pg_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    from faultkit import LEASE_S, Pool, job_row, pools, submit_spec, wait_for, wait_jobs

    # Given the uninterrupted search's choices (in process, SQLite)
    spec = search_spec()
    reference_home = tmp_path / "reference"
    ref = subprocess.run(
        [sys.executable, "-m", "gradq.cli.main", "run", str(write_spec(tmp_path, spec)),
         "--json"], env={**__import__("os").environ, "GRADQ_HOME": str(reference_home),
                         "GRADQ_DATABASE_URL": f"sqlite:///{reference_home}/ref.db"},
        capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    reference_home.mkdir(exist_ok=True)
    engine = sa.create_engine(f"sqlite:///{reference_home}/ref.db")
    with engine.connect() as c:
        want = json.loads(c.execute(sa.text("SELECT progress FROM jobs WHERE kind = "
                                            "'compare'")).scalar_one())["search"]
    engine.dispose()

    # and the same search on PostgreSQL and Redis, on a pool that trains one trial at a
    # time (no stacking, so that the search is part-way when it dies)
    monkeypatch.setenv("GRADQ_LEASE_S", str(LEASE_S))
    subprocess.run([sys.executable, "-m", "gradq.cli.main", "db", "upgrade"], check=True,
                   capture_output=True, timeout=120)
    victim = Pool("victim", tmp_path, env={"GRADQ_MAX_REPLICAS": "1"})
    with pools(victim):
        ids = submit_spec(write_spec(tmp_path, spec, "queued.json"))
        parent, trials = ids[0], ids[1:]

        def mid_search() -> str | None:
            rows = [job_row(t) for t in trials]
            done = sum(r["status"] == "succeeded" for r in rows)
            running = [r["id"] for r in rows if r["status"] == "running"
                       and victim.ran(r["worker"])]
            return running[0] if done >= 2 and running else None

        # When the worker is killed (SIGKILL, every process of it) while it trains a
        # trial, two others waiting at their rung (frozen first, so that the trial seen
        # running cannot end before the kill)
        killed = None
        while killed is None:
            wait_for(mid_search, 120, "two trials done and one running", interval=0.02,
                     on_timeout=victim.tail)
            victim.pause()
            # a COMMIT the worker sent just before it stopped still lands on the server:
            # read the rows once it has (else the trial seen running may have ended)
            time.sleep(0.5)
            killed = mid_search()
            if killed is None:
                victim.resume()
        victim.kill()
    assert job_row(killed)["status"] == "running"
    # and another pool takes over (the sweeper hands the lapsed trial over)
    healthy = Pool("healthy", tmp_path)
    with pools(healthy):
        assert wait_jobs([parent], 300, pools=[healthy]) == {parent: "succeeded"}
    assert job_row(killed)["attempts"] >= 2 and job_row(killed)["status"] == "succeeded"

    # Then every trial ran to its end exactly once, and the choices are the reference's
    got = progress_of(parent)["search"]
    kids = kids_of(parent)
    for label, st in want.items():
        assert got[label]["chosen"] == st["chosen"], label
        assert got[label]["pruned"] == st["pruned"]
        assert got[label]["epochs"] == st["epochs"]
        assert got[label]["values"] == pytest.approx(st["values"], rel=1e-9)
        trials = [k for k in kids if k["spec"]["_arm"] == label
                  and k["spec"].get("_phase") == "search"]
        assert sorted(k["spec"]["_trial"] for k in trials) == list(range(6))
        for k in trials:
            assert k["status"] == "succeeded"
            assert len(k["val_steps"]) == k["final"]["epochs"] + 1  # each epoch once
        finals = [k for k in kids if k["spec"]["_arm"] == label
                  and k["spec"].get("_phase") == "final"]
        assert sorted(k["spec"]["seed"] for k in finals) == [0, 1]


# -------------------------------------------------------------- bad spaces
def test_a_search_over_plain_names_prints_the_space_it_searched(
        tmp_path: Path, gradq_home: Path) -> None:
    # Given a searched comparison whose optimizers are named plainly
    from _cli import invoke

    path = write_spec(tmp_path, {
        "kind": "compare", "data": {"dataset": "iris"}, "model": {"hidden": [4]},
        "training": {"epochs": 2},
        "compare": {"optimizers": ["sgd", "lbfgs"], "seeds": 2, "search": {"trials": 2}}})
    code, out, _ = invoke("run", path)
    # Then gradq run trains it and its report names the lr space that sgd searched, and
    # lbfgs as it was named
    assert code == 0
    assert "search sgd(lr~loguniform[0.0001, 1]): random over lr ~ loguniform[0.0001, 1.0];" \
        in out
    assert "\nlbfgs " in out and "search lbfgs" not in out


def test_optimizers_named_without_a_space_search_their_lr_by_default() -> None:
    # Given a search over optimizers named plainly, one with its own lr, and one without an lr
    from gradq.service.spec import validate

    spec = validate({"kind": "compare", "data": {"dataset": "digits"},
                     "model": {"hidden": [8]}, "training": {"epochs": 2},
                     "compare": {"optimizers": ["sgd", {"name": "adam", "lr": 0.003}, "lbfgs"],
                                 "search": {"trials": 4}}})
    # Then each first-order one searches its lr over two decades either side of its own (or
    # its default) lr, and lbfgs runs as named
    assert spec["compare"]["optimizers"] == [
        {"name": "sgd", "lr": {"loguniform": [1e-4, 1.0]}},
        {"name": "adam", "lr": {"loguniform": [pytest.approx(3e-5), pytest.approx(0.3)]}},
        {"name": "lbfgs"}]
    # and once any arm gives a space, the others run as named
    spec = validate({"kind": "compare", "data": {"dataset": "digits"},
                     "model": {"hidden": [8]}, "training": {"epochs": 2},
                     "compare": {"optimizers": ["sgd", {"name": "adam",
                                                        "lr": {"uniform": [0.001, 0.01]}}],
                                 "search": {"trials": 4}}})
    assert spec["compare"]["optimizers"][0] == {"name": "sgd"}


@pytest.mark.parametrize(("arm", "search_cfg", "line"), [
    ({"name": "sgd", "lr": {"loguniform": [0.1, 0.01]}}, {"trials": 4},
     "compare.optimizers[0].lr.loguniform: needs a < b, got [0.1, 0.01]"),
    ({"name": "sgd", "lr": {"loguniform": [0.0, 0.1]}}, {"trials": 4},
     "compare.optimizers[0].lr.loguniform: needs 0 < a (a log scale), got a = 0.0"),
    ({"name": "momentum", "momentum": {"uniform": [0.5, 0.5]}}, {"trials": 4},
     "compare.optimizers[0].momentum.uniform: needs a < b, got [0.5, 0.5]"),
    ({"name": "sgd", "lr": {"normal": [0.0, 1.0]}}, {"trials": 4},
     "compare.optimizers[0].lr.normal: unknown distribution"),
    ({"name": "adam", "momentum": {"uniform": [0.1, 0.9]}}, {"trials": 4},
     "compare.optimizers[0].momentum: unknown hyperparameter for adam"),
    ({"name": "lbfgs", "history": {"uniform": [2, 20]}}, {"trials": 4},
     "compare.optimizers[0].history.uniform[0]: must be an integer"),
    ({"name": "sgd", "lr": {"loguniform": [1e-3, 1.0]}}, None,
     "compare.optimizers[0].lr: a search space needs compare.search"),
    ({"name": "lbfgs"}, {"trials": 4},
     "compare.search: no arm has a search space"),
    ({"name": "sgd", "lr": {"loguniform": [1e-3, 1.0]}}, {"trials": 0},
     "compare.search.trials: must be an integer in [1, 10000], got 0"),
    ({"name": "sgd", "lr": {"loguniform": [1e-3, 1.0]}}, {"method": "grid"},
     "compare.search.method: must be one of random, qmc"),
])
def test_a_bad_space_exits_2_naming_its_key(tmp_path: Path, arm: dict[str, Any],
                                            search_cfg: dict[str, Any] | None,
                                            line: str) -> None:
    from _cli import invoke

    spec = search_spec()
    spec["compare"]["optimizers"] = [arm]
    spec["compare"]["search"] = search_cfg
    code, out, err = invoke("run", write_spec(tmp_path, spec))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and line in err, err
    with session_scope() as s:
        assert s.execute(sa.select(sa.func.count()).select_from(Job)).scalar() == 0
