"""Job specs: loading, ``--set`` overrides and validation (service/spec/, docs/cli.md,
docs/spec.md, docs/optimizers.md)."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from gradq.nn.datasets import BUILTIN
from gradq.service import spec as specmod
from gradq.service.spec import (
    OPTIMIZERS,
    SpecError,
    apply_overrides,
    canonical_json,
    load_spec_file,
    lower_is_better,
    normalise_optimizer,
    validate,
)

# The example of docs/spec.md, without its `compare:` block (kind: compare only).
SPEC_EXAMPLE = """\
name: digits-mlp              # optional label
kind: train                   # train | compare
seed: 0
dtype: float32                # float32 | float64
device: auto                  # auto | cuda | cpu
data:
  dataset: digits
  task: auto                  # auto | classification | regression
  validation: 0.2
  test: 0.2
  standardize: true
  pca: null
  folds: null
model:
  kind: mlp
  hidden: [64, 64]
  activation: relu
  output: auto
  init: glorot_uniform
  bias_init: 0.0
  output_bias: zeros
  dropout: {input: 0.0, hidden: 0.0}
  batch_norm: false
regularization:
  l2: 0.0
  l1: 0.0
  clip_grad_norm: null
  early_stopping: null
  bagging: null
optimizer:
  name: adam
  lr: 0.001
  schedule: null
training:
  epochs: 30
  batch_size: 128
  max_steps: null
  log_every: epoch
  diagnostics: []
  checkpoint_every: 1
  time_limit_s: null
"""

SECTION_KEYS = {
    "data": {"dataset", "task", "validation", "test", "standardize", "pca", "folds"},
    "model": {"kind", "hidden", "activation", "output", "init", "bias_init", "output_bias",
              "dropout", "batch_norm", "kernel", "C", "gamma", "degree", "coef0"},
    "regularization": {"l2", "l1", "clip_grad_norm", "early_stopping", "bagging"},
    "optimizer": {"name", "lr", "schedule"},
    "training": {"epochs", "batch_size", "max_steps", "log_every", "diagnostics",
                 "checkpoint_every", "time_limit_s"},
}
TOP_KEYS = {"name", "kind", "seed", "dtype", "device", "compare", *SECTION_KEYS}


def minimal(**sections: Any) -> dict[str, Any]:
    """``{data: {dataset: digits}}`` with some dotted keys set: ``minimal(**{"model.kind": x})``."""
    raw: dict[str, Any] = {"data": {"dataset": "digits"}}
    for dotted, value in sections.items():
        node = raw
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def assert_error(exc: pytest.ExceptionInfo[SpecError], path: str, *fragments: str) -> None:
    e = exc.value
    assert e.path == path, str(e)
    line = str(e)
    assert "\n" not in line and "\r" not in line
    assert line == (f"{path}: {e.message}" if path else e.message)
    for fragment in fragments:
        assert fragment in line, line


# ----------------------------------------------------------------------------- defaults
def test_defaults_fill_every_key() -> None:
    spec = validate({"data": {"dataset": "digits"}})
    assert set(spec) == TOP_KEYS
    for section, keys in SECTION_KEYS.items():
        assert keys <= set(spec[section]), section
    assert spec["kind"] == "train" and spec["compare"] is None
    assert spec["data"] == {"dataset": "digits", "file": False, "task": "auto",
                            "validation": 0.2, "test": 0.2, "standardize": True,
                            "pca": None, "folds": None}
    assert spec["model"]["hidden"] == [64, 64]
    assert spec["model"]["activation"] == ["relu", "relu"]
    assert spec["model"]["dropout"] == {"input": 0.0, "hidden": 0.0}
    assert (spec["model"]["kernel"], spec["model"]["C"], spec["model"]["gamma"]) == (
        "rbf", 1.0, "scale")
    assert spec["optimizer"] == {"name": "adam", "lr": 0.001, "beta1": 0.9, "beta2": 0.999,
                                 "eps": 1e-8, "amsgrad": False, "schedule": None}
    assert spec["training"]["batch_size"] == 128


def test_spec_example_round_trips(tmp_path: Path) -> None:
    raw = load_spec_file(write(tmp_path, "job.yaml", SPEC_EXAMPLE))
    spec = validate(raw, tmp_path)
    # Given the example only spells out defaults, it normalises like the minimal spec.
    assert spec == {**validate(minimal()), "name": "digits-mlp"}
    # Normalising is idempotent, and survives storage as canonical JSON.
    assert validate(spec) == spec
    assert json.loads(canonical_json(spec)) == spec
    stored = canonical_json(spec)
    assert stored == canonical_json(json.loads(stored))
    assert " " not in stored.replace("digits-mlp", "")


def test_null_section_means_defaults(tmp_path: Path) -> None:
    raw = load_spec_file(write(tmp_path, "job.yaml", "data: {dataset: digits}\nmodel:\n"
                                                     "regularization:\n  # l2: 0.1\n"))
    assert raw["model"] is None
    assert validate(raw) == validate(minimal())


COMPARE_BLOCK = """\
compare:
  optimizers: [sgd, momentum, nesterov, adagrad, rmsprop, adam]
  seeds: 10
  tune_seeds: 1
  metric: test_loss
  target: null
"""


def test_spec_example_as_a_comparison(tmp_path: Path) -> None:
    text = SPEC_EXAMPLE.replace("kind: train ", "kind: compare") + COMPARE_BLOCK
    spec = validate(load_spec_file(write(tmp_path, "cmp.yaml", text)))
    assert spec["compare"] == validate(minimal(kind="compare"))["compare"]
    with pytest.raises(SpecError) as exc:  # the block as written, on a train job
        validate(load_spec_file(write(tmp_path, "train.yaml", SPEC_EXAMPLE + COMPARE_BLOCK)))
    assert_error(exc, "compare", "only for kind: compare")


def test_validate_does_not_mutate_input() -> None:
    raw = minimal(**{"model.activation": "tanh", "training.diagnostics": ["grad_norm"]})
    before = copy.deepcopy(raw)
    validate(raw)
    assert raw == before


def test_ints_become_floats_and_scientific_strings_are_numbers() -> None:
    spec = validate(minimal(**{"optimizer.name": "sgd", "optimizer.lr": 1,
                               "regularization.l2": "1e-3", "model.bias_init": 0}))
    assert spec["optimizer"]["lr"] == 1.0 and isinstance(spec["optimizer"]["lr"], float)
    assert spec["regularization"]["l2"] == pytest.approx(1e-3)
    assert isinstance(spec["model"]["bias_init"], float)


def test_yaml_1e_minus_3_is_accepted(tmp_path: Path) -> None:
    raw = load_spec_file(write(tmp_path, "job.yaml",
                               "data: {dataset: digits}\noptimizer: {name: adam, lr: 1e-3}\n"))
    assert raw["optimizer"]["lr"] == "1e-3"  # PyYAML's YAML 1.1 resolver: a string
    assert validate(raw)["optimizer"]["lr"] == 0.001


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_fills_its_defaults(name: str) -> None:
    raw = minimal(**{"optimizer.name": name})
    if name == "closed_form":
        raw["model"] = {"hidden": []}
    spec = validate(raw)
    assert spec["optimizer"] == {"name": name, **OPTIMIZERS[name], "schedule": None}
    assert validate(spec) == spec


def test_optimizer_defaults_follow_the_spec_reference() -> None:
    assert OPTIMIZERS["rmsprop"] == {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0,
                                     "centered": False}
    assert OPTIMIZERS["rmsprop_nesterov"]["lr"] == 0.001
    assert OPTIMIZERS["adadelta"] == {"lr": 1.0, "rho": 0.9, "eps": 1e-6}
    assert OPTIMIZERS["cg_pr"]["c2"] == 0.1 and OPTIMIZERS["lbfgs"]["c2"] == 0.9
    assert OPTIMIZERS["newton"] == {"damping": 1e-4, "max_params": 5000}


@pytest.mark.parametrize("name,batch", [("lbfgs", "full"), ("newton", "full"),
                                        ("delta_bar_delta", "full"), ("sgd", 128)])
def test_batch_size_default_follows_the_optimizer(name: str, batch: Any) -> None:
    spec = validate(minimal(**{"optimizer.name": name}))
    assert spec["training"]["batch_size"] == batch
    given = validate(minimal(**{"optimizer.name": name, "training.batch_size": 32}))
    assert given["training"]["batch_size"] == 32


def test_activation_list_and_empty_hidden() -> None:
    spec = validate(minimal(**{"model.hidden": [8, 4], "model.activation": ["tanh", "prelu"]}))
    assert spec["model"]["activation"] == ["tanh", "prelu"]
    linear = validate(minimal(**{"model.hidden": [], "model.activation": "tanh"}))
    assert linear["model"]["activation"] == []


def test_nested_sections_fill_their_defaults() -> None:
    spec = validate(minimal(**{
        "regularization.early_stopping": {"patience": 3},
        "regularization.bagging": {},
        "optimizer.name": "sgd",
        "optimizer.schedule": {"final_lr": 0, "steps": 100},
        "model.gamma": 2,
        "training.log_every": 5,
    }))
    assert spec["regularization"]["early_stopping"] == {"metric": "val_loss", "patience": 3,
                                                        "min_delta": 0.0}
    assert spec["regularization"]["bagging"] == {"models": 5}
    assert spec["optimizer"]["schedule"] == {"kind": "linear", "final_lr": 0.0, "steps": 100}
    assert spec["model"]["gamma"] == 2.0 and spec["training"]["log_every"] == 5


def test_closed_form_on_a_linear_regression_model() -> None:
    spec = validate(minimal(**{"optimizer.name": "closed_form", "model.hidden": [],
                               "data.task": "regression", "regularization.l2": 0.1}))
    assert spec["optimizer"] == {"name": "closed_form", "schedule": None}
    assert spec["training"]["batch_size"] == "full"


# ------------------------------------------------------------------------------ datasets
@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_builtin_dataset_is_accepted(name: str) -> None:
    assert validate({"data": {"dataset": name}})["data"]["dataset"] == name


@pytest.mark.parametrize("suffix", [".npz", ".csv", ".CSV"])
def test_dataset_file_relative_to_base_dir(tmp_path: Path, suffix: str) -> None:
    (tmp_path / "sub").mkdir()
    f = write(tmp_path / "sub", "data" + suffix, b"1,2\n")
    spec = validate({"data": {"dataset": "sub/data" + suffix}}, base_dir=tmp_path)
    assert spec["data"]["dataset"] == str(f.resolve())
    assert spec["data"]["file"] is True
    assert validate(spec) == spec  # an absolute path re-validates anywhere


def test_registered_dataset_names() -> None:
    spec = validate({"data": {"dataset": "my_set"}}, extra_datasets={"my_set"})
    assert spec["data"] == {**spec["data"], "dataset": "my_set", "file": False}


# ------------------------------------------------------------------------------ compare
def test_compare_is_filled_and_arms_normalised() -> None:
    spec = validate(minimal(kind="compare"))
    assert spec["compare"] == {
        "optimizers": [{"name": n} for n in
                       ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")],
        "arms": None, "seeds": 10, "tune_seeds": 1, "metric": "test_loss", "target": None,
        "search": None}
    grid = validate(minimal(kind="compare", compare={
        "optimizers": ["sgd", {"name": "adam", "lr": [1, "1e-3"], "amsgrad": True},
                       {"name": "lbfgs", "c2": [0.5, 0.9]}],
        "target": 0.1}))
    assert grid["compare"]["optimizers"] == [
        {"name": "sgd"}, {"name": "adam", "lr": [1.0, 0.001], "amsgrad": True},
        {"name": "lbfgs", "c2": [0.5, 0.9]}]
    assert validate(grid) == grid


def test_normalise_optimizer_fills_an_arm() -> None:
    assert normalise_optimizer({"name": "lbfgs", "history": 5}) == {
        "name": "lbfgs", "history": 5, "c1": 1e-4, "c2": 0.9, "schedule": None}
    with pytest.raises(SpecError) as exc:
        normalise_optimizer({"name": "sgd", "lr": [0.1, 0.2]}, "compare.optimizers[0]")
    assert_error(exc, "compare.optimizers[0].lr", "a list")


# ------------------------------------------------------------------- bad specs (validate)
BAD_SPECS: list[tuple[str, dict[str, Any], str, tuple[str, ...]]] = [
    # unknown keys at every level, with typo suggestions
    ("top typo", minimal(modle={}), "modle", ("unknown key", "did you mean 'model'?")),
    ("top unknown", minimal(colour="red"), "colour", ("unknown key", "known:")),
    ("data typo", {"data": {"dataset": "digits", "tset": 0.1}}, "data.tset",
     ("did you mean 'test'?",)),
    ("model typo", minimal(**{"model.hiden": [8]}), "model.hiden", ("did you mean 'hidden'?",)),
    ("dropout typo", minimal(**{"model.dropout.inputs": 0.1}), "model.dropout.inputs",
     ("did you mean 'input'?",)),
    ("regularization unknown", minimal(**{"regularization.l3": 1.0}), "regularization.l3",
     ("unknown key",)),
    ("early stopping typo", minimal(**{"regularization.early_stopping": {"patients": 3}}),
     "regularization.early_stopping.patients", ("did you mean 'patience'?",)),
    ("training typo", minimal(**{"training.epoch": 3}), "training.epoch",
     ("did you mean 'epochs'?",)),
    ("compare typo", minimal(kind="compare", compare={"seed": 3}), "compare.seed",
     ("did you mean 'seeds'?",)),
    # wrong types
    ("bool as int", minimal(seed=True), "seed", ("a boolean",)),
    ("string as int", minimal(seed="3"), "seed", ("an integer", "a string")),
    ("float as int", minimal(**{"training.epochs": 2.5}), "training.epochs", ("an integer",)),
    ("string as float", minimal(**{"optimizer.lr": "0.1"}), "optimizer.lr",
     ("a string", "without quotes")),
    ("bool as float", minimal(**{"regularization.l2": False}), "regularization.l2",
     ("a boolean",)),
    ("int as bool", minimal(**{"model.batch_norm": 1}), "model.batch_norm", ("true or false",)),
    ("string as bool", minimal(**{"data.standardize": "yes"}), "data.standardize",
     ("true or false",)),
    ("list where mapping", minimal(model=[64, 64]), "model", ("a mapping", "a list")),
    ("number where mapping", minimal(optimizer="adam"), "optimizer", ("a mapping",)),
    ("int as name", minimal(name=5), "name", ("a string",)),
    ("string as list", minimal(**{"model.hidden": "64"}), "model.hidden", ("a list",)),
    ("bool in list", minimal(**{"model.hidden": [64, True]}), "model.hidden[1]",
     ("a boolean",)),
    ("nan", minimal(**{"model.bias_init": float("nan")}), "model.bias_init", ("finite",)),
    # choices
    ("bad kind", minimal(kind="tune"), "kind", ("train, compare",)),
    ("bad dtype", minimal(dtype="float16"), "dtype", ("float32",)),
    ("bad device", minimal(device="gpu"), "device", ("auto, cuda, cpu",)),
    ("bad task", minimal(**{"data.task": "classify"}), "data.task",
     ("did you mean 'classification'?",)),
    ("bad model kind", minimal(**{"model.kind": "cnn"}), "model.kind", ("mlp",)),
    ("bad activation", minimal(**{"model.activation": "relu2"}), "model.activation",
     ("did you mean 'relu'?",)),
    ("bad activation item", minimal(**{"model.activation": ["relu", "swish"]}),
     "model.activation[1]", ("leaky_relu",)),
    ("bad init", minimal(**{"model.init": "xavier"}), "model.init", ("glorot_uniform",)),
    ("bad gamma", minimal(**{"model.gamma": "auto"}), "model.gamma", ("'scale' or a number",)),
    ("bad diagnostic", minimal(**{"training.diagnostics": ["hessian"]}),
     "training.diagnostics[0]", ("hessian_extremes",)),
    ("repeated diagnostic", minimal(**{"training.diagnostics": ["grad_norm", "grad_norm"]}),
     "training.diagnostics[1]", ("repeats",)),
    # ranges
    ("negative seed", minimal(seed=-1), "seed", ("in [0, 4294967295]",)),
    ("validation 1", minimal(**{"data.validation": 1.0}), "data.validation", ("[0, 1)",)),
    ("negative test", minimal(**{"data.test": -0.1}), "data.test", ("[0, 1)",)),
    ("val+test >= 1", minimal(**{"data.validation": 0.6, "data.test": 0.4}), "data.test",
     ("data.validation", "data.test", "below 1")),
    ("pca 0", minimal(**{"data.pca": 0}), "data.pca", (">= 1",)),
    ("folds 1", minimal(**{"data.folds": 1}), "data.folds", (">= 2",)),
    ("hidden 0", minimal(**{"model.hidden": [64, 0]}), "model.hidden[1]", ("[1, 65536]",)),
    ("hidden too wide", minimal(**{"model.hidden": [100_000]}), "model.hidden[0]",
     ("65536",)),
    ("hidden too many params", minimal(**{"model.hidden": [60_000, 60_000, 60_000]}),
     "model.hidden", ("parameters", "above the limit of 50,000,000")),
    ("activation length", minimal(**{"model.activation": ["relu", "tanh", "relu"]}),
     "model.activation", ("3 entries for 2 hidden layers",)),
    ("dropout bare number", minimal(**{"model.dropout": 0.5}), "model.dropout",
     ("a mapping {input: p, hidden: p}", "use the mapping")),
    ("dropout 1", minimal(**{"model.dropout": {"hidden": 1.0}}), "model.dropout.hidden",
     ("[0, 1)",)),
    ("C 0", minimal(**{"model.C": 0}), "model.C", ("> 0",)),
    ("degree 0", minimal(**{"model.degree": 0}), "model.degree", (">= 1",)),
    ("negative l2", minimal(**{"regularization.l2": -1}), "regularization.l2", (">= 0",)),
    ("clip 0", minimal(**{"regularization.clip_grad_norm": 0}),
     "regularization.clip_grad_norm", ("> 0",)),
    ("early stopping true", minimal(**{"regularization.early_stopping": True}),
     "regularization.early_stopping", ("null or a mapping",)),
    ("patience 0", minimal(**{"regularization.early_stopping": {"patience": 0}}),
     "regularization.early_stopping.patience", (">= 1",)),
    ("bagging 1", minimal(**{"regularization.bagging": {"models": 1}}),
     "regularization.bagging.models", (">= 2",)),
    ("accuracy on regression", minimal(**{"data.task": "regression",
                                          "regularization.early_stopping": {
                                              "metric": "val_accuracy"}}),
     "regularization.early_stopping.metric", ("classification",)),
    ("batch_size 0", minimal(**{"training.batch_size": 0}), "training.batch_size", (">= 1",)),
    ("batch_size half", minimal(**{"training.batch_size": "half"}), "training.batch_size",
     ("'full'",)),
    ("log_every 0", minimal(**{"training.log_every": 0}), "training.log_every", (">= 1",)),
    ("time limit 0", minimal(**{"training.time_limit_s": 0}), "training.time_limit_s",
     ("> 0",)),
    ("checkpoint 0", minimal(**{"training.checkpoint_every": 0}), "training.checkpoint_every",
     (">= 1",)),
    # optimizers
    ("unknown optimizer", minimal(**{"optimizer.name": "adamw"}), "optimizer.name",
     ("sgd, momentum", "did you mean 'adam'?")),
    ("unknown hyperparameter", minimal(**{"optimizer.foo": 1}), "optimizer.foo",
     ("unknown hyperparameter for adam; known: lr, beta1",)),
    ("hyperparameter of another", minimal(**{"optimizer.name": "sgd", "optimizer.momentum": 0.9}),
     "optimizer.momentum", ("unknown hyperparameter for sgd",)),
    ("lr 0", minimal(**{"optimizer.lr": 0}), "optimizer.lr", ("> 0",)),
    ("beta2 1", minimal(**{"optimizer.beta2": 1.0}), "optimizer.beta2", ("[0, 1)",)),
    ("amsgrad string", minimal(**{"optimizer.amsgrad": "true"}), "optimizer.amsgrad",
     ("true or false",)),
    ("eps 0", minimal(**{"optimizer.name": "adagrad", "optimizer.eps": 0}), "optimizer.eps",
     ("> 0",)),
    ("history 0", minimal(**{"optimizer.name": "lbfgs", "optimizer.history": 0}),
     "optimizer.history", (">= 1",)),
    ("c1 above c2", minimal(**{"optimizer.name": "bfgs", "optimizer.c1": 0.95}),
     "optimizer.c1", ("0 < c1 < c2 < 1",)),
    ("c2 below c1", minimal(**{"optimizer.name": "cg_pr", "optimizer.c2": 1e-5}),
     "optimizer.c2", ("above c1",)),
    ("restart 0", minimal(**{"optimizer.name": "cg_fr", "optimizer.restart": 0}),
     "optimizer.restart", (">= 1",)),
    ("closed_form hyper", minimal(**{"optimizer.name": "closed_form", "optimizer.lr": 0.1}),
     "optimizer.lr", ("unknown hyperparameter for closed_form; known: none",)),
    ("schedule on bfgs", minimal(**{"optimizer.name": "bfgs",
                                    "optimizer.schedule": {"final_lr": 0, "steps": 10}}),
     "optimizer.schedule", ("bfgs has no learning rate",)),
    ("schedule kind", minimal(**{"optimizer.schedule": {"kind": "cosine", "final_lr": 0,
                                                        "steps": 10}}),
     "optimizer.schedule.kind", ("linear",)),
    ("schedule without steps", minimal(**{"optimizer.schedule": {"final_lr": 0}}),
     "optimizer.schedule.steps", ("required",)),
    ("closed_form hidden", minimal(**{"optimizer.name": "closed_form"}), "optimizer.name",
     ("closed_form", "model.hidden must be []")),
    ("closed_form softmax", minimal(**{"optimizer.name": "closed_form", "model.hidden": [],
                                       "model.output": "softmax"}),
     "optimizer.name", ("linear output",)),
    ("closed_form l1", minimal(**{"optimizer.name": "closed_form", "model.hidden": [],
                                  "regularization.l1": 0.1}),
     "optimizer.name", ("regularization.l1",)),
    # compare
    ("compare on train", minimal(compare={"seeds": 3}), "compare", ("kind: compare",)),
    ("no arms", minimal(kind="compare", compare={"optimizers": []}), "compare.optimizers",
     ("at least one",)),
    ("arm typo", minimal(kind="compare", compare={"optimizers": ["sgd", "adma"]}),
     "compare.optimizers[1]", ("did you mean 'adam'?",)),
    ("arm without name", minimal(kind="compare", compare={"optimizers": [{"lr": 0.1}]}),
     "compare.optimizers[0].name", ("required",)),
    ("arm unknown hyper", minimal(kind="compare", compare={
        "optimizers": [{"name": "adam", "momentum": 0.9}]}),
     "compare.optimizers[0].momentum", ("unknown hyperparameter for adam",)),
    ("grid value out of range", minimal(kind="compare", compare={
        "optimizers": ["sgd", "momentum", {"name": "adam", "lr": [0.1, -1]}]}),
     "compare.optimizers[2].lr[1]", ("> 0",)),
    ("empty grid", minimal(kind="compare", compare={"optimizers": [{"name": "sgd", "lr": []}]}),
     "compare.optimizers[0].lr", ("empty grid",)),
    ("grid c1 vs c2", minimal(kind="compare", compare={
        "optimizers": [{"name": "lbfgs", "c1": [1e-4, 0.95]}]}),
     "compare.optimizers[0].c1", ("0 < c1 < c2 < 1",)),
    ("duplicate arms", minimal(kind="compare", compare={
        "optimizers": ["adam", {"name": "sgd"}, {"name": "adam"}]}),
     "compare.optimizers[2]", ("repeats compare.optimizers[0]",)),
    ("arm is a number", minimal(kind="compare", compare={"optimizers": [3]}),
     "compare.optimizers[0]", ("an optimizer name or a mapping",)),
    ("closed_form arm", minimal(kind="compare", compare={"optimizers": ["closed_form"]}),
     "compare.optimizers[0]", ("closed_form", "model.hidden")),
    ("seeds 0", minimal(kind="compare", compare={"seeds": 0}), "compare.seeds", (">= 1",)),
    ("bad metric", minimal(kind="compare", compare={"metric": "accuracy"}), "compare.metric",
     ("did you mean",)),
    # data.dataset
    ("missing dataset", {"data": {"task": "auto"}}, "data.dataset", ("required",)),
    ("no data at all", {}, "data.dataset", ("required",)),
    ("data is a list", {"data": ["digits"]}, "data", ("a mapping",)),
    ("dataset typo", {"data": {"dataset": "digts"}}, "data.dataset",
     ("did you mean 'digits'?", "iris")),
    ("unknown dataset", {"data": {"dataset": "imagenet"}}, "data.dataset",
     ("built-in: digits", ".npz or .csv")),
    ("dataset wrong suffix", {"data": {"dataset": "data.txt"}}, "data.dataset",
     (".npz or .csv",)),
    ("dataset missing file", {"data": {"dataset": "nowhere/data.npz"}}, "data.dataset",
     ("file not found:", "data.npz")),
    ("empty dataset", {"data": {"dataset": ""}}, "data.dataset", ("non-empty",)),
]


@pytest.mark.parametrize("raw,path,fragments", [c[1:] for c in BAD_SPECS],
                         ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_names_the_key(raw: dict, path: str, fragments: tuple[str, ...],
                                tmp_path: Path) -> None:
    with pytest.raises(SpecError) as exc:
        validate(raw, base_dir=tmp_path)
    assert_error(exc, path, *fragments)


def test_bad_spec_cases_are_distinct() -> None:
    assert len({c[0] for c in BAD_SPECS}) == len(BAD_SPECS)
    assert len({repr(c[1]) for c in BAD_SPECS}) == len(BAD_SPECS)


def test_top_level_not_a_mapping() -> None:
    with pytest.raises(SpecError) as exc:
        validate([1, 2])  # type: ignore[arg-type]
    assert_error(exc, "", "must be a mapping")


def test_spec_error_is_one_line_and_pickles() -> None:
    e = SpecError("model.hidden", "bad\nvalue")
    assert str(e) == "model.hidden: bad value"
    assert isinstance(e, ValueError)
    back = pickle.loads(pickle.dumps(e))
    assert (back.path, back.message, str(back)) == (e.path, e.message, str(e))
    assert str(SpecError("", "job.yaml: the file is empty")) == "job.yaml: the file is empty"


# --------------------------------------------------------------------------- not built
def test_not_built_is_empty_by_default() -> None:
    assert specmod.NOT_BUILT == {}


def test_not_built_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(specmod.NOT_BUILT, "model.kind=kernel_svm", "kernel SVMs")
    validate(minimal())  # mlp is fine
    with pytest.raises(SpecError) as exc:
        validate(minimal(**{"model.kind": "kernel_svm"}))
    assert_error(exc, "model.kind", "kernel SVMs is not built yet in this version")


def test_not_built_key_and_list_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(specmod.NOT_BUILT, "data.folds", "cross-validation")
    monkeypatch.setitem(specmod.NOT_BUILT, "training.diagnostics=hessian_extremes",
                        "Hessian extremes")
    validate(minimal(**{"data.folds": None}))  # null is not using it
    with pytest.raises(SpecError) as exc:
        validate(minimal(**{"data.folds": 5}))
    assert_error(exc, "data.folds", "cross-validation is not built yet")
    with pytest.raises(SpecError) as exc:
        validate(minimal(**{"training.diagnostics": ["grad_norm", "hessian_extremes"]}))
    assert_error(exc, "training.diagnostics", "Hessian extremes is not built yet")


# ------------------------------------------------------------------------------- files
def test_load_yaml_and_json(tmp_path: Path) -> None:
    y = write(tmp_path, "a.yml", "data:\n  dataset: iris\nseed: 3\n")
    j = write(tmp_path, "b.json", '{"data": {"dataset": "iris"}, "seed": 3}')
    other = write(tmp_path, "c.spec", "data: {dataset: iris}\nseed: 3\n")
    assert load_spec_file(y) == load_spec_file(j) == load_spec_file(str(other)) == {
        "data": {"dataset": "iris"}, "seed": 3}


BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""

BAD_FILES: list[tuple[str, str, str | bytes, tuple[str, ...]]] = [
    ("malformed yaml", "job.yaml", "data:\n  dataset: [digits\nseed: 0\n",
     ("invalid YAML", "line ")),
    ("tab-indented yaml", "job.yml", "data:\n\tdataset: digits\n", ("invalid YAML", "line 2")),
    ("malformed json", "job.json", '{"data": {"dataset": "digits",}}',
     ("invalid JSON", "line 1")),
    ("alias bomb", "job.yaml", BILLION_LAUGHS, ("YAML aliases are not allowed", "line 1")),
    ("lone anchor", "job.yaml", "data: &d {dataset: digits}\n", ("YAML aliases are not allowed",)),
    ("empty file", "job.yaml", "", ("empty",)),
    ("comments only", "job.yaml", "# nothing\n\n", ("empty",)),
    ("top-level list", "job.yaml", "- data\n- model\n", ("top level must be a mapping", "a list")),
    ("top-level scalar json", "job.json", "3", ("top level must be a mapping",)),
    ("duplicate yaml key", "job.yaml", "seed: 1\nseed: 2\n", ("duplicate key 'seed'", "line 2")),
    ("duplicate json key", "job.json", '{"seed": 1, "seed": 2}', ("duplicate key 'seed'",)),
    ("two documents", "job.yaml", "seed: 1\n---\nseed: 2\n", ("invalid YAML", "single document")),
    ("python tag", "job.yaml", "seed: !!python/object/apply:os.system ['true']\n",
     ("invalid YAML",)),
    ("not utf-8", "job.yaml", b"seed: \xff\xfe\n", ("not UTF-8",)),
]


@pytest.mark.parametrize("name,text,fragments", [c[1:] for c in BAD_FILES],
                         ids=[c[0] for c in BAD_FILES])
def test_bad_file(tmp_path: Path, name: str, text: str | bytes,
                  fragments: tuple[str, ...]) -> None:
    p = write(tmp_path, name, text)
    with pytest.raises(SpecError) as exc:
        load_spec_file(p)
    assert_error(exc, "", str(p), *fragments)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as exc:
        load_spec_file(tmp_path / "nope.yaml")
    assert_error(exc, "", "nope.yaml", "file not found")


def test_oversized_file(tmp_path: Path) -> None:
    p = write(tmp_path, "big.yaml", "data: {dataset: digits}\n" + "# pad\n" * 200)
    with pytest.raises(SpecError) as exc:
        load_spec_file(p, max_bytes=1000)
    assert_error(exc, "", "big.yaml", "above the limit of 1,000 bytes")
    assert load_spec_file(p, max_bytes=10_000) == {"data": {"dataset": "digits"}}


def test_default_size_limit_is_one_mebibyte(tmp_path: Path) -> None:
    p = write(tmp_path, "huge.json", " " * (specmod.DEFAULT_MAX_BYTES + 1))
    with pytest.raises(SpecError) as exc:
        load_spec_file(p)
    assert_error(exc, "", "huge.json", "above the limit")


def test_folder_is_not_a_spec(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as exc:
        load_spec_file(tmp_path)
    assert_error(exc, "", "not a file")


def test_dataset_with_wrong_suffix_that_exists(tmp_path: Path) -> None:
    write(tmp_path, "data.txt", "1,2\n")
    with pytest.raises(SpecError) as exc:
        validate({"data": {"dataset": "data.txt"}}, base_dir=tmp_path)
    assert_error(exc, "data.dataset", ".npz or .csv")


def test_dataset_relative_to_spec_file_not_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    (tmp_path / "specs").mkdir()
    write(tmp_path / "specs", "d.npz", b"")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as exc:
        validate({"data": {"dataset": "d.npz"}})  # no base_dir: the working directory
    assert_error(exc, "data.dataset", "file not found:", str(tmp_path.resolve() / "d.npz"))
    assert validate({"data": {"dataset": "d.npz"}}, base_dir=tmp_path / "specs")["data"]["file"]


# ------------------------------------------------------------------------------- --set
def test_set_overrides() -> None:
    raw = minimal(**{"optimizer.name": "sgd"})
    out = apply_overrides(raw, ["optimizer.lr=0.1", "model.hidden=[32,16]",
                                "training.batch_size=full", "regularization.l2=1e-3",
                                "name=my run"])
    assert raw == minimal(**{"optimizer.name": "sgd"})  # not mutated
    assert out["optimizer"] == {"name": "sgd", "lr": 0.1}
    assert out["model"] == {"hidden": [32, 16]}
    assert out["training"] == {"batch_size": "full"}
    spec = validate(out)
    assert spec["regularization"]["l2"] == 0.001
    assert spec["training"]["batch_size"] == "full" and spec["name"] == "my run"
    assert spec["model"]["activation"] == ["relu", "relu"]


def test_set_into_a_null_section_and_later_wins() -> None:
    raw = minimal(**{"regularization.early_stopping": None})
    out = apply_overrides(raw, ["regularization.early_stopping.patience=5", "seed=1", "seed=2"])
    assert out["regularization"]["early_stopping"] == {"patience": 5}
    assert out["seed"] == 2


def test_set_unknown_key_is_caught_by_validation() -> None:
    with pytest.raises(SpecError) as exc:
        validate(apply_overrides(minimal(), ["model.hiden=[8]"]))
    assert_error(exc, "model.hiden", "did you mean 'hidden'?")


BAD_SETS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("no equals", "optimizer.lr", "--set", ("KEY=VALUE",)),
    ("empty key", "=3", "--set", ("dotted path",)),
    ("empty segment", "model..hidden=3", "--set", ("dotted path",)),
    ("trailing dot", "model.=3", "--set", ("dotted path",)),
    ("bad yaml value", "model.hidden=[32,", "--set", ("model.hidden", "cannot read")),
    ("alias in value", "model.hidden=*x", "--set", ("YAML aliases are not allowed",)),
    ("through a list", "model.hidden.x=1", "model.hidden",
     ("a list", "--set model.hidden.x")),
    ("through a scalar", "data.dataset.x=1", "data.dataset", ("a string", "--set data.dataset.x")),
]


@pytest.mark.parametrize("item,path,fragments", [c[1:] for c in BAD_SETS],
                         ids=[c[0] for c in BAD_SETS])
def test_bad_set(item: str, path: str, fragments: tuple[str, ...]) -> None:
    raw = minimal(**{"model.hidden": [8]})
    with pytest.raises(SpecError) as exc:
        apply_overrides(raw, [item])
    assert_error(exc, path, *fragments)


# ------------------------------------------------------------------------------ metrics
@pytest.mark.parametrize("metric,lower", [("train_loss", True), ("val_loss", True),
                                          ("test_loss", True), ("val_accuracy", False),
                                          ("test_accuracy", False)])
def test_lower_is_better(metric: str, lower: bool) -> None:
    assert lower_is_better(metric) is lower


def test_lower_is_better_unknown() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        lower_is_better("f1")
