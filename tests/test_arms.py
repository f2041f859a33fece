"""``compare.arms`` (issue 14): arms over any spec key — regularizers, widths, batch sizes,
initializers — validated whole, paired by seed, run in this process (no broker).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from _cli import invoke, run_all, write_spec
from gradq.service import submit
from gradq.service.store import queries
from gradq.service.store.db import session_scope
from gradq.service.store.models import Job
from gradq.train.engine import minibatch_order
from gradq.workers.data import load_dataset, prepare_splits


def arms_spec(arms: list[dict[str, Any]], *, seeds: int = 2, **compare: Any) -> dict[str, Any]:
    """A comparison of ``arms`` on iris (90 training rows), 2 epochs, float64."""
    return {"kind": "compare", "seed": 0, "dtype": "float64", "data": {"dataset": "iris"},
            "model": {"hidden": [8]}, "training": {"epochs": 2, "batch_size": 16},
            "compare": {"arms": arms, "seeds": seeds, **compare}}


def children(parent: str) -> list[tuple[str, dict[str, Any], str]]:
    with session_scope() as s:
        rows = s.execute(sa.select(Job.id, Job.spec, Job.status)
                         .where(Job.parent_id == parent).order_by(Job.created_at)).all()
    return [(r.id, json.loads(r.spec), str(getattr(r.status, "value", r.status)))
            for r in rows]


def job_count() -> int:
    with session_scope() as s:
        return s.execute(sa.select(sa.func.count()).select_from(Job)).scalar()


def arrays(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob)) as z:
        return {k: z[k] for k in z.files}


# ------------------------------------------------------------------- bad arms
@pytest.mark.parametrize(("arms", "compare", "line"), [
    ([{"label": "none"}, {"label": "x", "model.bogus": 1}], {},
     "compare.arms[1] (label x): model.bogus: unknown key"),
    ([{"label": "none"}, {"label": "l2"}, {"label": "dropout", "model.dropout.hidden": 1.5}],
     {}, "compare.arms[2] (label dropout): model.dropout.hidden: must be a number in [0, 1)"),
    ([{"label": "none"}, {"label": "none", "regularization.l2": 0.1}], {},
     "compare.arms[1].label: 'none' is already the label of compare.arms[0]"),
    ([{"label": "none"}, {"regularization.l2": 0.1}], {},
     "compare.arms[1].label: required"),
    ([{"label": "v", "data.validation": 0.3}], {},
     "compare.arms[0] (label v): data.validation: cannot differ between arms"),
    ([{"label": "l2", "regularization.l2": {"loguniform": [1e-6, 1e-1]}}], {},
     "compare.arms[0] (label l2): regularization.l2: a search space needs compare.search"),
    ([{"label": "l2", "regularization.l2": {"loguniform": [0.1, 1e-6]}}],
     {"search": {"trials": 4}},
     "compare.arms[0] (label l2): regularization.l2.loguniform: needs a < b"),
    ([{"label": "sgd", "optimizer.name": "sgd", "optimizer.momentum": 0.9}], {},
     "compare.arms[0] (label sgd): optimizer.momentum: unknown hyperparameter for sgd"),
    ([{"label": "w", "model.hidden": [4, 4], "model.activation": ["relu"] * 3}], {},
     "compare.arms[0] (label w): model.activation: has 3 entries for 2 hidden layers"),
])
def test_a_bad_arm_exits_2_with_one_line_and_stores_nothing(
        tmp_path: Path, arms: list[dict[str, Any]], compare: dict[str, Any], line: str) -> None:
    path = write_spec(tmp_path, arms_spec(arms, **compare))
    code, out, err = invoke("run", path)
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and line in lines[0], err
    assert job_count() == 0


def test_arms_and_optimizers_together_are_refused(tmp_path: Path) -> None:
    spec = arms_spec([{"label": "a"}])
    spec["compare"]["optimizers"] = ["sgd"]
    code, _, err = invoke("run", write_spec(tmp_path, spec))
    assert code == 2 and "compare.arms: give compare.arms or compare.optimizers" in err


# -------------------------------------------------------------- arms that run
ARMS = [
    {"label": "none"},
    {"label": "l2", "regularization.l2": 1.0e-2},
    {"label": "l1", "regularization.l1": 1.0e-3},
    {"label": "batch 32", "training.batch_size": 32},
    {"label": "he", "model.init": "he_normal", "model.bias_init": 0.1},
    {"label": "wide", "model.hidden": [32]},
]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The comparison of ARMS, run once for this module's tests (its own database)."""
    home = tmp_path_factory.mktemp("arms-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("GRADQ_HOME", str(home))
    mp.setenv("GRADQ_DEVICE", "cpu")
    mp.delenv("GRADQ_DATABASE_URL", raising=False)
    from gradq.service.store.db import dispose_engines

    dispose_engines()
    try:
        prepared = submit.prepare(write_spec(home, arms_spec(ARMS)))
        parent = submit.create(prepared)[0]
        run_all(parent)
        kids = children(parent)
        docs = {d["id"]: d for d in queries.children(parent)}
        status = queries.status(parent)
        initial = {k: arrays(queries.artifact(k, "initial")) for k, _, _ in kids}
        model = {k: arrays(queries.artifact(k, "model")) for k, _, _ in kids}
        curves = {k: queries.curves(k, ["train_loss"])["metrics"]["train_loss"]["value"]
                  for k, _, _ in kids}
        return {"parent": parent, "kids": kids, "docs": docs, "status": status,
                "initial": initial, "model": model, "curves": curves, "spec": prepared.spec}
    finally:
        dispose_engines()
        mp.undo()


def _by(ran: dict[str, Any]) -> dict[tuple[str, int], tuple[str, dict[str, Any]]]:
    return {(c["_arm"], c["seed"]): (k, c) for k, c, _ in ran["kids"]}


def test_every_arm_runs_on_every_seed_with_its_overrides(ran: dict[str, Any]) -> None:
    by = _by(ran)
    assert set(by) == {(a["label"], s) for a in ARMS for s in (0, 1)}
    assert all(status == "succeeded" for _, _, status in ran["kids"])
    for (label, _), (_, c) in by.items():
        arm = next(a for a in ARMS if a["label"] == label)
        over = {k: v for k, v in arm.items() if k != "label"}
        assert c["_arm_overrides"] == over
        assert c["_arm_index"] == ARMS.index(arm)
        for key, value in over.items():
            section, name = key.split(".")
            assert c[section][name] == value
        assert c["regularization"]["l2"] == (1e-2 if label == "l2" else 0.0)
        assert c["model"]["hidden"] == ([32] if label == "wide" else [8])
    assert ran["status"]["status"] == "succeeded"


def test_arms_of_different_shapes_are_named(ran: dict[str, Any]) -> None:
    shapes = ran["status"]["progress"]["shapes"]
    assert shapes["wide"] == "4-32-3"
    assert {shapes[a["label"]] for a in ARMS if a["label"] != "wide"} == {"4-8-3"}


def test_paired_design_same_split_and_minibatch_order_per_seed(ran: dict[str, Any]) -> None:
    """For a seed every arm sees the same split and the same permutation of the training
    rows each epoch (batch 32 cuts that same order into larger batches)."""
    by = _by(ran)
    ds = load_dataset(ran["kids"][0][1], None)
    for seed in (0, 1):
        splits = [prepare_splits(by[(a["label"], seed)][1], ds) for a in ARMS]
        for s in splits[1:]:
            for name in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
                np.testing.assert_array_equal(getattr(s, name), getattr(splits[0], name))
        n = len(splits[0].X_train)
        orders = {json.dumps(minibatch_order(by[(a["label"], seed)][1]["seed"], e, n)
                             .tolist()) for a in ARMS for e in (0, 1)}
        assert len(orders) == 2  # one per epoch, shared by every arm
    a0 = prepare_splits(by[("none", 0)][1], ds)
    a1 = prepare_splits(by[("none", 1)][1], ds)
    assert not np.array_equal(a0.X_train, a1.X_train)  # another seed, another split


def test_paired_design_same_initial_parameters_where_shapes_match(ran: dict[str, Any]
                                                                  ) -> None:
    by = _by(ran)
    init = ran["initial"]
    for seed in (0, 1):
        base = init[by[("none", seed)][0]]
        for label in ("l2", "l1", "batch 32"):  # same shape and initializer
            other = init[by[(label, seed)][0]]
            assert other.keys() == base.keys()
            for k in base:
                np.testing.assert_array_equal(other[k], base[k])
        # the same start gives the same data loss before the first step
        assert ran["curves"][by[("l2", seed)][0]][0] == ran["curves"][by[("none", seed)][0]][0]
        # another initializer, or another shape, starts elsewhere
        assert not np.array_equal(init[by[("he", seed)][0]]["b0"], base["b0"])
        assert init[by[("wide", seed)][0]]["W0"].shape == (4, 32)
    assert not np.array_equal(init[by[("none", 0)][0]]["W0"], init[by[("none", 1)][0]]["W0"])


def test_an_override_changes_training_as_asked(ran: dict[str, Any]) -> None:
    by = _by(ran)
    docs = ran["docs"]
    for seed in (0, 1):
        steps = {label: docs[by[(label, seed)][0]]["final"]["steps"] for label in
                 ("none", "batch 32")}
        assert steps == {"none": 2 * 6, "batch 32": 2 * 3}  # 90 rows: 6 or 3 batches
        w_none = ran["model"][by[("none", seed)][0]]["W0"]
        w_l2 = ran["model"][by[("l2", seed)][0]]["W0"]
        assert np.linalg.norm(w_l2) < np.linalg.norm(w_none)  # weight decay shrinks


def test_an_arm_naming_an_optimizer_starts_from_its_defaults(tmp_path: Path) -> None:
    spec = arms_spec([{"label": "sgd", "optimizer.name": "sgd", "optimizer.lr": 0.1},
                      {"label": "lbfgs", "optimizer.name": "lbfgs"}])
    spec["optimizer"] = {"name": "adam", "beta1": 0.8}
    del spec["training"]["batch_size"]
    prepared = submit.prepare(write_spec(tmp_path, spec))
    kids = {c.spec["_arm"]: c.spec for c in prepared.job.children}
    assert kids["sgd"]["optimizer"] == {"name": "sgd", "lr": 0.1, "schedule": None}
    assert kids["sgd"]["training"]["batch_size"] == 128
    assert kids["lbfgs"]["optimizer"]["name"] == "lbfgs"
    assert kids["lbfgs"]["training"]["batch_size"] == "full"  # its default, not given


def test_a_grid_over_any_numeric_key_is_tuned_on_tuning_seeds(tmp_path: Path) -> None:
    spec = arms_spec([{"label": "l2", "regularization.l2": [0.0, 1e-3, 1e-1]},
                      {"label": "batch", "training.batch_size": [16, 32]}], seeds=2)
    prepared = submit.prepare(write_spec(tmp_path, spec))
    kids = [c.spec for c in prepared.job.children]
    tune = [c for c in kids if c.get("_phase") == "tune"]
    assert sorted(c["regularization"]["l2"] for c in tune if c["_arm"] == "l2") == \
        [0.0, 1e-3, 1e-1]
    assert sorted(c["training"]["batch_size"] for c in tune if c["_arm"] == "batch") == \
        [16, 32]
    assert {c["seed"] for c in tune} == {2}  # the tuning seed follows the evaluation seeds
    assert prepared.job.progress["seeds"] == {"tune": [2], "eval": [0, 1]}


def test_a_list_of_widths_is_a_value_and_a_choice_of_widths_is_searched(tmp_path: Path
                                                                        ) -> None:
    bad = arms_spec([{"label": "widths", "model.hidden": [[4], [16]]}])
    code, _, err = invoke("run", write_spec(tmp_path, bad))
    assert code == 2 and "compare.arms[0] (label widths): model.hidden[0]" in err
    good = arms_spec([{"label": "widths", "model.hidden": {"choice": [[4], [16]]}}],
                     search={"trials": 4})
    prepared = submit.prepare(write_spec(tmp_path, good))
    trials = [c.spec for c in prepared.job.children]
    assert {json.dumps(c["model"]["hidden"]) for c in trials} <= {"[4]", "[16]"}
    assert all(c["_phase"] == "search" for c in trials)


def test_stacked_arms_give_the_results_of_the_same_arms_run_one_by_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
        ) -> None:
    """Arms that share an architecture (here: optimizers and their rates) train as stacked
    replicas; in float64 each run is the run alone."""
    arms = [{"label": "sgd", "optimizer.name": "sgd", "optimizer.lr": 0.1},
            {"label": "momentum", "optimizer.name": "momentum", "optimizer.lr": 0.05},
            {"label": "adam", "optimizer.name": "adam", "optimizer.lr": 0.01}]
    finals = {}
    for mode, cap in (("stacked", "64"), ("alone", "1")):
        monkeypatch.setenv("GRADQ_MAX_REPLICAS", cap)  # read afresh by every run
        caplog.clear()
        caplog.set_level(logging.INFO, logger="gradq.worker")
        parent = submit.create(submit.prepare(write_spec(tmp_path, arms_spec(arms),
                                                         f"{mode}.json")))[0]
        run_all(parent)
        finals[mode] = {(d["arm"], d["seed"]): d["final"] for d in queries.children(parent)}
        stacked = [r.getMessage() for r in caplog.records if "together" in r.getMessage()]
        assert bool(stacked) == (mode == "stacked"), stacked
    assert finals["stacked"].keys() == finals["alone"].keys() and len(finals["alone"]) == 6
    for key, final in finals["alone"].items():
        assert finals["stacked"][key] == pytest.approx(final, rel=1e-12), key
