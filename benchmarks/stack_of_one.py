"""Does the single run's own path pay? ``Trainer`` against a stack of one replica.

``Trainer`` trains a plain network (parameters (P,), 2-d products); ``ReplicaTrainer``
with one spec trains ``Network(replicas=1)`` (parameters (1, P), batched 3-d products and
per-replica broadcasts). Both share ``train.engine``'s set-up, step, log point and outcome;
only the array layout differs. This times one epoch of each, interleaved, on synthetic data:
an MLP 784-128-128-10 (ReLU, softmax, Adam, float32, minibatches of 128), logged at the
start and the end only, no checkpoint. The two runs' final losses are checked first.

    python benchmarks/stack_of_one.py [--quick] [--device cpu|cuda] [--samples N] [--sizes a,b,..]
"""

from __future__ import annotations

from typing import Any

import _common
import numpy as np

SIZES = (784, 128, 128, 10)
BATCH = 128


def spec(n: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    from gradq.service.spec import validate

    return validate({
        # the dataset named here is a placeholder: the data are given directly
        "data": {"dataset": "digits", "validation": 0.0, "test": 0.0}, "seed": 0,
        "dtype": "float32", "model": {"hidden": list(sizes[1:-1]), "activation": "relu"},
        "optimizer": {"name": "adam", "lr": 0.001},
        "training": {"epochs": 1, "batch_size": BATCH, "log_every": n, "checkpoint_every": 2},
    })


def main() -> None:
    from gradq.nn.preprocess import Splits
    from gradq.train.interface import NullHooks
    from gradq.train.replicas import ReplicaTrainer
    from gradq.train.trainer import Trainer

    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=None, help="training rows (default 6,400)")
    p.add_argument("--sizes", default=None, help="layer widths, e.g. 64,32,32,10")
    args = p.parse_args()
    _common.set_threads(args.threads)
    xp = _common.array_module(args.device)
    sizes = (tuple(int(v) for v in args.sizes.split(",")) if args.sizes
             else (64, 32, 32, 10) if args.quick else SIZES)
    n = args.samples or (512 if args.quick else 6_400)
    repeats = args.repeats or (1 if args.quick else 7)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, sizes[0])).astype(np.float32)
    y = (X @ rng.standard_normal((sizes[0], sizes[-1]))).argmax(axis=1)
    empty = np.zeros((0, sizes[0]), np.float32)
    data = Splits(X, y, empty, y[:0], empty, y[:0], "classification", sizes[-1])
    s = spec(n, sizes)

    def single() -> Any:
        out = Trainer(s, data, xp, NullHooks()).run()
        _common.sync(xp)
        return out

    def stack() -> Any:
        out = ReplicaTrainer([s], [data], xp, [NullHooks()]).run()[0].outcome
        _common.sync(xp)
        return out

    a, b = single(), stack()
    # the same run (float32: up to the rounding of batched against plain products)
    assert abs(a.final["train_loss"] - b.final["train_loss"]) < 1e-5, (a.final, b.final)
    timing = _common.interleaved({"trainer": single, "stack_of_one": stack}, repeats)
    ratio = timing["stack_of_one"]["median_s"] / timing["trainer"]["median_s"]
    _common.report("stack_of_one", {
        "benchmark": "stack_of_one", "quick": args.quick, "machine": _common.machine(xp),
        "model": {"sizes": sizes, "batch": BATCH, "dtype": "float32", "optimizer": "adam"},
        "samples": n, "steps": -(-n // BATCH),
        "seconds_per_epoch": {k: round(v["median_s"], 4) for k, v in timing.items()},
        "ratio_stack_of_one_over_trainer": round(ratio, 3), "timing": timing,
    }, args.tag)


if __name__ == "__main__":
    main()
