"""Achieved FLOP/s of gradq's training step on a large MLP, against the hardware's limit.

CPU: 1024-1024-1024-10 at batch 512, against this machine's large single-precision matrix
product (2048³ float32, the same BLAS, the same threads): target ≥ 80%. GPU: 1024-4096-
4096-10 at batch 1024, against the card's FP32 peak (non-tensor: H100 SXM and H200 67
TFLOP/s, H100 PCIe 51 TFLOP/s): target ≥ 60%; the card's own large sgemm is reported too.

Two counts of a step's work (:func:`flop_counts`):

- model FLOPs: 6 × parameters × batch (forward 2, backward 4), the usual convention;
- hardware FLOPs: the work the step does. The matrix products: forward and ∂L/∂W for
  every layer, ∂L/∂input for every layer but the first (nothing needs the gradient of the
  data, so gradq skips it); plus the bias adds and sums. On 1024-1024-1024-10 that is 83%
  of the model count, so the fraction of the hardware's limit on model FLOPs flatters the
  step; the targets are on hardware FLOPs.

Beside the large matmul, the same products at the step's own shapes, run bare back to
back (``products``), show what BLAS gives at those shapes: the step cannot beat it, and
the gap between the two is gradq's own overhead. The step is the trainer's own
(``FirstOrderStepper.step``) with plain SGD, so that the optimizer's elementwise pass stays
small beside the products it times. CuPy uses TF32 tensor cores for float32 products only
with ``CUPY_TF32=1``: the figures say which mode ran.

    python benchmarks/flops.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import os
from typing import Any

import _common
import numpy as np

CPU_CASE = {"sizes": (1024, 1024, 1024, 10), "batch": 512}
GPU_CASE = {"sizes": (1024, 4096, 4096, 10), "batch": 1024}
QUICK_CASE = {"sizes": (64, 64, 64, 10), "batch": 64}
PEAK_FP32_TFLOPS = {"H100 PCIe": 51.2, "H100": 67.0, "H200": 67.0, "A100": 19.5,
                    "L40S": 91.6, "L4": 30.3}


def peak_tflops(name: str) -> float | None:
    """The card's FP32 (non-tensor) peak, looked up by its name; None if unknown."""
    for key in sorted(PEAK_FP32_TFLOPS, key=len, reverse=True):  # "H100 PCIe" first
        if all(part in name for part in key.split()):
            return PEAK_FP32_TFLOPS[key]
    return None


def flop_counts(sizes: tuple[int, ...], batch: int) -> dict[str, int]:
    """FLOPs of one training step of an MLP with layer widths ``sizes`` on ``batch`` rows.

    ``model``: 6·N·batch for N parameters (weights and biases). ``hardware``: the products
    gradq runs, 2·batch·fan_in·fan_out each — forward, ∂W, and ∂input except for the first
    layer — plus one FLOP per bias and row forward (the add) and backward (the sum).
    Elementwise activations and the optimizer's update are in neither count.
    """
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    params = sum(i * o + o for i, o in pairs)
    products = sum(2 * batch * i * o * (2 if k == 0 else 3) for k, (i, o) in enumerate(pairs))
    biases = sum(2 * batch * o for _, o in pairs)
    return {"model": 6 * params * batch, "hardware": products + biases, "params": params}


def products_side(xp: Any, sizes: tuple[int, ...], batch: int, steps: int) -> Any:
    """The step's matrix products alone, at its shapes, into preallocated outputs."""
    rng = np.random.default_rng(3)
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))

    def arr(*shape: int) -> Any:
        return xp.asarray(rng.standard_normal(shape), dtype=xp.float32)

    acts = [arr(batch, i) for i, _ in pairs]  # each layer's input
    weights = [arr(i, o) for i, o in pairs]
    deltas = [arr(batch, o) for _, o in pairs]  # ∂L/∂z of each layer
    outs = [xp.empty((batch, o), dtype=xp.float32) for _, o in pairs]
    grads = [xp.empty((i, o), dtype=xp.float32) for i, o in pairs]
    backs = [xp.empty((batch, i), dtype=xp.float32) for i, _ in pairs]

    def run() -> None:
        for _ in range(steps):
            for a, w, z in zip(acts, weights, outs, strict=True):
                xp.matmul(a, w, out=z)
            for k in reversed(range(len(pairs))):
                xp.matmul(acts[k].T, deltas[k], out=grads[k])
                if k:
                    xp.matmul(deltas[k], weights[k].T, out=backs[k])
        _common.sync(xp)

    return run


def step_side(xp: Any, sizes: tuple[int, ...], batch: int, steps: int) -> dict[str, Any]:
    from gradq.nn.preprocess import Splits
    from gradq.service.spec import validate
    from gradq.train.trainer import Trainer, make_stepper

    rng = np.random.default_rng(0)
    n = batch * 8
    X = rng.standard_normal((n, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], n)
    spec = validate({"data": {"dataset": "digits", "validation": 0.0, "test": 0.0},
                     "dtype": "float32", "model": {"hidden": list(sizes[1:-1])},
                     "optimizer": {"name": "sgd", "lr": 1e-3},
                     "training": {"batch_size": batch}})
    empty = np.zeros((0, sizes[0]), np.float32)
    tr = Trainer(spec, Splits(X, y, empty, y[:0], empty, y[:0], "classification",
                              sizes[-1]), xp)
    tr.stepper = make_stepper(tr)
    tr.net.set_flat(tr.initial_params())
    box = {"state": tr.stepper.init()}
    Xd, yd = tr.sets["train"]
    perm = xp.asarray(rng.permutation(n))

    def run() -> None:
        for b in range(steps):
            idx = perm[(b % 8) * batch:(b % 8 + 1) * batch]
            box["state"] = tr.stepper.step(Xd[idx], yd[idx], None, box["state"])
        _common.sync(xp)

    return {"run": run, "params": tr.net.size}


def matmul_side(xp: Any, n: int, reps: int) -> Any:
    a = xp.asarray(np.random.default_rng(1).standard_normal((n, n)), dtype=xp.float32)
    b = xp.asarray(np.random.default_rng(2).standard_normal((n, n)), dtype=xp.float32)
    out = xp.empty((n, n), dtype=xp.float32)

    def run() -> None:
        for _ in range(reps):
            xp.matmul(a, b, out=out)
        _common.sync(xp)

    return run


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    _common.set_threads(args.threads)
    xp = _common.array_module(args.device)
    gpu = _common.on_gpu(xp)
    case = QUICK_CASE if args.quick else (GPU_CASE if gpu else CPU_CASE)
    sizes, batch = case["sizes"], case["batch"]
    steps = 2 if args.quick else (20 if gpu else 4)
    repeats = args.repeats or (3 if args.quick else 11)
    mm_n = 256 if args.quick else (8192 if gpu else 2048)
    mm_reps = 2 if args.quick else (3 if gpu else 2)

    g = step_side(xp, sizes, batch, steps)
    timing = _common.interleaved({"gradq_step": g["run"],
                                  "products": products_side(xp, sizes, batch, steps),
                                  "matmul": matmul_side(xp, mm_n, mm_reps)}, repeats)
    flops = flop_counts(sizes, batch)
    assert flops["params"] == g["params"], (flops["params"], g["params"])
    step_s = timing["gradq_step"]["median_s"] / steps
    model = flops["model"] / step_s
    hardware = flops["hardware"] / step_s
    products = flops["hardware"] / (timing["products"]["median_s"] / steps)
    matmul = 2 * mm_n**3 * mm_reps / timing["matmul"]["median_s"]
    info = _common.machine(xp)
    doc: dict[str, Any] = {
        "benchmark": "flops", "quick": args.quick, "device": "cuda" if gpu else "cpu",
        "machine": info,
        "model": {"sizes": sizes, "batch": batch, "params": g["params"], "dtype": "float32",
                  "optimizer": "sgd", "flop_per_step": flops["model"],
                  "hardware_flop_per_step": flops["hardware"],
                  "hardware_over_model": round(flops["hardware"] / flops["model"], 4)},
        "step_ms": round(step_s * 1e3, 3),
        "achieved_gflops": round(model / 1e9, 1),  # model FLOPs (6N), as before
        "achieved_hardware_gflops": round(hardware / 1e9, 1),
        "products_alone_gflops": round(products / 1e9, 1),
        "large_matmul": {"n": mm_n, "gflops": round(matmul / 1e9, 1)},
        "fraction_of_large_matmul": round(model / matmul, 3),
        "hardware_fraction_of_large_matmul": round(hardware / matmul, 3),
        "hardware_fraction_of_products_alone": round(hardware / products, 3),
        "timing": timing,
    }
    if gpu:
        peak = peak_tflops(info.get("gpu", ""))
        doc["tf32"] = os.environ.get("CUPY_TF32", "0") == "1"
        doc["peak_fp32_tflops"] = peak
        if peak:
            doc["fraction_of_peak"] = round(model / (peak * 1e12), 3)
            frac = hardware / (peak * 1e12)
            doc["hardware_fraction_of_peak"] = round(frac, 3)
            doc["target"] = ">= 0.60 of the FP32 peak, in hardware FLOPs"
            doc["verdict"] = _common.verdict(frac, 0.6, lower_is_better=False)
    else:
        doc["target"] = ">= 0.80 of the large matmul, in hardware FLOPs"
        doc["verdict"] = _common.verdict(hardware / matmul, 0.8, lower_is_better=False)
    _common.report("flops", doc, args.tag)


if __name__ == "__main__":
    main()
