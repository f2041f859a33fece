"""The optimizer registry (nn/registry.py, nn/entries.py): it holds every optimizer of
docs/optimizers.md, and a toy optimizer registered in a test goes through spec validation and trains
with no other change (docs/optimizers.md shows this toy as the smallest example)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from gradq.nn import fused, registry
from gradq.nn.datasets import load_builtin
from gradq.nn.optimizers import (
    FIRST_ORDER_DEFAULTS,
    Transform,
    apply_updates,
    chain,
    make_optimizer,
    scale_by_learning_rate,
)
from gradq.nn.second_order import DEFAULTS as SECOND_ORDER_DEFAULTS
from gradq.service.spec import FULL_BATCH_OPTIMIZERS, OPTIMIZERS, SpecError, validate
from gradq.train.trainer import Trainer
from gradq.workers.data import prepare_splits

# docs/optimizers.md's names and kinds, written out by hand (not read from the registry)
SPEC_5 = {
    "sgd": "first_order", "momentum": "first_order", "nesterov": "first_order",
    "adagrad": "first_order", "rmsprop": "first_order", "rmsprop_nesterov": "first_order",
    "adam": "first_order", "adadelta": "first_order", "delta_bar_delta": "first_order",
    "closed_form": "closed_form", "newton": "second_order", "cg_fr": "second_order",
    "cg_pr": "second_order", "bfgs": "second_order", "lbfgs": "second_order",
}
FULL_BATCH_5 = {"delta_bar_delta", "closed_form", "newton", "cg_fr", "cg_pr", "bfgs", "lbfgs"}


def test_the_registry_holds_every_optimizer_of_the_spec_reference() -> None:
    assert {e.name: e.kind for e in registry.all_entries()} == SPEC_5
    assert set(OPTIMIZERS) == set(SPEC_5) and set(FULL_BATCH_OPTIMIZERS) == FULL_BATCH_5
    for e in registry.all_entries():
        # a first-order entry builds its transform and its fused step; the others train
        # through train/methods.py and nn/second_order.py
        assert (e.transform is not None) == (e.fused is not None) == (e.kind == "first_order")
        for key in e.defaults:
            assert e.range_of(key).type in ("float", "int", "bool"), (e.name, key)
    assert set(FIRST_ORDER_DEFAULTS) == {n for n, k in SPEC_5.items() if k == "first_order"}
    assert set(SECOND_ORDER_DEFAULTS) == {n for n, k in SPEC_5.items() if k == "second_order"}


def test_registering_a_taken_name_or_a_hyperparameter_without_range_is_refused() -> None:
    with pytest.raises(ValueError, match="'adam' is already registered"):
        registry.register(registry.Optimizer("adam", "first_order", {"lr": 0.1}))
    with pytest.raises(ValueError, match="'zeta' has no range"):
        registry.register(registry.Optimizer("toy", "first_order", {"lr": 0.1, "zeta": 1.0}))
    assert "toy" not in OPTIMIZERS


# ---------------------------------------------------- a toy optimizer: sign descent
def scale_by_sign() -> Transform:
    """g ↦ sign(g) (signSGD, Bernstein et al. 2018); no state."""
    return Transform(lambda params: (), lambda g, state, params: (np.sign(g), state))


def _sign_sgd(h: dict[str, Any], sched: Any) -> Transform:
    return chain(scale_by_sign(), scale_by_learning_rate(h["lr"], sched))


def _sign_sgd_fused(h: dict[str, Any], sched: Any) -> Any:
    def step(g: Any, state: tuple, p: Any) -> tuple:
        sign_state, sc = state
        fused.launch("sign_sgd", g, h["lr"], p)
        return sign_state, sc._replace(count=sc.count + 1)
    return step


def _sign_sgd_rule(g: Any, lr: Any, p: Any) -> None:
    p -= lr * np.sign(g)  # θ ← θ − ε·sign(g)


SIGN_SGD_RULE = fused.Rule("T g, T lr", "T p", "p -= lr * ((g > 0) - (g < 0));",
                           _sign_sgd_rule)
SIGN_SGD = registry.Optimizer(
    "sign_sgd", "first_order", {"lr": 0.01, "decay": 0.0}, "signSGD: a step of lr along sign(g)",
    _sign_sgd, _sign_sgd_fused, schedule=False,
    ranges={"decay": registry.Range("float", 0, 1, hi_open=True, doc="unused here")})


@pytest.fixture
def sign_sgd(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setitem(fused.RULES, "sign_sgd", SIGN_SGD_RULE)
    registry.register(SIGN_SGD)
    yield "sign_sgd"
    registry.unregister("sign_sgd")


def test_a_registered_optimizer_goes_through_spec_validation(sign_sgd: str) -> None:
    # Given: the toy registered (one entry and its fused rule, nothing else)
    raw = {"data": {"dataset": "iris"}, "optimizer": {"name": sign_sgd, "lr": 0.05}}
    # When / Then: defaults filled from the entry, its own ranges and keys enforced
    assert validate(raw)["optimizer"] == {"name": "sign_sgd", "lr": 0.05, "decay": 0.0,
                                          "schedule": None}
    bad = [({"lr": -1}, "optimizer.lr: must be a number > 0, got -1"),
           ({"decay": 1.5}, "optimizer.decay: must be a number in [0, 1), got 1.5"),
           ({"momentum": 0.9}, "optimizer.momentum: unknown hyperparameter for sign_sgd; "
                               "known: lr, decay"),
           ({"schedule": {"final_lr": 0, "steps": 3}},
            "optimizer.schedule: sign_sgd adapts its own rates: it takes no schedule")]
    for hyper, message in bad:
        with pytest.raises(SpecError) as e:
            validate({**raw, "optimizer": {"name": sign_sgd, **hyper}})
        assert str(e.value) == message
    compare = validate({**raw, "kind": "compare",
                        "compare": {"optimizers": [{"name": sign_sgd, "lr": [0.1, 0.01]}],
                                    "seeds": 2}})
    assert compare["compare"]["optimizers"] == [{"name": "sign_sgd", "lr": [0.1, 0.01]}]


def test_a_registered_optimizer_trains_through_the_trainer(sign_sgd: str) -> None:
    # Given: a tiny network on iris with the toy optimizer
    spec = validate({"seed": 3, "dtype": "float64", "data": {"dataset": "iris"},
                     "model": {"hidden": [8], "activation": "tanh"},
                     "optimizer": {"name": sign_sgd, "lr": 0.01},
                     "training": {"epochs": 5, "batch_size": 32, "log_every": 1}})
    tr = Trainer(spec, prepare_splits(spec, load_builtin("iris")), np)
    # When
    outcome = tr.run()
    # Then: it ran to the end, through the fused step, and lowered the training loss
    assert outcome.status == "succeeded", outcome.error
    assert tr.stepper.transform.fused is not None
    rows = sorted((r for r in tr.hooks.rows if r[0] == "train_loss"), key=lambda r: r[1])
    losses = [r[4] for r in rows]
    assert len(losses) >= 5 and losses[-1] < losses[0], losses


def test_the_toy_fused_step_matches_its_generic_transform(sign_sgd: str) -> None:
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(7) for _ in range(3)]
    fast = make_optimizer(sign_sgd, {"lr": 0.1})
    slow = fast._replace(fused=None)
    p1, p2 = np.ones(7), np.ones(7)
    s1, s2 = fast.init(p1), slow.init(p2)
    for g in grads:
        s1, s2 = apply_updates(fast, g, s1, p1), apply_updates(slow, g, s2, p2)
    assert fast.fused is not None
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_allclose(p1, 1 - 0.1 * sum(np.sign(g) for g in grads))
