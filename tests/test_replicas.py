"""Batched replicas (docs/architecture.md, issue 7): R children trained together as stacked arrays
give
what training each alone gives — curves, final metrics, parameters, checkpoints — and the
scheduler batches siblings of a comparison, each under its own lease.

The reference is ``Trainer``, one run at a time, in float64 (1e-6 relative, though the two
agree far more closely). NumPy always, CuPy where a GPU is.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from _backends import xp_fixture
from gradq.nn.datasets import load_builtin
from gradq.service.experiments.compare import expand
from gradq.service.failure_policy import Failure
from gradq.service.spec import validate
from gradq.service.store import create, leases, queries, writes
from gradq.train.interface import NullHooks
from gradq.train.replicas import ReplicaTrainer, batch_key, max_replicas
from gradq.train.trainer import Trainer
from gradq.workers.data import prepare_splits

xp = xp_fixture()
RTOL = 1e-6

OPTIMIZERS: dict[str, list[dict[str, Any]]] = {
    # per optimizer, one setting per replica: the hyperparameters differ between replicas
    "sgd": [{"lr": 0.1}, {"lr": 0.05}, {"lr": 0.1}],
    "momentum": [{"lr": 0.01}, {"lr": 0.02, "momentum": 0.8}, {"lr": 0.01}],
    "nesterov": [{"lr": 0.01}, {"lr": 0.03}, {"lr": 0.01, "momentum": 0.5}],
    "adagrad": [{"lr": 0.05}, {"lr": 0.1, "eps": 1e-8}, {"lr": 0.05}],
    "rmsprop": [{"lr": 0.001}, {"lr": 0.003, "alpha": 0.9}, {"lr": 0.001}],
    "rmsprop_centered_momentum": [{"lr": 0.001, "centered": True, "momentum": 0.9},
                                  {"lr": 0.002, "centered": True, "momentum": 0.5},
                                  {"lr": 0.001, "centered": True, "momentum": 0.9}],
    "adam": [{"lr": 0.001}, {"lr": 0.003, "beta1": 0.8}, {"lr": 0.001, "beta2": 0.99}],
    "adam_amsgrad": [{"lr": 0.002, "amsgrad": True}, {"lr": 0.001, "amsgrad": True},
                     {"lr": 0.002, "amsgrad": True}],
    "adadelta": [{"lr": 1.0}, {"lr": 0.5, "rho": 0.95}, {"lr": 1.0}],
    "rmsprop_nesterov": [{"lr": 0.001}, {"lr": 0.002}, {"lr": 0.001}],
    "delta_bar_delta": [{"lr": 0.01}, {"lr": 0.01}, {"lr": 0.01}],
}


def _name(key: str) -> str:
    return key.split("_centered")[0].replace("_amsgrad", "")


def make_spec(dataset: str = "iris", seed: int = 0, optimizer: dict | None = None,
              **sections: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"data": {"dataset": dataset}, "dtype": "float64", "seed": seed,
                           "model": {"hidden": [6]},
                           "training": {"epochs": 3, "batch_size": 16},
                           "optimizer": optimizer or {"name": "sgd"}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return validate(raw)


_DATA: dict[tuple, Any] = {}


def splits(spec: dict[str, Any]) -> Any:
    key = (spec["data"]["dataset"], spec["seed"], spec["data"]["validation"],
           spec["data"]["test"])
    if key not in _DATA:
        _DATA[key] = prepare_splits(spec, load_builtin(spec["data"]["dataset"]))
    return _DATA[key]


def one_by_one(specs: list[dict[str, Any]], xp: Any) -> list[tuple[Any, NullHooks]]:
    out = []
    for s in specs:
        hooks = NullHooks()
        out.append((Trainer(s, splits(s), xp, hooks).run(), hooks))
    return out


def together(specs: list[dict[str, Any]], xp: Any, hooks: list | None = None
             ) -> tuple[list[Any], list[NullHooks]]:
    hooks = hooks or [NullHooks() for _ in specs]
    ends = ReplicaTrainer(specs, [splits(s) for s in specs], xp, hooks).run()
    return ends, hooks


def assert_same_run(batched: Any, b_hooks: NullHooks, single: Any, s_hooks: NullHooks,
                    rtol: float = RTOL) -> None:
    """The same outcome, curves and checkpoints (times aside)."""
    assert batched.status == single.status
    assert batched.error == single.error
    assert batched.samples == single.samples and batched.params == single.params
    assert batched.extra == single.extra
    assert set(batched.final) == set(single.final)
    for k, v in single.final.items():
        assert batched.final[k] == pytest.approx(v, rel=rtol, abs=1e-12), k
    for part in ("arrays", "initial"):
        a, b = getattr(batched, part), getattr(single, part)
        assert set(a) == set(b)
        for k in b:
            # relative to each array's scale: on a GPU, cuBLAS sums a batched product in
            # another order than a single one, which shows only on entries near zero
            scale = float(np.abs(b[k]).max()) if np.size(b[k]) else 0.0
            np.testing.assert_allclose(a[k], b[k], rtol=rtol,
                                       atol=max(1e-12, rtol * scale), err_msg=k)
    assert [(r[0], r[1], r[2]) for r in b_hooks.rows] == [(r[0], r[1], r[2])
                                                          for r in s_hooks.rows]
    np.testing.assert_allclose([r[4] for r in b_hooks.rows], [r[4] for r in s_hooks.rows],
                               rtol=rtol, atol=1e-12)
    assert [c[:2] for c in b_hooks.checkpoints] == [c[:2] for c in s_hooks.checkpoints]
    for (_, _, a), (_, _, b) in zip(b_hooks.checkpoints, s_hooks.checkpoints, strict=True):
        za, zb = np.load(io.BytesIO(a)), np.load(io.BytesIO(b))
        assert set(za.files) == set(zb.files)
        for k in zb.files:
            if k == "meta":  # epoch, step, elapsed time, best value/epoch/patience
                np.testing.assert_array_equal(np.delete(za[k], 2), np.delete(zb[k], 2))
            else:
                np.testing.assert_allclose(za[k], zb[k], rtol=rtol, atol=1e-12, err_msg=k)


def check(specs: list[dict[str, Any]], xp: Any, rtol: float = RTOL) -> None:
    ends, hooks = together(specs, xp)
    for end, h, (single, s_hooks) in zip(ends, hooks, one_by_one(specs, xp), strict=True):
        assert end.error is None
        assert_same_run(end.outcome, h, single, s_hooks, rtol)


# ------------------------------------------------------------------- identical runs
@pytest.mark.parametrize("key", list(OPTIMIZERS))
def test_replicas_train_exactly_as_one_at_a_time(xp, key: str) -> None:
    # Given three children of one optimizer: different seeds and hyperparameter values
    specs = [make_spec(seed=i, optimizer={"name": _name(key), **h})
             for i, h in enumerate(OPTIMIZERS[key])]
    assert len({batch_key(s) for s in specs}) == 1
    # Then training them as stacked replicas gives each one's own run. Centered RMSProp
    # divides by √(v − ḡ²), a difference of nearly equal numbers: on a GPU the batched
    # product's other summation order is amplified there (seen on an H200: 1e-5 relative)
    rtol = 1e-4 if "centered" in key and xp.__name__ == "cupy" else RTOL
    check(specs, xp, rtol)


def test_a_whole_comparison_batches_across_optimizers(xp) -> None:
    # Given the children of a comparison: six optimizers × two paired seeds
    spec = validate({"kind": "compare", "dtype": "float64", "data": {"dataset": "iris"},
                     "model": {"hidden": [5]}, "training": {"epochs": 2, "batch_size": 32},
                     "compare": {"optimizers": [{"name": "sgd", "lr": 0.1}, "momentum",
                                                "nesterov", "adagrad", "rmsprop", "adam"],
                                 "seeds": 2}})
    children = [c.spec for c in expand(spec).children]
    assert len({batch_key(c) for c in children}) == 1
    # Then one batch of twelve replicas (six optimizer groups) gives each child's run
    check(children, xp)


@pytest.mark.parametrize("variant", ["full_batch", "log_every_steps", "max_steps",
                                     "penalties_and_clipping", "batch_norm_prelu",
                                     "schedule", "binary_sigmoid", "regression",
                                     "lsuv_marginal", "shared_split"])
def test_features_that_batch(xp, variant: str) -> None:
    sections: dict[str, Any] = {
        "full_batch": {"training": {"batch_size": "full", "epochs": 4}},
        "log_every_steps": {"training": {"log_every": 3, "checkpoint_every": 2}},
        "max_steps": {"training": {"max_steps": 7, "log_every": 2}},
        "penalties_and_clipping": {"regularization": {"l2": 0.01, "l1": 0.001,
                                                      "clip_grad_norm": 0.5}},
        "batch_norm_prelu": {"model": {"hidden": [6, 5], "batch_norm": True,
                                       "activation": ["prelu", "tanh"]}},
        "schedule": {},
        "binary_sigmoid": {"data": {"dataset": "breast_cancer"}},
        "regression": {"data": {"dataset": "diabetes"}, "model": {"activation": "tanh"}},
        "lsuv_marginal": {"model": {"init": "lsuv", "output_bias": "marginal"}},
        "shared_split": {"data": {"validation": 0.0, "test": 0.0}},
    }[variant]
    opts = [{"name": "adam", "lr": 0.01}, {"name": "adam", "lr": 0.003},
            {"name": "momentum", "lr": 0.01}]
    if variant == "schedule":
        sched = {"kind": "linear", "final_lr": 0.001, "steps": 10}
        opts = [{**o, "schedule": sched} for o in opts]
    specs = [make_spec(seed=i, optimizer=o, **sections) for i, o in enumerate(opts)]
    check(specs, xp)


def test_grid_points_of_one_seed_share_one_copy_of_the_data(xp) -> None:
    # Given a grid on one seed (the tuning phase): every replica sees the same split
    specs = [make_spec(seed=3, optimizer={"name": "sgd", "lr": lr}) for lr in (0.3, 0.1, 0.03)]
    trainer = ReplicaTrainer(specs, [splits(s) for s in specs], xp,
                             [NullHooks() for _ in specs])
    # Then the data are held once, (n, d), not per replica
    assert trainer.shared and trainer.sets["train"][0].ndim == 2
    check(specs, xp)


# ------------------------------------------------------------- replicas that stop early
def test_a_diverging_replica_ends_alone_and_the_others_go_on(xp) -> None:
    # Given one replica whose learning rate makes it diverge
    specs = [make_spec(seed=0, optimizer={"name": "sgd", "lr": 0.1}),
             make_spec(seed=1, optimizer={"name": "sgd", "lr": 1e12}),
             make_spec(seed=2, optimizer={"name": "sgd", "lr": 0.05})]
    ends, hooks = together(specs, xp)
    singles = one_by_one(specs, xp)
    # Then it ends diverged, with the step, exactly as alone; the others are unaffected
    assert ends[1].outcome.status == "diverged" and "at step" in ends[1].outcome.error
    for end, h, (single, s_hooks) in zip(ends, hooks, singles, strict=True):
        assert_same_run(end.outcome, h, single, s_hooks)


class CancelAt(NullHooks):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.at = step

    def log(self, rows: list, progress: dict[str, Any]) -> bool:
        super().log(rows, progress)
        return progress["step"] >= self.at


class LoseLeaseAt(NullHooks):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.at = step

    def log(self, rows: list, progress: dict[str, Any]) -> bool:
        if progress["step"] >= self.at:
            raise RuntimeError("lease lost")
        return super().log(rows, progress)


def test_cancelled_and_lost_replicas_leave_the_batch_without_stopping_it(xp) -> None:
    specs = [make_spec(seed=i, optimizer={"name": "adam", "lr": 0.01}) for i in range(3)]
    # Given one replica cancelled at its second log and one whose lease is lost
    hooks = [CancelAt(8), NullHooks(), LoseLeaseAt(8)]
    ends, _ = together(specs, xp, hooks)
    # Then the cancelled one ends cancelled where a lone run would
    cancelled_alone = CancelAt(8)
    alone = Trainer(specs[0], splits(specs[0]), xp, cancelled_alone).run()
    assert ends[0].outcome.status == alone.status == "cancelled"
    assert_same_run(ends[0].outcome, hooks[0], alone, cancelled_alone)
    # And the lost one has no outcome, only its error
    assert ends[2].outcome is None and "lease lost" in str(ends[2].error)
    # And the third ran to its end as if alone
    single, s_hooks = one_by_one([specs[1]], xp)[0]
    assert_same_run(ends[1].outcome, hooks[1], single, s_hooks)


def test_a_replicas_checkpoint_resumes_alone(xp) -> None:
    # Given a batch whose replicas checkpoint every epoch
    specs = [make_spec(seed=i, optimizer={"name": "rmsprop", "lr": 0.01, "momentum": 0.5})
             for i in range(2)]
    ends, hooks = together(specs, xp)
    epoch, step, data = hooks[1].checkpoints[0]
    # When the second replica is resumed alone from its first checkpoint
    resumed_hooks = NullHooks()
    resumed = Trainer(specs[1], splits(specs[1]), xp, resumed_hooks).run(resume=data)
    # Then it ends as the batch (and a lone uninterrupted run) did
    assert resumed.extra.pop("resumed_from") == {"epoch": epoch, "step": step}
    assert resumed.final == pytest.approx(ends[1].outcome.final, rel=RTOL)
    for k, a in ends[1].outcome.arrays.items():
        np.testing.assert_allclose(resumed.arrays[k], a, rtol=RTOL, err_msg=k)


# -------------------------------------------------------------------- what batches
@pytest.mark.parametrize("change", [
    {"model": {"dropout": {"input": 0.0, "hidden": 0.2}}},
    {"regularization": {"early_stopping": {"metric": "val_loss", "patience": 2}}},
    {"training": {"diagnostics": ["grad_norm"]}},
    {"training": {"time_limit_s": 60}},
    {"optimizer": {"name": "lbfgs"}},
    {"model": {"kind": "kernel_svm"}},
])
def test_features_that_run_alone_have_no_batch_key(change: dict) -> None:
    assert batch_key(make_spec(**change)) is None


def test_specs_differing_beyond_seed_and_optimizer_do_not_batch() -> None:
    base = batch_key(make_spec())
    assert batch_key(make_spec(seed=5, optimizer={"name": "adam", "lr": 0.1})) == base
    assert batch_key(make_spec(training={"epochs": 4})) != base
    assert batch_key(make_spec(model={"hidden": [7]})) != base
    assert batch_key(make_spec(regularization={"clip_grad_norm": 1.0})) != base
    assert batch_key(make_spec(data={"standardize": False})) != base


def test_per_replica_settings_and_labels_do_not_stop_stacking() -> None:
    base = batch_key(make_spec())
    assert batch_key(make_spec(regularization={"l2": 0.1, "l1": 0.01})) == base
    assert batch_key(make_spec(model={"init": "he_normal", "bias_init": 0.1,
                                      "output_bias": "marginal"})) == base
    labelled = {**make_spec(), "_arm": "wide", "_arm_overrides": {"regularization.l2": 0.1},
                "_trial": 3, "_phase": "search"}
    assert batch_key(labelled) == base
    assert batch_key({**make_spec(), "_fold": [0, 5]}) != base  # a fold selects the data


def test_the_memory_limit_shrinks_with_the_model() -> None:
    small = make_spec()
    big = make_spec(model={"hidden": [4096, 4096]})
    data = splits(small)
    assert max_replicas(small, data, np) > max_replicas(big, data, np) >= 1
    assert max_replicas(small, data, np, cap=1) == 1


# ------------------------------------------------------------------ the scheduler
def _comparison(optimizers: list, seeds: int, **training: Any) -> dict[str, Any]:
    return {"kind": "compare", "dtype": "float64", "data": {"dataset": "iris"},
            "model": {"hidden": [5]},
            "training": {"epochs": 2, "batch_size": 32, **training},
            "compare": {"optimizers": optimizers, "seeds": seeds}}


def _store(raw: dict[str, Any]) -> list[str]:
    from gradq.service.store.db import ensure_schema, get_engine

    ensure_schema(get_engine())
    spec = validate(raw)
    return create.create_jobs(expand(spec), dataset=None, priority=0, max_attempts=3)


def _rows(sql: str, **params: Any) -> list[Any]:
    from gradq.service.store.db import get_engine

    with get_engine().connect() as c:
        return list(c.execute(sa.text(sql), params))


def test_claim_siblings_takes_matching_queued_children_each_with_its_own_lease() -> None:
    parent, first, *rest = _store(_comparison(["sgd", "adam"], 3))
    lead = leases.claim(first, "w1")
    # Given one sibling already taken by another worker
    taken = leases.claim(rest[0], "w2")
    # When w1 claims the sgd siblings of its child, at most one
    specs = {r.id: json.loads(r.spec) for r in _rows("select id, spec from jobs")}
    got = leases.claim_siblings(parent, "w1", lambda s: s["optimizer"]["name"] == "sgd", 1)
    # Then it gets one queued sgd child, with a lease of its own
    assert len(got) == 1 and got[0].job_id not in (first, rest[0])
    assert specs[got[0].job_id]["optimizer"]["name"] == "sgd"
    assert got[0].token == 1 and got[0].worker == "w1"
    assert lead is not None and taken is not None
    # And nothing is claimed twice, nor what the match refuses
    again = leases.claim_siblings(parent, "w3", lambda s: True, 10)
    assert {lease.job_id for lease in again}.isdisjoint({first, rest[0], got[0].job_id})
    assert leases.claim_siblings(parent, "w1", lambda s: True, 10) == []


def test_claim_siblings_skips_children_with_a_checkpoint() -> None:
    parent, first, second = _store(_comparison(["sgd"], 2))
    lease = leases.claim(second, "w0")
    writes.save_checkpoint(lease, 1, 5, b"x")
    writes.end_failed(lease, Failure.TRANSIENT, "transient")  # queued again, with its checkpoint
    leases.claim(first, "w1")
    assert leases.claim_siblings(parent, "w1", lambda s: True, 10) == []


def test_a_comparison_runs_as_one_batch_with_ordinary_children(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from gradq.workers.runner import execute

    monkeypatch.setenv("GRADQ_KEEP_CHECKPOINTS", "1")  # to see each replica's checkpoint

    raw = _comparison([{"name": "sgd", "lr": 0.1}, "adam", "momentum"], 2, log_every=2)
    # Given the same comparison stored twice
    batched = _store(raw)
    alone = _store(raw)
    # When the first child of one runs with batching, of the other each child alone
    assert execute(batched[1], worker="w") == "succeeded"
    for child in alone[1:]:
        assert execute(child, worker="w", batch=False) == "succeeded"
    # Then the first run took every sibling: all finished, the parent too
    assert create.queued_children(batched[0]) == []
    assert queries.result(batched[0])["status"] == "succeeded"
    # And each child's result, curves and model are those of its lone twin
    for b, a in zip(batched[1:], alone[1:], strict=True):
        rb, ra = queries.result(b), queries.result(a)
        assert rb["status"] == "succeeded" and rb["attempts"] == 1
        # trained in one stack of all six (a fallback to lone runs would say 1)
        assert (rb["timing"]["stacked"], ra["timing"]["stacked"]) == (6, 1)
        assert rb["final"] == pytest.approx(ra["final"], rel=RTOL)
        cb, ca = queries.curves(b)["metrics"], queries.curves(a)["metrics"]
        assert set(cb) == set(ca)
        for name in ca:
            assert cb[name]["step"] == ca[name]["step"]
            np.testing.assert_allclose(cb[name]["value"], ca[name]["value"], rtol=RTOL)
        assert len(_rows("select id from checkpoints where job_id = :j", j=b)) == 1
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_bug_in_the_batch_path_is_an_error_not_a_quiet_fallback(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from gradq.train import replicas
    from gradq.workers.runner import execute

    children = _store(_comparison(["sgd", "adam"], 2))[1:]

    # Given a deliberate bug in the stacked step
    def broken(self: Any, X: Any, y: Any) -> None:
        raise ZeroDivisionError("a bug in the batch path")

    monkeypatch.setattr(replicas.ReplicaTrainer, "step", broken)
    # When a child runs with batching
    assert execute(children[0], worker="w") == "succeeded"
    # Then the bug is logged as an error with its traceback, where a test sees it
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert errors and "batch of 4 replicas failed" in errors[0].getMessage()
    assert "ZeroDivisionError" in caplog.text
    # And every child still ran, alone (the result says so)
    for child in children:
        doc = queries.result(child)
        assert doc["status"] == "succeeded" and doc["timing"]["stacked"] == 1


def test_a_batch_set_up_bug_is_an_error_too(monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    from gradq.train import replicas
    from gradq.workers.runner import execute

    children = _store(_comparison(["sgd"], 2))[1:]
    monkeypatch.setattr(replicas, "max_replicas", lambda *a: 1 // 0)
    assert execute(children[0], worker="w") == "succeeded"
    assert any(r.levelname == "ERROR" and "setting up a batch failed" in r.getMessage()
               for r in caplog.records)


def test_arms_differing_in_penalties_and_initialisation_stack_and_match_lone_runs(xp
                                                                                  ) -> None:
    # Given arms that differ only in per-replica numeric settings, and labels
    arms = [{}, {"regularization": {"l2": 0.01}}, {"regularization": {"l1": 0.003}},
            {"regularization": {"l2": 0.02, "l1": 0.001}},
            {"model": {"init": "he_normal", "bias_init": 0.1}},
            {"model": {"init": "lsuv", "output_bias": "marginal"}}]
    specs = []
    for i, arm in enumerate(arms):
        spec = make_spec(seed=i % 2, optimizer={"name": "adam", "lr": 0.01}, **arm)
        specs.append({**spec, "_arm": f"arm{i}", "_arm_index": i, "_phase": "search",
                      "_trial": i, "_arm_overrides": arm})
    assert len({batch_key(s) for s in specs}) == 1
    # Then trained as one stack each gives its own lone run
    check(specs, xp)


def test_a_sibling_whose_lease_is_lost_is_dropped_and_the_others_finish() -> None:
    from gradq.workers.runner import execute

    parent, first, *rest = _store(_comparison(["sgd", "adam"], 2, epochs=6))
    victim = rest[0]
    seen: list[int] = []

    def observer(progress: dict[str, Any]) -> None:
        # after the first log interval, the sweeper hands the victim to someone else
        seen.append(progress["step"])
        if len(seen) == 2:
            from gradq.service.store.db import get_engine

            with get_engine().begin() as c:
                c.execute(sa.text("update jobs set status = 'queued', "
                                  "lease_token = lease_token + 1 where id = :j"), {"j": victim})

    # When the batch runs
    assert execute(first, worker="w", observer=observer) == "succeeded"
    # Then the victim was left alone, queued for its new holder, and the others finished
    status = {r.id: r.status for r in _rows("select id, status from jobs")}
    assert status[victim] == "queued"
    assert all(status[j] == "succeeded" for j in [first, *rest[1:]])
    # And when it runs again it succeeds on its own
    assert execute(victim, worker="w2") == "succeeded"
    assert queries.result(parent)["status"] == "succeeded"


def test_gradq_run_batches_the_readme_job_shape() -> None:
    from click.testing import CliRunner
    from gradq.cli.main import main

    spec = {**_comparison([{"name": "sgd", "lr": 0.1}, "adam"], 3), "name": "tiny"}
    import yaml

    path = __import__("pathlib").Path(__import__("tempfile").mkdtemp()) / "c.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = CliRunner().invoke(main, ["run", str(path), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert [a["n"] for a in report["arms"]] == [3, 3]
    children = [r.id for r in _rows("select id from jobs where parent_id is not null")]
    assert len(children) == 6
    assert [queries.result(c)["timing"]["stacked"] for c in children] == [6] * 6


# ------------------------------------------------------- the training loop's buffers
def test_reused_buffers_key_on_shape_and_dtype(xp) -> None:
    from gradq.nn.network import Architecture, Network, hvp, initial_parameters

    # Given a network whose training steps reuse buffers (float64 here)
    arch = Architecture(5, (7, 6), 3, ("relu", "tanh"), "softmax")
    net = Network(arch, dtype="float64", xp=xp)
    net.set_flat(initial_parameters(arch, np.random.default_rng(0)))
    rng = np.random.default_rng(1)
    X = xp.asarray(rng.normal(size=(11, 5)))
    y = xp.asarray(rng.integers(0, 3, 11))
    v = xp.asarray(rng.normal(size=net.size))
    before = hvp(net, X, y, v)
    # When steps on two batch shapes run, then the complex-step product again
    g1 = xp.zeros_like(net.params)
    loss1 = float(net.loss_and_grad(X, y, grads=g1))
    net.loss_and_grad(X[:4], y[:4], grads=xp.zeros_like(net.params))
    g2 = xp.zeros_like(net.params)
    loss2 = float(net.loss_and_grad(X, y, grads=g2))
    # Then every result is what a fresh computation gives
    np.testing.assert_allclose(to_np(hvp(net, X, y, v)), to_np(before), rtol=1e-12)
    assert loss1 == loss2
    np.testing.assert_array_equal(to_np(g1), to_np(g2))
    z, cache = net.forward(X, train=True)
    fresh = net.backward(cache, net.output.gradient(z, y), grads=xp.zeros_like(net.params))
    np.testing.assert_allclose(to_np(g1), to_np(fresh), rtol=1e-12)
    assert float(net.output.forward(z, y)) == pytest.approx(loss1, rel=1e-12)


def to_np(a: Any) -> np.ndarray:
    from gradq.nn.backend import to_numpy

    return to_numpy(a)
