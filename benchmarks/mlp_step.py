"""Time per training step: gradq against PyTorch eager (and torch.compile on a GPU).

An MLP 784-128-128-10, ReLU, softmax cross-entropy, Adam (lr 1e-3), minibatches of 128,
float32, the data resident on the device and minibatches gathered there by index. gradq's
side is its real step — the trainer's ``FirstOrderStepper.step`` (forward, backward,
penalties, the optimizer's update) — not a hand-optimised copy. Targets (issue 7): CPU
≤ 0.8× PyTorch eager's time; GPU ≤ 0.8× eager.

    python benchmarks/mlp_step.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import math
from typing import Any

import _common
import numpy as np

SIZES = (784, 128, 128, 10)
BATCH = 128


def gradq_side(xp: Any, X: np.ndarray, y: np.ndarray, steps: int) -> dict[str, Any]:
    from gradq.nn import optimizers as first_order
    from gradq.nn.preprocess import Splits
    from gradq.service.spec import validate
    from gradq.train.trainer import Trainer, make_stepper

    spec = validate({"data": {"dataset": "digits", "validation": 0.0, "test": 0.0},
                     "dtype": "float32", "seed": 0,
                     "model": {"hidden": list(SIZES[1:-1]), "activation": "relu"},
                     "optimizer": {"name": "adam", "lr": 1e-3},
                     "training": {"batch_size": BATCH}})
    empty = np.zeros((0, X.shape[1]), np.float32)
    data = Splits(X, y, empty, y[:0], empty, y[:0], "classification", SIZES[-1])
    tr = Trainer(spec, data, xp)
    tr.stepper = make_stepper(tr)
    tr.net.set_flat(tr.initial_params())
    box = {"state": tr.stepper.init()}
    Xd, yd = tr.sets["train"]  # on the device, as the trainer holds them
    perm = xp.asarray(np.random.default_rng(0).permutation(len(X)))
    per_epoch = len(X) // BATCH

    def batch(b: int) -> tuple[Any, Any]:
        idx = perm[(b % per_epoch) * BATCH:(b % per_epoch + 1) * BATCH]
        return Xd[idx], yd[idx]

    def step() -> None:
        for b in range(steps):
            Xb, yb = batch(b)
            box["state"] = tr.stepper.step(Xb, yb, None, box["state"])
        _common.sync(xp)

    def forward_backward() -> None:
        for b in range(steps):
            Xb, yb = batch(b)
            tr.objective_and_grad(Xb, yb, update_running=True)
        _common.sync(xp)

    def update() -> None:
        for _ in range(steps):
            box["state"] = first_order.apply_updates(tr.stepper.transform, tr.net.grads,
                                                     box["state"], tr.net.params)
        _common.sync(xp)

    def loss() -> float:
        z, _ = tr.net.forward(Xd[:1024])
        return float(tr.net.output.forward(z, yd[:1024]))

    return {"step": step, "forward_backward": forward_backward, "update": update,
            "loss": loss, "params": tr.net.size}


def torch_side(device: str, X: np.ndarray, y: np.ndarray, steps: int, compiled: bool
               ) -> dict[str, Any]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(SIZES, SIZES[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(SIZES) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if compiled else model
    Xt = torch.from_numpy(X).to(device)
    yt = torch.from_numpy(y.astype(np.int64)).to(device)
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(X))).to(device)
    per_epoch = len(X) // BATCH
    lossf = nn.CrossEntropyLoss()

    def step() -> None:
        for b in range(steps):
            idx = perm[(b % per_epoch) * BATCH:(b % per_epoch + 1) * BATCH]
            opt.zero_grad(set_to_none=True)
            lossf(forward(Xt[idx]), yt[idx]).backward()
            opt.step()
        _common.torch_sync(device)

    def forward_backward() -> None:
        for b in range(steps):
            idx = perm[(b % per_epoch) * BATCH:(b % per_epoch + 1) * BATCH]
            opt.zero_grad(set_to_none=True)
            lossf(forward(Xt[idx]), yt[idx]).backward()
        _common.torch_sync(device)

    def update() -> None:
        for _ in range(steps):
            opt.step()
        _common.torch_sync(device)

    def loss() -> float:
        with torch.no_grad():
            return float(lossf(model(Xt[:1024]), yt[:1024]))

    return {"step": step, "forward_backward": forward_backward, "update": update,
            "loss": loss}


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    _common.set_threads(args.threads)
    xp = _common.array_module(args.device)
    device = _common.torch_device(xp)
    n = 1024 if args.quick else 16384
    steps = 4 if args.quick else 64  # steps per timed repetition
    repeats = args.repeats or (3 if args.quick else 21)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, SIZES[0])).astype(np.float32)
    y = (X @ rng.standard_normal((SIZES[0], SIZES[-1]))).argmax(axis=1)  # a linear teacher

    g = gradq_side(xp, X, y, steps)
    t = torch_side(device, X, y, steps, compiled=False)
    sides = {"gradq": g["step"], "torch_eager": t["step"]}
    compile_error = None
    if device == "cuda":
        try:  # compiling needs a working Triton toolchain; without it, report eager only
            compiled = torch_side(device, X, y, steps, compiled=True)["step"]
            compiled()
            sides["torch_compile"] = compiled
        except Exception as exc:
            compile_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    loss_before = {"gradq": g["loss"](), "torch": t["loss"]()}
    timing = _common.interleaved(sides, repeats, warmup=3)
    parts = _common.interleaved({"gradq_forward_backward": g["forward_backward"],
                                 "torch_forward_backward": t["forward_backward"],
                                 "gradq_update": g["update"], "torch_update": t["update"]},
                                max(3, repeats // 2), warmup=1)
    per_step = {k: v["median_s"] / steps * 1e6 for k, v in timing.items()}
    ratio = per_step["gradq"] / per_step["torch_eager"]
    doc: dict[str, Any] = {
        "benchmark": "mlp_step", "quick": args.quick, "device": device,
        "machine": _common.machine(xp),
        "model": {"sizes": SIZES, "activation": "relu", "loss": "softmax cross-entropy",
                  "optimizer": "adam", "batch": BATCH, "dtype": "float32",
                  "params": g["params"], "resident_samples": n},
        "steps_per_repetition": steps, "repeats": repeats,
        "us_per_step": {k: round(v, 1) for k, v in per_step.items()},
        "breakdown_us_per_step": {k: round(v["median_s"] / steps * 1e6, 1)
                                  for k, v in parts.items()},
        "ratio_gradq_over_torch_eager": round(ratio, 3),
        "target": "<= 0.8x torch eager", "verdict": _common.verdict(ratio, 0.8),
        "loss_at_start": loss_before, "timing": timing,
        "sane": all(abs(v - math.log(10)) < 1.0 for v in loss_before.values()),
    }
    if "torch_compile" in per_step:
        doc["ratio_gradq_over_torch_compile"] = round(per_step["gradq"]
                                                      / per_step["torch_compile"], 3)
    if compile_error:
        doc["torch_compile_error"] = compile_error
    _common.report("mlp_step", doc, args.tag)


if __name__ == "__main__":
    main()
