"""Time per epoch: gradq's trainer against scikit-learn's ``MLPClassifier`` on MNIST.

Both train the same network on the same data: the 4,000 training images of gradq's
``mnist`` split (seed 0, test 0.2, no validation part), standardized, float32; hidden
layers (256, 128) of ReLU units, a softmax output, cross-entropy, Adam (lr 1e-3, β 0.9 /
0.999, ε 1e-8), minibatches of 128 reshuffled each epoch, no weight decay.

Three timings, each the median over interleaved repetitions after one warm-up run each:

- ``gradq``: ``Trainer.run`` as a job runs it, with the per-epoch evaluation of loss and
  accuracy on the training and test parts (``log_every: epoch``; no checkpoints);
- ``gradq (train only)``: the same with logging only at step 0, the like-for-like figure
  (scikit-learn accumulates its training loss during the epoch, with no extra pass);
- ``sklearn``: ``MLPClassifier.fit`` for ``--epochs`` epochs (``tol=0`` and
  ``n_iter_no_change`` above the epoch count, so it never stops early), divided by
  ``n_iter_``.

The order of the contenders alternates between repetitions, so that a drift in machine
load (a shared runner) falls on both. The machine, its load, the library versions and the
BLAS thread counts are printed with the figures.

    python benchmarks/mlp_vs_sklearn.py [--epochs 5] [--reps 5] [--threads N] [--json]
    python benchmarks/mlp_vs_sklearn.py --quick     # one epoch, one repetition: it runs

With ``OUT`` set, the figures are also written to ``$OUT/mlp_vs_sklearn.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from importlib.metadata import version
from typing import Any

import _common
import numpy as np
from gradq.nn.backend import get_array_module, synchronize
from gradq.nn.datasets import load_builtin
from gradq.nn.preprocess import Splits, prepare
from gradq.service.settings import get_settings
from gradq.service.spec import validate
from gradq.train.interface import NullHooks
from gradq.train.trainer import Trainer
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_info, threadpool_limits

HIDDEN = (256, 128)
BATCH = 128
LR = 1e-3
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def mnist_splits() -> Splits:
    """gradq's split of the bundled MNIST: 4,000 images to train on, standardized."""
    ds = load_builtin("mnist")
    data = prepare(ds.X, ds.y, ds.task, validation=0.0, test=0.2, seed=0, standardize=True)
    data.X_train = data.X_train.astype(np.float32)
    data.X_test = data.X_test.astype(np.float32)
    data.X_val = data.X_val.astype(np.float32)
    return data


def gradq_epoch_s(data: Splits, epochs: int, device: str, evaluate: bool) -> float:
    """Seconds per epoch of ``Trainer.run`` (evaluating each epoch, or only at step 0)."""
    steps_per_epoch = -(-len(data.X_train) // BATCH)
    spec = validate({
        "data": {"dataset": "mnist", "validation": 0.0, "test": 0.2}, "seed": 0,
        "dtype": "float32", "device": device,
        "model": {"hidden": list(HIDDEN), "activation": "relu"},
        "optimizer": {"name": "adam", "lr": LR},
        "training": {"epochs": epochs, "batch_size": BATCH,
                     "log_every": "epoch" if evaluate else epochs * steps_per_epoch + 1,
                     "checkpoint_every": epochs + 1},
    })
    xp = get_array_module(device)
    # checkpoints as a job's: the runner passes the same setting
    trainer = Trainer(spec, data, xp, NullHooks(), get_settings().checkpoint_interval_s)
    synchronize(xp)
    t0 = time.perf_counter()
    out = trainer.run()
    synchronize(xp)
    elapsed = time.perf_counter() - t0
    if out.status != "succeeded" or out.final["epochs"] != epochs:
        raise RuntimeError(f"gradq run ended {out.status}: {out.error}")
    return elapsed / epochs


def sklearn_epoch_s(data: Splits, epochs: int) -> float:
    """Seconds per epoch of ``MLPClassifier.fit`` with the same network and optimizer."""
    model = MLPClassifier(hidden_layer_sizes=HIDDEN, activation="relu", solver="adam",
                          alpha=0.0, batch_size=BATCH, learning_rate_init=LR, max_iter=epochs,
                          shuffle=True, random_state=0, tol=0.0, n_iter_no_change=epochs + 1,
                          early_stopping=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        model.fit(data.X_train, data.y_train)
        elapsed = time.perf_counter() - t0
    if model.n_iter_ != epochs or model.coefs_[0].dtype != np.float32:
        raise RuntimeError("MLPClassifier did not run every epoch in float32")
    return elapsed / model.n_iter_


def machine() -> dict[str, Any]:
    """Where the figures come from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "usable_cpus": usable,
            "platform": platform.platform(), "python": sys.version.split()[0],
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def libraries() -> dict[str, Any]:
    """Versions, thread-count variables, and the thread pools actually loaded."""
    versions = {name: version(name) for name in ("gradq", "numpy", "scipy", "scikit-learn",
                                                 "threadpoolctl")}
    pools = [{k: p.get(k) for k in ("user_api", "internal_api", "version", "num_threads",
                                    "threading_layer")} for p in threadpool_info()]
    return {"versions": versions, "env": {v: os.environ.get(v) for v in THREAD_VARS},
            "threadpools": pools}


def measure(contenders: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """One warm-up call each, then ``reps`` interleaved rounds, alternating the order."""
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(reps):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(contenders[name]())
    return times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print (or return) its figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--epochs", type=int, default=5, help="epochs per timed run")
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    ap.add_argument("--threads", type=int, default=None,
                    help="limit BLAS/OpenMP threads of both (threadpoolctl); default: as loaded")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="gradq's device")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--quick", action="store_true",
                    help="one epoch, one repetition: checks that the script runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs, args.reps = 1, 1

    data = mnist_splits()
    contenders: dict[str, Callable[[], float]] = {
        "gradq": lambda: gradq_epoch_s(data, args.epochs, args.device, evaluate=True),
        "gradq (train only)": lambda: gradq_epoch_s(data, args.epochs, args.device,
                                                    evaluate=False),
        "sklearn": lambda: sklearn_epoch_s(data, args.epochs),
    }
    limit = threadpool_limits(args.threads) if args.threads else nullcontext()
    with limit:
        info = {"machine": machine(), **libraries()}
        times = measure(contenders, args.reps)
    info["machine"]["load_average_after"] = (os.getloadavg() if hasattr(os, "getloadavg")
                                             else None)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    result = {
        **info,
        "setup": {"data": f"mnist train part {data.X_train.shape}, float32, standardized",
                  "hidden": HIDDEN, "batch_size": BATCH, "optimizer": f"adam lr {LR}",
                  "epochs_per_run": args.epochs, "reps": args.reps, "threads": args.threads,
                  "device": args.device},
        "seconds_per_epoch": {name: {"median": medians[name], "runs": ts}
                              for name, ts in times.items()},
        "ratio_gradq_over_sklearn": medians["gradq"] / medians["sklearn"],
        "ratio_gradq_train_only_over_sklearn": medians["gradq (train only)"]
                                               / medians["sklearn"],
    }
    if os.environ.get("OUT"):
        _common.report("mlp_vs_sklearn", {  # the shared machine fields beside this script's
            "benchmark": "mlp_vs_sklearn", "quick": args.quick, **result,
            "machine": {**result["machine"], **_common.machine()}})
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    m = result["machine"]
    print(f"machine   {m['cpu']}, {m['usable_cpus']} usable of {m['cpu_count']} CPUs, "
          f"{m['platform']}, Python {m['python']}")
    print(f"load avg  before {m['load_average']}, after {m['load_average_after']}")
    print("versions  " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    print(f"threads   env {result['env']}; --threads {args.threads}")
    for p in result["threadpools"]:
        print(f"          {p['user_api']}: {p['internal_api']} {p['version']}, "
              f"{p['num_threads']} threads ({p['threading_layer']})")
    print(f"setup     {result['setup']['data']}, hidden {HIDDEN}, batch {BATCH}, adam, "
          f"{args.epochs} epochs per run, {args.reps} interleaved reps after a warm-up")
    for name, row in result["seconds_per_epoch"].items():
        runs = ", ".join(f"{t:.3f}" for t in row["runs"])
        print(f"{name:<20} {row['median']:.3f} s/epoch (median; runs {runs})")
    print(f"ratio     gradq / sklearn = {result['ratio_gradq_over_sklearn']:.2f}; "
          f"gradq (train only) / sklearn = "
          f"{result['ratio_gradq_train_only_over_sklearn']:.2f}  (< 1: gradq is faster)")
    return result


if __name__ == "__main__":
    main()
