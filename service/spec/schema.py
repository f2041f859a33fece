"""The schema of a job spec: every section and key with its kind and default (docs/spec.md
is generated from it)."""

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
    "method": (Choice(("random", "qmc", "tpe")), "random"),
    "trials": (Int(1, MAX_GRID_POINTS), 16),
    "wave": (Nullable(Int(1)), None),  # tpe: trials proposed at once (default 4)
    "pruner": (Nullable(Section({
        "successive_halving": (Section({"eta": (Int(2), 3), "min_epochs": (Int(1), 1)},
                                       hint="{eta, min_epochs}"), REQUIRED),
    }, hint="{successive_halving: {eta, min_epochs}}")), None),
}, hint="{method, trials, wave, pruner}")

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


DESCRIPTIONS: dict[str, str] = {
    "name": "an optional label, shown by gradq ls and the dashboard",
    "kind": "train: one run; compare: runs over arms and seeds, with a report (kind: suite, "
            "comparisons across workloads, has keys of its own: see suite below)",
    "seed": "seed of the split, the initial parameters and the minibatch order",
    "dtype": "floating-point type of the parameters and the data",
    "device": "auto: a GPU where CuPy finds one, else the CPU",
    "data": "the dataset and how it is split",
    "data.dataset": "a built-in name, a registered name (gradq datasets add), or a file: "
                    ".npz (arrays X, y) or .csv (last column y)",
    "data.file": "set by validation (whether data.dataset is a file); leave it out",
    "data.task": "auto: classification for whole-number labels with 2 to 100 distinct "
                 "values, else regression",
    "data.validation": "fraction held out for early stopping and tuning",
    "data.test": "fraction held out for the final figures",
    "data.standardize": "scale features to zero mean and unit variance, fit on the "
                        "training part only",
    "data.pca": "k: project onto the first k principal components of the training part",
    "data.folds": "k: k-fold cross-validation; the job runs k times and reports like a "
                  "comparison",
    "model": "the network (or kernel SVM)",
    "model.kind": "mlp: a multilayer perceptron; kernel_svm: a kernel support vector machine",
    "model.hidden": "widths of the hidden layers; [] is a linear or logistic model",
    "model.activation": "one name for every hidden layer, or a list of one per layer",
    "model.output": "the output unit; auto follows the task",
    "model.init": "initialisation of the weights",
    "model.bias_init": "initial value of the hidden biases (e.g. 0.1 for ReLU units)",
    "model.output_bias": "marginal: softmax(b) = class frequencies, sigmoid(b) = positive "
                         "rate, b = mean target",
    "model.dropout": "drop probabilities",
    "model.dropout.input": "probability of dropping an input unit",
    "model.dropout.hidden": "probability of dropping a hidden unit",
    "model.batch_norm": "batch normalisation on the hidden layers",
    "model.kernel": "kernel_svm: the kernel",
    "model.C": "kernel_svm: the penalty of margin violations",
    "model.gamma": "kernel_svm: the rbf and poly kernels' scale (scale: 1 / (features · "
                   "variance))",
    "model.degree": "kernel_svm: the poly kernel's degree",
    "model.coef0": "kernel_svm: the poly kernel's constant term",
    "regularization": "penalties and stopping; l1 and l2 apply to weights, never biases",
    "regularization.l2": "weight decay: adds l2/2·Σ‖W‖² to the objective",
    "regularization.l1": "adds l1·Σ|W| to the objective",
    "regularization.l1_proximal": "sgd only: soft-threshold after each step (ISTA), exact "
                                  "zeros",
    "regularization.clip_grad_norm": "rescale the gradient to at most this norm",
    "regularization.early_stopping": "stop when the metric stops improving, and restore the "
                                     "best parameters",
    "regularization.early_stopping.metric": "the validation metric watched",
    "regularization.early_stopping.patience": "log points without improvement before "
                                              "stopping",
    "regularization.early_stopping.min_delta": "smallest change that counts as an "
                                               "improvement",
    "regularization.bagging": "a bootstrap-resampled ensemble, predictions averaged",
    "regularization.bagging.models": "number of models in the ensemble",
    "optimizer": "the optimizer and its hyperparameters (see the optimizer table below)",
    "training": "how long and in what steps to train",
    "training.epochs": "passes over the training part",
    "training.batch_size": "an integer, or full; default 128, full for full-batch optimizers",
    "training.max_steps": "stop after this many updates",
    "training.log_every": "epoch, or a number of steps between log points",
    "training.diagnostics": "extra curves: grad_norm, curvature (g'Hg / g'g), "
                            "hessian_extremes, step_length, evaluations",
    "training.checkpoint_every": "epochs between checkpoints",
    "training.time_limit_s": "stop after this many seconds of training",
    "training.train_metrics": "full: a pass over the training part at each log point; "
                              "running: the mean over the interval's minibatches",
    "compare": "kind compare only: the arms and seeds compared",
    "compare.optimizers": "optimizer names, or mappings of name and hyperparameters (a list "
                          "is a grid, a mapping such as {loguniform: [a, b]} a search space)",
    "compare.arms": "instead of optimizers: [{label: ..., dotted.key: value, ...}], each a "
                    "unique label and overrides of model, regularization, optimizer, "
                    "training or dtype",
    "compare.seeds": "evaluation seeds per arm",
    "compare.tune_seeds": "seeds per grid point or trial when tuning on the validation "
                          "metric: each runs on every tuning seed and is ranked on its mean "
                          "over them (under successive halving too)",
    "compare.metric": "the metric the report ranks arms by",
    "compare.target": "a value of the metric: the time and steps to reach it are reported",
    "compare.search": "a search over the arms' search spaces; where no arm gives one, "
                      "each first-order optimizer searches its lr, log-uniform over two "
                      "decades either side of its own (or default) lr",
    "compare.search.method": "random, qmc (a scrambled Sobol sequence), or tpe (Optuna's "
                             "TPESampler in waves; pip install 'gradq[tpe]')",
    "compare.search.trials": "trials per arm",
    "compare.search.wave": "tpe only: trials proposed at once, the next wave when they have "
                           "ended (default 4)",
    "compare.search.pruner": "stop poor trials early",
    "compare.search.pruner.successive_halving": "successive halving: keep the best 1/eta "
                                                "of the trials at each rung (rungs "
                                                "min_epochs·eta^k up to training.epochs, the "
                                                "same for every trial of an arm, so "
                                                "training.epochs cannot be searched under it)",
    "compare.search.pruner.successive_halving.eta": "the reduction factor",
    "compare.search.pruner.successive_halving.min_epochs": "epochs of the first rung",
}
"""What each key of the schema means, by dotted path (docs/spec.md and the JSON Schema)."""
