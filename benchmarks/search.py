"""Search throughput: trials per second of one random search, by gradq and by Optuna + torch.

The search: an MLP 64-64-10 (ReLU, softmax cross-entropy, float32) on digits (1,078
training rows, minibatches of 32), Adam with a log-uniform learning rate in [1e-4, 1e-1],
``--trials`` trials of ``--epochs`` epochs each, no pruning, every trial evaluated on the
training, validation and test sets after each epoch. Both sides train the same trials:
the learning rates gradq draws from the spec's seed are enqueued in Optuna's study
(``study.enqueue_trial``) and suggested back with ``suggest_float(log=True)``.

- gradq: ``gradq run`` of the comparison in a fresh process, with a fresh SQLite database
  (process start, imports, validation, every metric and checkpoint written, and the chosen
  point's one evaluation run, which the reference does not do, all counted).
- reference: Optuna (``RandomSampler``, in memory) driving a plain PyTorch loop in this
  process, torch already imported, data already as tensors.

Target (issue 10): gradq ≥ 5× the reference's trials per second, on CPU.

    python benchmarks/search.py [--quick] [--trials N] [--epochs E] [--repeats R]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np

SPACE = {"optimizer.lr": {"loguniform": [1e-4, 1e-1]}}
HIDDEN = 64
BATCH = 32


def spec(trials: int, epochs: int) -> dict[str, Any]:
    return {"kind": "compare", "seed": 0, "dtype": "float32",
            "data": {"dataset": "digits", "validation": 0.2, "test": 0.2},
            "model": {"hidden": [HIDDEN], "activation": "relu"},
            "training": {"epochs": epochs, "batch_size": BATCH},
            "compare": {"arms": [{"label": "adam", "optimizer.name": "adam", **SPACE}],
                        "search": {"method": "random", "trials": trials}, "seeds": 1,
                        "metric": "test_loss"}}


def gradq_search(doc: dict[str, Any], threads: int | None) -> float:
    """Wall seconds of ``gradq run`` on the spec, in a fresh process and database."""
    with tempfile.TemporaryDirectory() as home:
        path = Path(home) / "search.json"
        path.write_text(json.dumps(doc))
        env = {**os.environ, "GRADQ_HOME": home, "GRADQ_DEVICE": "cpu"}
        env.pop("GRADQ_DATABASE_URL", None)
        if threads:
            env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(threads)
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "gradq.cli.main", "run", str(path),
                              "--json"], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if out.returncode != 0:
            raise RuntimeError(f"gradq run failed:\n{out.stderr[-2000:]}")
    return wall


def splits(doc: dict[str, Any]) -> Any:
    """The tuning seed's split of digits, as gradq prepares it."""
    from gradq.nn.datasets import load_builtin
    from gradq.service.experiments.compare import tune_seeds
    from gradq.service.spec import validate
    from gradq.workers.data import prepare_splits

    s = validate(doc)
    child = {**s, "seed": tune_seeds(s)[0]}
    return prepare_splits(child, load_builtin("digits"))


def optuna_search(lrs: list[float], epochs: int, data: Any) -> float:
    """Wall seconds of an Optuna study that trains the same trials with torch."""
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sets = {name: (torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)),
                   torch.from_numpy(y.astype(np.int64)))
            for name, X, y in (("train", data.X_train, data.y_train),
                               ("val", data.X_val, data.y_val),
                               ("test", data.X_test, data.y_test))}
    X, y = sets["train"]
    n, d = X.shape
    k = int(max(int(t[1].max()) for t in sets.values())) + 1
    lo, hi = SPACE["optimizer.lr"]["loguniform"]

    def objective(trial: Any) -> float:
        lr = trial.suggest_float("lr", lo, hi, log=True)
        torch.manual_seed(trial.number)
        model = torch.nn.Sequential(torch.nn.Linear(d, HIDDEN), torch.nn.ReLU(),
                                    torch.nn.Linear(HIDDEN, k))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = torch.nn.CrossEntropyLoss()
        gen = torch.Generator().manual_seed(trial.number)
        val = float("nan")
        for epoch in range(epochs):
            order = torch.randperm(n, generator=gen)
            for b in range(0, n, BATCH):
                idx = order[b:b + BATCH]
                opt.zero_grad(set_to_none=True)
                loss_fn(model(X[idx]), y[idx]).backward()
                opt.step()
            with torch.no_grad():  # the three sets, as gradq logs them each epoch
                losses = {name: float(loss_fn(model(Xs), ys)) for name, (Xs, ys) in
                          sets.items()}
            val = losses["val"]
            trial.report(val, epoch)
        return val

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for lr in lrs:
        study.enqueue_trial({"lr": lr})
    t = time.perf_counter()
    study.optimize(objective, n_trials=len(lrs))
    return time.perf_counter() - t


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    args = p.parse_args()
    _common.set_threads(args.threads)
    trials = args.trials or (4 if args.quick else 64)
    epochs = args.epochs or (1 if args.quick else 10)
    repeats = args.repeats or (1 if args.quick else 3)
    from gradq.service.experiments import search

    doc = spec(trials, epochs)
    lrs = [t["optimizer.lr"] for t in search.sample(SPACE, trials, "random", doc["seed"])]
    data = splits(doc)
    import torch  # imported before timing: the reference's import is not counted

    times = _common.interleaved({"gradq": lambda: gradq_search(doc, args.threads),
                                 "optuna_torch": lambda: optuna_search(lrs, epochs, data)},
                                repeats, warmup=0 if args.quick else 1)
    tps = {k: trials / v["median_s"] for k, v in times.items()}
    ratio = tps["gradq"] / tps["optuna_torch"]
    _common.report("search", {
        "benchmark": "search", "quick": args.quick, "device": "cpu",
        "machine": _common.machine(),
        "search": {"model": f"64-{HIDDEN}-10", "dataset": "digits", "batch_size": BATCH,
                   "optimizer": "adam", "space": SPACE, "trials": trials, "epochs": epochs,
                   "torch_threads": torch.get_num_threads()},
        "times": times,
        "trials_per_s": {k: round(v, 3) for k, v in tps.items()},
        "speedup": round(ratio, 2),
        "target": ">= 5x",
        "verdict": _common.verdict(ratio, 5.0, lower_is_better=False),
    }, args.tag)


if __name__ == "__main__":
    main()
