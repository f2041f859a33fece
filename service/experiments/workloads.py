"""The built-in suites: named sets of workloads (docs/suites.md), each a train spec, the metric
it is judged on and a target value of that metric.

A workload is small enough to train in seconds on one CPU core, and each exercises a
different part of Goodfellow et al. ch. 5–8. Every target is stated and justified in
``docs/suites.md``: it is a value that a well-tuned first-order method reaches within the
workload's budget, but not in its first epoch, so that time to target separates methods.
The targets were set from a pilot run of ``examples/suite-mini.yaml`` (4 random trials per
arm, 3 seeds; the diabetes target from ``closed_form``, the exact minimiser), as AlgoPerf
sets them: near the median final metric of the best arm, rounded towards easier, so that
a tuned method reaches it within the budget but not at once.

Pure data: no import of the rest of gradq.
"""

from __future__ import annotations

import copy
from typing import Any

_DATA = {"validation": 0.2, "test": 0.2}

BOOK_MINI: list[dict[str, Any]] = [
    {   # ch. 6: a small classification MLP on 8x8 digits (1,797 images)
        "name": "digits-mlp",
        "spec": {"data": {"dataset": "digits", **_DATA},
                 "model": {"hidden": [32], "activation": "relu"},
                 "training": {"epochs": 12, "batch_size": 64}},
        "metric": "val_loss",
        "target": 0.20,
    },
    {   # ch. 6: a larger MLP on 5,000 MNIST images (784 inputs, 25k parameters)
        "name": "mnist-mlp",
        "spec": {"data": {"dataset": "mnist", **_DATA},
                 "model": {"hidden": [32], "activation": "relu"},
                 "training": {"epochs": 8, "batch_size": 128}},
        "metric": "val_accuracy",
        "target": 0.90,
    },
    {   # ch. 5: linear regression (MSE); closed_form is the exact minimiser (the oracle)
        "name": "diabetes-linear",
        "spec": {"data": {"dataset": "diabetes", "task": "regression", **_DATA},
                 "model": {"hidden": []},
                 "training": {"epochs": 40, "batch_size": 32}},
        "metric": "val_loss",
        "target": 3700.0,  # MSE in the units of y² (y: disease progression, 25–346)
    },
    {   # ch. 4/8: convex logistic regression, where second-order methods should shine
        "name": "cancer-logistic",
        "spec": {"data": {"dataset": "breast_cancer", **_DATA},
                 "model": {"hidden": []},
                 # a little L2 makes it strongly convex: separable classes otherwise send
                 # the weights (and a full-batch method's validation loss) to infinity
                 "regularization": {"l2": 1.0e-3},
                 "training": {"epochs": 30, "batch_size": 32}},
        "metric": "val_loss",
        "target": 0.11,
    },
    {   # ch. 8: a deep narrow tanh network on spirals: plateaus and ill-conditioning
        "name": "spirals-deep-tanh",
        "spec": {"data": {"dataset": "spirals", **_DATA},
                 "model": {"hidden": [16, 16, 16, 16], "activation": "tanh"},
                 "training": {"epochs": 40, "batch_size": 32}},
        "metric": "val_accuracy",
        "target": 0.85,
    },
    {   # ch. 7/8: batch norm and dropout on a two-class problem with noise (moons)
        "name": "moons-bn-dropout",
        "spec": {"data": {"dataset": "moons", **_DATA},
                 "model": {"hidden": [32, 32], "activation": "relu", "batch_norm": True,
                           "dropout": {"hidden": 0.2}},
                 "training": {"epochs": 20, "batch_size": 32}},
        "metric": "val_loss",
        "target": 0.12,
    },
]

BUILTIN_SUITES: dict[str, list[dict[str, Any]]] = {"book-mini": BOOK_MINI}


def builtin(name: str) -> list[dict[str, Any]]:
    """A copy of the built-in suite ``name``'s workloads (KeyError if unknown)."""
    return copy.deepcopy(BUILTIN_SUITES[name])
