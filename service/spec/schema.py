"""The schema of a job spec (SPEC §4): every section and key with its kind and default."""

from __future__ import annotations

from .arms import _ArmList
from .kinds import (
    LATER,
    MAX_GRID_POINTS,
    MAX_LAYER_WIDTH,
    REQUIRED,
    Bool,
    Choice,
    Const,
    Either,
    Float,
    Int,
    ListOf,
    Nullable,
    Section,
    Str,
)
from .optimizers import _FRACTION, _NONNEGATIVE, _POSITIVE, _Arms, _Optimizer

TASKS = ("auto", "classification", "regression")
ACTIVATIONS = ("relu", "leaky_relu", "prelu", "abs", "tanh", "sigmoid", "linear")
DIAGNOSTICS = ("grad_norm", "curvature", "hessian_extremes", "step_length", "evaluations")
METRICS = ("train_loss", "val_loss", "test_loss", "val_accuracy", "test_accuracy")
DEFAULT_ARMS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]

_PROBABILITY = _FRACTION
_ACTIVATION = Choice(ACTIVATIONS)

_SEARCH = Section({
    "method": (Choice(("random", "qmc")), "random"),
    "trials": (Int(1, MAX_GRID_POINTS), 16),
    "pruner": (Nullable(Section({
        "successive_halving": (Section({"eta": (Int(2), 3), "min_epochs": (Int(1), 1)},
                                       hint="{eta, min_epochs}"), REQUIRED),
    }, hint="{successive_halving: {eta, min_epochs}}")), None),
}, hint="{method, trials, pruner}")

_COMPARE = Section({
    "optimizers": (Nullable(_Arms()), DEFAULT_ARMS),
    "arms": (Nullable(_ArmList()), None),
    "seeds": (Int(1), 10),
    "tune_seeds": (Int(1), 1),
    "metric": (Choice(METRICS), "test_loss"),
    "target": (Nullable(Float()), None),
    "search": (Nullable(_SEARCH), None),
})

_SCHEMA = Section({
    "name": (Nullable(Str()), None),
    "kind": (Choice(("train", "compare")), "train"),
    "seed": (Int(0, 2**32 - 1), 0),  # any seed NumPy's legacy RandomState takes too
    "dtype": (Choice(("float32", "float64")), "float32"),
    "device": (Choice(("auto", "cuda", "cpu")), "auto"),
    "data": (Section({
        "dataset": (Str(empty=False), REQUIRED),
        "file": (Bool(), False),  # set by validate; accepted so a normalised spec re-validates
        "task": (Choice(TASKS), "auto"),
        "validation": (_FRACTION, 0.2),
        "test": (_FRACTION, 0.2),
        "standardize": (Bool(), True),
        "pca": (Nullable(Int(1)), None),
        "folds": (Nullable(Int(2)), None),
    }), {}),
    "model": (Section({
        "kind": (Choice(("mlp", "kernel_svm")), "mlp"),
        "hidden": (ListOf(Int(1, MAX_LAYER_WIDTH), name="a list of layer widths"), [64, 64]),
        "activation": (Either((_ACTIVATION, ListOf(_ACTIVATION, name="a list of names"))),
                       "relu"),
        "output": (Choice(("auto", "softmax", "sigmoid", "linear")), "auto"),
        "init": (Choice(("glorot_uniform", "glorot_normal", "he_normal", "lsuv", "zeros")),
                 "glorot_uniform"),
        "bias_init": (Float(), 0.0),
        "output_bias": (Choice(("zeros", "marginal")), "zeros"),
        "dropout": (Section({"input": (_PROBABILITY, 0.0), "hidden": (_PROBABILITY, 0.0)},
                            hint="{input: p, hidden: p}",
                            note="use the mapping even for one value, e.g. {hidden: 0.5}"),
                    {}),
        "batch_norm": (Bool(), False),
        "kernel": (Choice(("linear", "poly", "rbf")), "rbf"),
        "C": (_POSITIVE, 1.0),
        "gamma": (Either((Const("scale"), _POSITIVE)), "scale"),
        "degree": (Int(1), 3),
        "coef0": (Float(), 0.0),
    }), {}),
    "regularization": (Section({
        "l2": (_NONNEGATIVE, 0.0),
        "l1": (_NONNEGATIVE, 0.0),
        "l1_proximal": (Bool(), False),
        "clip_grad_norm": (Nullable(_POSITIVE), None),
        "early_stopping": (Nullable(Section({
            "metric": (Choice(("val_loss", "val_accuracy")), "val_loss"),
            "patience": (Int(1), 10),
            "min_delta": (_NONNEGATIVE, 0.0),
        }, hint="{metric, patience, min_delta}")), None),
        "bagging": (Nullable(Section({"models": (Int(2), 5)}, hint="{models}")), None),
    }), {}),
    "optimizer": (_Optimizer(), {}),
    "training": (Section({
        "epochs": (Int(1), 30),
        "batch_size": (Either((Int(1), Const("full"))), LATER),
        "max_steps": (Nullable(Int(1)), None),
        "log_every": (Either((Const("epoch"), Int(1))), "epoch"),
        "diagnostics": (ListOf(Choice(DIAGNOSTICS), unique=True, name="a list of names"), []),
        "checkpoint_every": (Int(1), 1),
        "time_limit_s": (Nullable(_POSITIVE), None),
        # full: a pass over the training part at each log point (exact, at the logged
        # parameters); running: the mean of the minibatch losses since the last log point
        "train_metrics": (Choice(("full", "running")), "full"),
    }), {}),
    "compare": (Nullable(_COMPARE), None),
})


_SECTIONS = ("data", "model", "regularization", "optimizer", "training")


def lower_is_better(metric: str) -> bool:
    """True for a loss or error, False for an accuracy."""
    if metric.endswith(("loss", "error")):
        return True
    if metric.endswith("accuracy"):
        return False
    raise ValueError(f"unknown metric {metric!r}: a name ending in loss, error or accuracy")
