"""A comparison in one pass: gradq's batched replicas against a loop of PyTorch runs.

An MLP 784-256-256-10 (ReLU, softmax cross-entropy, float32, minibatches of 128) trained
for one epoch of synthetic data by six optimizers (sgd, momentum, nesterov, adagrad,
rmsprop, adam; torch's defaults) × 10 seeds: 60 runs. gradq trains the 60 children of the
comparison as stacked replicas (``workers.replicas.ReplicaTrainer``: one forward/backward
for all of them, one update per optimizer group), in as few batches as its memory limit
allows; the reference trains the 60 runs one after another with ``torch.optim``. Each run
evaluates its training loss before and after the epoch, on both sides. Target (issue 7):
≤ 0.1× the loop's time on a GPU; the CPU figure is reported too, on fewer samples by
default (``--samples``), which the output states.

What is timed is training (data already on the device, no database): the scheduler's
bookkeeping per child is what ``queue_latency.py`` measures.

    python benchmarks/sweep.py [--quick] [--device cpu|cuda] [--samples N]
"""

from __future__ import annotations

from typing import Any

import _common
import numpy as np

SIZES = (784, 256, 256, 10)
BATCH = 128
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
SEEDS = 10


def data(n: int, d: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (X @ rng.standard_normal((d, k))).argmax(axis=1)  # a linear teacher
    return X, y


def children(sizes: tuple[int, ...], seeds: int) -> list[dict[str, Any]]:
    """The comparison's children, as ``gradq submit`` would store them."""
    from gradq.service.experiments.compare import expand
    from gradq.service.spec import validate

    spec = validate({"kind": "compare", "dtype": "float32",
                     # the dataset named here is a placeholder: the data are given directly
                     "data": {"dataset": "digits", "validation": 0.0, "test": 0.0},
                     "model": {"hidden": list(sizes[1:-1]), "activation": "relu"},
                     "training": {"epochs": 1, "batch_size": BATCH},
                     "compare": {"optimizers": list(OPTIMIZERS), "seeds": seeds,
                                 "metric": "train_loss"}})  # no test part here
    return [c.spec for c in expand(spec).children]


def gradq_side(xp: Any, X: np.ndarray, y: np.ndarray, specs: list[dict[str, Any]]
               ) -> dict[str, Any]:
    from gradq.nn.preprocess import Splits
    from gradq.service.settings import get_settings
    from gradq.train.interface import NullHooks
    from gradq.train.replicas import ReplicaTrainer, max_replicas

    empty = np.zeros((0, X.shape[1]), np.float32)
    split = Splits(X, y, empty, y[:0], empty, y[:0], "classification", SIZES[-1])
    settings = get_settings()  # as the runner passes them to the engine
    per_batch = max_replicas(specs[0], split, xp, settings.max_replicas)
    result: dict[str, Any] = {"replicas_per_batch": min(per_batch, len(specs))}

    def run() -> None:
        finals = []
        for start in range(0, len(specs), per_batch):
            chunk = specs[start:start + per_batch]
            ends = ReplicaTrainer(chunk, [split] * len(chunk), xp,
                                  [NullHooks() for _ in chunk],
                                  settings.checkpoint_interval_s).run()
            finals += [e.outcome.final["train_loss"] for e in ends]
        _common.sync(xp)
        result["final_train_loss"] = finals

    result["run"] = run
    return result


def torch_side(device: str, X: np.ndarray, y: np.ndarray, sizes: tuple[int, ...],
               seeds: int) -> dict[str, Any]:
    import torch
    from torch import nn

    Xt = torch.from_numpy(X).to(device)
    yt = torch.from_numpy(y.astype(np.int64)).to(device)
    lossf = nn.CrossEntropyLoss()
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.01),
            "momentum": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
            "nesterov": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True),
            "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.01),
            "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01),
            "adam": lambda p: torch.optim.Adam(p, lr=0.001)}
    result: dict[str, Any] = {}

    def model() -> nn.Module:
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers).to(device)

    def train_loss(m: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return lossf(m(Xt), yt)

    def run() -> None:
        finals = []
        n = len(Xt)
        for name in OPTIMIZERS:
            for seed in range(seeds):
                torch.manual_seed(seed)
                m = model()
                opt = make[name](m.parameters())
                train_loss(m)  # the loss before the first step, as gradq logs it
                perm = torch.randperm(n, device=device)
                for b in range(0, n, BATCH):
                    idx = perm[b:b + BATCH]
                    opt.zero_grad(set_to_none=True)
                    lossf(m(Xt[idx]), yt[idx]).backward()
                    opt.step()
                finals.append(train_loss(m))
        _common.torch_sync(device)
        result["final_train_loss"] = [float(v) for v in finals]

    result["run"] = run
    return result


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=None,
                   help="training samples (default 60,000 on a GPU, 6,000 on the CPU)")
    args = p.parse_args()
    _common.set_threads(args.threads)
    xp = _common.array_module(args.device)
    device = _common.torch_device(xp)
    sizes = (64, 32, 32, 10) if args.quick else SIZES
    seeds = 2 if args.quick else SEEDS
    n = args.samples or (512 if args.quick else (60_000 if device == "cuda" else 6_000))
    repeats = args.repeats or (1 if args.quick else 3)
    X, y = data(n, sizes[0], sizes[-1])
    specs = children(sizes, seeds)
    g = gradq_side(xp, X, y, specs)
    t = torch_side(device, X, y, sizes, seeds)
    timing = _common.interleaved({"gradq_replicas": g["run"], "torch_loop": t["run"]},
                                 repeats, warmup=1)
    ratio = timing["gradq_replicas"]["median_s"] / timing["torch_loop"]["median_s"]
    by_arm = {}
    for side, res in (("gradq", g), ("torch", t)):
        losses = np.asarray(res["final_train_loss"]).reshape(len(OPTIMIZERS), seeds)
        by_arm[side] = {name: round(float(v), 4) for name, v in
                        zip(OPTIMIZERS, losses.mean(axis=1), strict=True)}
    doc = {
        "benchmark": "sweep", "quick": args.quick, "device": device,
        "machine": _common.machine(xp),
        "model": {"sizes": sizes, "batch": BATCH, "dtype": "float32", "epochs": 1},
        "runs": len(specs), "optimizers": OPTIMIZERS, "seeds": seeds, "samples": n,
        "samples_note": None if n == 60_000 else f"{n} samples, not the issue's 60,000",
        "replicas_per_batch": g["replicas_per_batch"],
        "seconds": {k: round(v["median_s"], 3) for k, v in timing.items()},
        "ratio_gradq_over_torch_loop": round(ratio, 4),
        "target": "<= 0.1x the loop (GPU)",
        "verdict": _common.verdict(ratio, 0.1) if device == "cuda" else "CPU: reported only",
        "mean_final_train_loss_by_optimizer": by_arm, "timing": timing,
    }
    _common.report("sweep", doc, args.tag)


if __name__ == "__main__":
    main()
