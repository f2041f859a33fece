"""A job's epoch as a user feels it: ``run_s / epochs`` of ``gradq run``, against the
same work in PyTorch and in scikit-learn (issue 12).

Every gradq figure is measured *through* ``gradq run SPEC --json`` in a subprocess (the
job's ``timing.run_s`` divided by its epochs: the steps, every log point's evaluation and
metric write, checkpoints; not the process start or data loading, which ``run_s`` does
not cover). The references run in this process. Repetitions interleave (gradq, reference,
gradq, …); medians are reported with their ratios and the issue's targets.

- ``mnist``: MLP 784-128-128-10, ReLU, softmax cross-entropy, Adam (lr 1e-3), batch 128,
  float32, mnist 4,000 train / 1,000 test (gradq's split, seed 0), 10 epochs, CPU.
  gradq with ``train_metrics: full`` (a pass over the training part per epoch) and the
  default ``checkpoint_every: 1``; the torch loop evaluates the same at step 0 and after
  every epoch: train and test loss and accuracy, under ``no_grad``. Target ≤ 0.8× (issue 22).
- ``checkpoints``: the same gradq job with and without a checkpoint every epoch; the
  overhead is their difference over the job without. Target ≤ 5% of ``run_s``.
- ``digits``: 64-100-10, Adam, batch 200, 30 epochs, against ``MLPClassifier`` (same
  network, optimizer and batch; ``tol=0`` so it runs every epoch), which accumulates its
  training loss during the epoch: gradq runs with ``train_metrics: running`` and, unlike
  scikit-learn, also evaluates its test part every epoch. Target ≤ 0.8×.

    python benchmarks/job_epoch.py [--repeats 5] [--threads N] [--quick]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine, parser, report, set_threads, verdict

TARGETS = {"mnist": 0.8, "digits": 0.8, "checkpoint_overhead": 0.05}  # issue 22 (0.6 in issue 12)


def job_spec(dataset: str, hidden: list[int], batch: int, epochs: int, metrics: str,
             checkpoint_every: int) -> dict[str, Any]:
    return {"name": f"job-epoch-{dataset}", "seed": 0, "dtype": "float32", "device": "cpu",
            "data": {"dataset": dataset, "validation": 0.0, "test": 0.2},
            "model": {"hidden": hidden, "activation": "relu"},
            "optimizer": {"name": "adam", "lr": 1e-3},
            "training": {"epochs": epochs, "batch_size": batch, "train_metrics": metrics,
                         "checkpoint_every": checkpoint_every}}


class GradqRun:
    """``gradq run SPEC --json`` in a subprocess; a call returns seconds per epoch."""

    def __init__(self, spec: dict[str, Any], home: Path, threads: int | None,
                 **env: str) -> None:
        import json

        self.path = home / f"{spec['name']}-{spec['training']['train_metrics']}-" \
                           f"{spec['training']['checkpoint_every']}.json"
        self.path.write_text(json.dumps(spec))
        self.env = {**os.environ, "GRADQ_HOME": str(home), **env}
        if threads:  # the same BLAS thread count as the references in this process
            self.env.update({v: str(threads) for v in ("OPENBLAS_NUM_THREADS",
                                                       "OMP_NUM_THREADS", "MKL_NUM_THREADS")})

    def __call__(self) -> float:
        import json

        proc = subprocess.run([sys.executable, "-m", "gradq.cli.main", "run", str(self.path),
                               "--json"], env=self.env, capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"gradq run failed: {proc.stderr[-2000:]}")
        doc = json.loads(proc.stdout)
        return doc["timing"]["run_s"] / doc["final"]["epochs"]


def splits(dataset: str) -> Any:
    from gradq.nn.datasets import load_builtin
    from gradq.nn.preprocess import prepare

    ds = load_builtin(dataset)
    return prepare(ds.X, ds.y, ds.task, validation=0.0, test=0.2, seed=0, standardize=True)


class TorchLoop:
    """The mnist job in a plain torch loop with the same per-epoch evaluation."""

    def __init__(self, data: Any, epochs: int, batch: int = 128) -> None:
        import torch

        self.torch = torch
        self.X = torch.as_tensor(data.X_train, dtype=torch.float32)
        self.y = torch.as_tensor(data.y_train.astype(np.int64))
        self.Xt = torch.as_tensor(data.X_test, dtype=torch.float32)
        self.yt = torch.as_tensor(data.y_test.astype(np.int64))
        self.epochs, self.batch = epochs, batch

    def evaluate(self, model: Any) -> list[float]:
        torch = self.torch
        out = []
        with torch.no_grad():
            for X, y in ((self.X, self.y), (self.Xt, self.yt)):
                z = model(X)
                out += [torch.nn.functional.cross_entropy(z, y).item(),
                        (z.argmax(1) == y).float().mean().item()]
        return out

    def __call__(self) -> float:
        torch = self.torch
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(),
                                    torch.nn.Linear(128, 128), torch.nn.ReLU(),
                                    torch.nn.Linear(128, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        n = len(self.X)
        t0 = time.perf_counter()
        self.evaluate(model)  # step 0, as gradq logs it
        for _ in range(self.epochs):
            order = torch.randperm(n)
            for b in range(0, n, self.batch):
                idx = order[b:b + self.batch]
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(model(self.X[idx]), self.y[idx])
                loss.backward()
                opt.step()
            self.evaluate(model)
        return (time.perf_counter() - t0) / self.epochs


class SklearnFit:
    """``MLPClassifier.fit`` on digits, seconds per epoch."""

    def __init__(self, data: Any, epochs: int, batch: int) -> None:
        self.X = data.X_train.astype(np.float32)
        self.y = data.y_train
        self.epochs, self.batch = epochs, batch

    def __call__(self) -> float:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        model = MLPClassifier(hidden_layer_sizes=(100,), activation="relu", solver="adam",
                              alpha=0.0, batch_size=self.batch, learning_rate_init=1e-3,
                              max_iter=self.epochs, shuffle=True, random_state=0, tol=0.0,
                              n_iter_no_change=self.epochs + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            model.fit(self.X, self.y)
            elapsed = time.perf_counter() - t0
        return elapsed / model.n_iter_


def interleave(sides: dict[str, Any], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Each side's returned seconds per epoch, rounds interleaved in rotating order."""
    names = list(sides)
    for _ in range(warmup):
        for n in names:
            sides[n]()
    out: dict[str, list[float]] = {n: [] for n in names}
    for i in range(repeats):
        for n in names[i % len(names):] + names[:i % len(names)]:
            out[n].append(sides[n]())
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    args = p.parse_args()
    set_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 5)
    warmup = 0 if args.quick else 1
    mnist_epochs = 2 if args.quick else 10
    digits_epochs = 3 if args.quick else 30
    home = Path(tempfile.mkdtemp(prefix="gradq-job-epoch-"))

    mnist, digits = splits("mnist"), splits("digits")
    sides = {
        "gradq_mnist": GradqRun(job_spec("mnist", [128, 128], 128, mnist_epochs, "full", 1),
                                home, args.threads),
        "gradq_mnist_no_checkpoints": GradqRun(job_spec("mnist", [128, 128], 128,
                                                        mnist_epochs, "full", 10_000), home,
                                                       args.threads),
        # a checkpoint written every epoch whatever the time (the default waits 10 s
        # between checkpoints, which this job never reaches): what one checkpoint costs
        "gradq_mnist_every_epoch": GradqRun(job_spec("mnist", [128, 128], 128, mnist_epochs,
                                                     "full", 1), home, args.threads,
                                            GRADQ_CHECKPOINT_INTERVAL_S="0"),
        "gradq_mnist_running": GradqRun(job_spec("mnist", [128, 128], 128, mnist_epochs,
                                                 "running", 1), home, args.threads),
        "torch_mnist": TorchLoop(mnist, mnist_epochs),
        "gradq_digits": GradqRun(job_spec("digits", [100], 200, digits_epochs, "running", 1),
                                 home, args.threads),
        "sklearn_digits": SklearnFit(digits, digits_epochs, 200),
    }
    times = interleave(sides, repeats, warmup)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {
        "mnist": med["gradq_mnist"] / med["torch_mnist"],
        "mnist_running": med["gradq_mnist_running"] / med["torch_mnist"],
        "digits": med["gradq_digits"] / med["sklearn_digits"],
        "checkpoint_overhead": (med["gradq_mnist"] - med["gradq_mnist_no_checkpoints"])
        / med["gradq_mnist_no_checkpoints"],
        "checkpoint_every_epoch_overhead": (med["gradq_mnist_every_epoch"]
                                            - med["gradq_mnist_no_checkpoints"])
        / med["gradq_mnist_no_checkpoints"],
    }
    doc = {
        "benchmark": "job_epoch", "quick": args.quick, "machine": machine(),
        "repeats": repeats, "threads": args.threads,
        "epochs": {"mnist": mnist_epochs, "digits": digits_epochs},
        "ms_per_epoch": {k: round(v * 1e3, 3) for k, v in med.items()},
        "runs_ms": {k: [round(t * 1e3, 3) for t in v] for k, v in times.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "targets": TARGETS,
        "verdicts": {k: verdict(ratios[k], t) for k, t in TARGETS.items()},
    }
    report("job_epoch", doc, args.tag)
    print(f"\nmnist  gradq {med['gradq_mnist'] * 1e3:.1f} ms/epoch (train_metrics full) vs "
          f"torch {med['torch_mnist'] * 1e3:.1f}: {ratios['mnist']:.2f}x "
          f"(target <= {TARGETS['mnist']}x: {doc['verdicts']['mnist']}); running: "
          f"{ratios['mnist_running']:.2f}x")
    print(f"digits gradq {med['gradq_digits'] * 1e3:.1f} ms/epoch vs MLPClassifier "
          f"{med['sklearn_digits'] * 1e3:.1f}: {ratios['digits']:.2f}x "
          f"(target <= {TARGETS['digits']}x: {doc['verdicts']['digits']})")
    print(f"checkpoints (checkpoint_every: 1, the default interval): "
          f"{ratios['checkpoint_overhead'] * 100:+.1f}% of run_s "
          f"(target <= 5%: {doc['verdicts']['checkpoint_overhead']}); one every epoch "
          f"whatever the time: {ratios['checkpoint_every_epoch_overhead'] * 100:+.1f}%")


if __name__ == "__main__":
    main()
