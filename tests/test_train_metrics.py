"""``training.train_metrics`` (issue 12): ``full`` passes over the training part at each log
point; ``running`` averages the minibatch losses of the interval with no second pass.

The oracle for ``running`` is ``full`` itself: with the full batch, the minibatch of step k
*is* the training set at the parameters after step k − 1, so the running value logged at
step k equals the full value logged at step k − 1 (no dropout or batch norm here, so the
training and inference passes agree).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gradq.nn.datasets import load_builtin
from gradq.service.spec import validate
from gradq.train.interface import NullHooks
from gradq.train.replicas import ReplicaTrainer
from gradq.train.trainer import Trainer
from gradq.workers.data import prepare_splits


def spec(**training: Any) -> dict[str, Any]:
    return validate({"data": {"dataset": "iris"}, "dtype": "float64", "seed": 1,
                     "model": {"hidden": [6]}, "optimizer": {"name": "adam", "lr": 0.02},
                     "training": {"epochs": 6, "batch_size": 16, **training}})


def curve(hooks: NullHooks, name: str) -> list[tuple[int, float]]:
    return [(r[1], r[4]) for r in hooks.rows if r[0] == name]


def run(s: dict[str, Any], resume: bytes | None = None) -> tuple[Any, NullHooks]:
    hooks = NullHooks()
    out = Trainer(s, prepare_splits(s, load_builtin("iris")), np, hooks).run(resume)
    return out, hooks


@pytest.mark.parametrize("metric", ["train_loss", "train_accuracy"])
def test_running_at_step_k_is_the_full_pass_at_step_k_minus_1(metric: str) -> None:
    _, full = run(spec(batch_size="full", log_every=1, train_metrics="full"))
    _, running = run(spec(batch_size="full", log_every=1, train_metrics="running"))
    f, r = curve(full, metric), curve(running, metric)
    assert [s for s, _ in f] == [s for s, _ in r] == list(range(7))
    assert r[0][1] == pytest.approx(f[0][1], rel=1e-12)  # step 0 is always a full pass
    np.testing.assert_allclose([v for _, v in r[1:]], [v for _, v in f[:-1]], rtol=1e-10)
    # and the held-out parts are measured alike in both modes
    np.testing.assert_allclose([v for _, v in curve(running, "test_loss")],
                               [v for _, v in curve(full, "test_loss")], rtol=1e-12)


def test_running_is_the_row_weighted_mean_of_the_interval() -> None:
    # 90 rows in batches of 16: per epoch five minibatches of 16 rows and one of 10
    _, per_step = run(spec(log_every=1, train_metrics="running"))
    _, per_epoch = run(spec(log_every="epoch", train_metrics="running"))
    losses = np.array([v for _, v in curve(per_step, "train_loss")][1:]).reshape(6, 6)
    rows = np.array([16, 16, 16, 16, 16, 10])
    want = losses @ rows / rows.sum()  # each epoch's minibatch losses, weighted by rows
    got = [v for _, v in curve(per_epoch, "train_loss")][1:]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_a_running_run_resumed_from_a_checkpoint_logs_what_an_uninterrupted_one_does(
        ) -> None:
    # log points every 4 steps do not fall on the epochs' ends (6 steps each)
    s = spec(log_every=4, train_metrics="running")
    whole, whole_hooks = run(s)
    epoch, step, data = whole_hooks.checkpoints[1]
    resumed, resumed_hooks = run(s, resume=data)
    later = [(n, st, v) for n, st, _, _, v in whole_hooks.rows if st > step]
    again = [(n, st, v) for n, st, _, _, v in resumed_hooks.rows]
    assert [r[:2] for r in again] == [r[:2] for r in later]
    np.testing.assert_allclose([r[2] for r in again], [r[2] for r in later], rtol=1e-12)
    assert resumed.final == pytest.approx(whole.final, rel=1e-12)


def test_stacked_replicas_report_the_running_metrics_of_their_lone_runs() -> None:
    specs = [{**spec(train_metrics="running", log_every=3), "seed": k} for k in range(3)]
    datas = [prepare_splits(s, load_builtin("iris")) for s in specs]
    hooks = [NullHooks() for _ in specs]
    ends = ReplicaTrainer(specs, datas, np, hooks).run()
    for s, end, h in zip(specs, ends, hooks, strict=True):
        alone, alone_hooks = run(s)
        assert end.outcome.final == pytest.approx(alone.final, rel=1e-9)
        assert [r[:2] for r in h.rows] == [r[:2] for r in alone_hooks.rows]
        np.testing.assert_allclose([r[4] for r in h.rows], [r[4] for r in alone_hooks.rows],
                                   rtol=1e-9)


def test_the_key_is_validated() -> None:
    from gradq.service.spec import SpecError

    with pytest.raises(SpecError, match="training.train_metrics"):
        spec(train_metrics="sometimes")
