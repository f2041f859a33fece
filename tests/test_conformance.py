"""Step-by-step conformance of the first-order optimizers with ``torch.optim``, through the CLI.

Each case writes a spec, runs ``gradq run SPEC --json`` and reads ``gradq curves JOB --json``
(click's CliRunner, in process), then replays the same problem in torch: the training part
of gradq's split and standardization (``nn.preprocess.prepare``), a zero-initialised linear
model with a logistic, softmax or linear output in float64, full batch, and the same
optimizer. ``train_loss`` at every step (step 0 is the loss before the first update) must
equal torch's to 1e-7 relative (docs/optimizers.md, docs/results.md). The L2/L1 penalty, over
weights only, is added
to torch's loss explicitly (``weight_decay`` would also decay the bias); ``train_loss`` is
the data loss without it.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from gradq.cli.main import main
from gradq.nn.datasets import load_builtin
from gradq.nn.preprocess import prepare

# torch is a test dependency (pyproject's ``test`` extra): a laptop without it skips this
# reference suite, but under CI=true a missing torch fails instead of passing silently
torch = (importlib.import_module("torch") if os.environ.get("CI") == "true"
         else pytest.importorskip("torch"))

STEPS = 25
REL_TOL = 1e-7
SPLIT = {"validation": 0.2, "test": 0.2}
SEED = 0

# model → (dataset, output unit, learning-rate scales for gradient-sized and for adaptive
# steps): diabetes' targets are ~150, so its squared-error gradients are ~100× a
# classifier's (smaller rates for sgd and momentum), while adaptive methods step ~lr per
# update whatever the gradient's size (larger rates, to travel the ~150 to the minimum).
MODELS = {
    "logistic": ("breast_cancer", "sigmoid", (1.0, 1.0)),
    "softmax": ("wine", "softmax", (1.0, 1.0)),
    "least_squares": ("diabetes", "linear", (0.1, 20.0)),
}
ADAPTIVE = {"adagrad", "rmsprop", "adam", "adadelta"}

SCHEDULE = {"kind": "linear", "final_lr": 0.01, "steps": 10}  # τ inside the run: both regimes

# case → (gradq optimizer mapping, regularization); lr is multiplied by the model's scale.
CASES: dict[str, tuple[dict[str, Any], dict[str, float]]] = {
    "sgd": ({"name": "sgd", "lr": 0.1}, {}),
    "sgd_linear_schedule": ({"name": "sgd", "lr": 0.2, "schedule": SCHEDULE}, {}),
    "momentum": ({"name": "momentum", "lr": 0.05, "momentum": 0.9}, {}),
    "momentum_l2": ({"name": "momentum", "lr": 0.05, "momentum": 0.8}, {"l2": 0.1}),
    "nesterov": ({"name": "nesterov", "lr": 0.05, "momentum": 0.9}, {}),
    "adagrad": ({"name": "adagrad", "lr": 0.5}, {}),
    "rmsprop": ({"name": "rmsprop", "lr": 0.01}, {}),
    "rmsprop_momentum": ({"name": "rmsprop", "lr": 0.005, "momentum": 0.8}, {}),
    "rmsprop_centered": ({"name": "rmsprop", "lr": 0.01, "centered": True}, {}),
    "adam": ({"name": "adam", "lr": 0.05}, {}),
    "adam_amsgrad_l2_l1": ({"name": "adam", "lr": 0.05, "beta2": 0.99, "amsgrad": True},
                           {"l2": 0.05, "l1": 0.01}),
    "adadelta": ({"name": "adadelta", "lr": 1.0, "rho": 0.9, "eps": 1e-6}, {}),
}


def test_cases_cover_every_torch_optimizer() -> None:
    """Every first-order optimizer of docs/optimizers.md that torch.optim has is under test."""
    from gradq.nn.optimizers import FIRST_ORDER_DEFAULTS

    not_in_torch = {"rmsprop_nesterov", "delta_bar_delta"}  # tested in test_optimizers.py
    assert {opt["name"] for opt, _ in CASES.values()} == set(FIRST_ORDER_DEFAULTS) - not_in_torch


# ------------------------------------------------------------------------------- torch side
@functools.cache
def training_part(model: str) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of the training part exactly as gradq's worker prepares it."""
    dataset, _, _ = MODELS[model]
    ds = load_builtin(dataset)
    splits = prepare(ds.X, ds.y, ds.task, seed=SEED, standardize=True, **SPLIT)
    return splits.X_train.astype(np.float64), splits.y_train


def torch_optimizer(opt: dict[str, Any], params: list[Any]) -> tuple[Any, Any]:
    """The torch.optim twin of a gradq optimizer mapping, and its LR scheduler (or None)."""
    o = torch.optim
    name, lr = opt["name"], opt["lr"]
    if name == "sgd":
        optimizer = o.SGD(params, lr=lr)
    elif name in ("momentum", "nesterov"):
        optimizer = o.SGD(params, lr=lr, momentum=opt["momentum"], nesterov=name == "nesterov")
    elif name == "adagrad":
        optimizer = o.Adagrad(params, lr=lr, eps=opt.get("eps", 1e-10))
    elif name == "rmsprop":
        optimizer = o.RMSprop(params, lr=lr, alpha=opt.get("alpha", 0.99),
                              eps=opt.get("eps", 1e-8), momentum=opt.get("momentum", 0.0),
                              centered=opt.get("centered", False))
    elif name == "adam":
        optimizer = o.Adam(params, lr=lr, betas=(opt.get("beta1", 0.9), opt.get("beta2", 0.999)),
                           eps=opt.get("eps", 1e-8), amsgrad=opt.get("amsgrad", False))
    elif name == "adadelta":
        optimizer = o.Adadelta(params, lr=lr, rho=opt["rho"], eps=opt["eps"])
    else:
        raise AssertionError(f"no torch twin for {name}")
    schedule = opt.get("schedule")
    if not schedule:
        return optimizer, None
    # ε_k = (1 − k/τ)·ε_0 + (k/τ)·ε_τ for k ≤ τ, then ε_τ, where k counts the updates already
    # applied (gradq's scale_by_learning_rate): update k uses ε_k, and LambdaLR's factor for
    # its k-th scheduler.step() is applied to the (k+1)-th update, as here.
    tau, final = schedule["steps"], schedule["final_lr"]

    def factor(k: int) -> float:
        frac = min(k / tau, 1.0)
        return ((1 - frac) * lr + frac * final) / lr

    return optimizer, o.lr_scheduler.LambdaLR(optimizer, factor)


def torch_losses(model: str, opt: dict[str, Any], reg: dict[str, float]) -> np.ndarray:
    """train_loss at steps 0..STEPS of the same run in torch (float64, zero init)."""
    X_np, y_np = training_part(model)
    _, output, _ = MODELS[model]
    X = torch.from_numpy(X_np)
    n_out = int(y_np.max()) + 1 if output == "softmax" else 1
    W = torch.zeros((X.shape[1], n_out), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_out, dtype=torch.float64, requires_grad=True)
    if output == "softmax":
        y = torch.from_numpy(y_np.astype(np.int64))
    else:
        y = torch.from_numpy(y_np.astype(np.float64)).reshape(-1, 1)

    def data_loss() -> Any:
        z = X @ W + b
        if output == "softmax":
            return torch.nn.functional.cross_entropy(z, y)  # mean −log p(y|x), in nats
        if output == "sigmoid":
            return torch.nn.functional.binary_cross_entropy_with_logits(z, y)
        return ((z - y) ** 2).sum(dim=1).mean()  # Σ over outputs, mean over samples, no ½

    optimizer, scheduler = torch_optimizer(opt, [W, b])
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small only lose time to threads
    try:
        for step in range(STEPS + 1):
            loss = data_loss()
            losses.append(loss.item())
            if step == STEPS:
                break
            objective = loss
            if reg.get("l2"):
                objective = objective + 0.5 * reg["l2"] * (W * W).sum()  # weights only
            if reg.get("l1"):
                objective = objective + reg["l1"] * W.abs().sum()
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
    finally:
        torch.set_num_threads(threads)
    return np.array(losses)


# -------------------------------------------------------------------------------- gradq side
def gradq_losses(tmp_path: Path, model: str, opt: dict[str, Any], reg: dict[str, float]
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """train_loss at steps 0..STEPS from ``gradq run`` and ``gradq curves`` (CLI, --json)."""
    dataset, output, _ = MODELS[model]
    spec = {
        "seed": SEED,
        "dtype": "float64",
        "data": {"dataset": dataset, **SPLIT, "standardize": True},
        "model": {"hidden": [], "init": "zeros", "output": output},
        "regularization": {"l2": 0.0, "l1": 0.0, **reg},
        "optimizer": opt,
        "training": {"epochs": STEPS, "batch_size": "full", "log_every": 1,
                     "checkpoint_every": STEPS},  # no checkpoints: they only cost time here
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    runner = CliRunner()
    run = runner.invoke(main, ["run", str(path), "--json"])
    assert run.exit_code == 0, run.output
    result = json.loads(run.stdout)
    assert result["status"] == "succeeded", result
    curves = runner.invoke(main, ["curves", result["id"], "--json", "--metric", "train_loss"])
    assert curves.exit_code == 0, curves.output
    curve = json.loads(curves.stdout)["metrics"]["train_loss"]
    assert curve["step"] == list(range(STEPS + 1))
    return np.array(curve["value"], dtype=np.float64), result


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("case", list(CASES))
def test_train_loss_matches_torch_at_every_step(tmp_path: Path, case: str, model: str) -> None:
    # Given: one optimizer on one zero-initialised model, scaled to the model's gradients
    opt, reg = CASES[case]
    scale = MODELS[model][2][opt["name"] in ADAPTIVE]
    opt = {**opt, "lr": opt["lr"] * scale}
    # When: gradq runs it through the CLI, and torch replays it
    ours, result = gradq_losses(tmp_path, model, opt, reg)
    theirs = torch_losses(model, opt, reg)
    # Then: the loss curves agree at every step, and the optimizer did move the loss
    np.testing.assert_allclose(ours, theirs, rtol=REL_TOL, atol=0)
    assert ours[-1] < ours[0]
    assert result["final"]["steps"] == STEPS
