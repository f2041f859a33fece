"""The cross-field rules of a job spec, :func:`validate` that applies them after the schema,
and the rules that need the dataset's shape (:func:`check_data`, at submission)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from gradq.nn.datasets import BUILTIN

from .arms import _check_arms, is_grid
from .files import _parse_value
from .kinds import LATER, MAX_HIDDEN_PARAMS, NOT_BUILT, SpecError, _suggest, _what
from .optimizers import FULL_BATCH_OPTIMIZERS, OPTIMIZERS
from .schema import _COMPARE, _SCHEMA, _SECTIONS
from .suite import check_search_method

# ----------------------------------------------------------------- cross-field rules
_MISSING = object()


def _lookup(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, Mapping) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _not_built(spec: dict, raw: Mapping) -> None:
    for key, feature in NOT_BUILT.items():
        path, eq, wanted = key.partition("=")
        if eq:
            have, want = _lookup(spec, path), _parse_value(wanted)
            hit = have == want or (isinstance(have, list) and want in have)
        else:
            hit = _lookup(raw, path) not in (None, _MISSING)
        if hit:
            raise SpecError(path, f"{feature} is not built yet in this version")


def _data_split(spec: dict) -> None:
    v, t = spec["data"]["validation"], spec["data"]["test"]
    if v + t >= 1:
        raise SpecError("data.test", f"data.validation ({v}) + data.test ({t}) must be below 1, "
                                     "to leave data to train on")


def _dataset(spec: dict, base_dir: Path | None, registered: Collection[str]) -> None:
    """A built-in (or registered) name stays a name; a file becomes an absolute path."""
    data = spec["data"]
    name: str = data["dataset"]
    if name in BUILTIN or name in registered:
        data["file"] = False
        return
    p = Path(name).expanduser()
    if not p.suffix and "/" not in name and "\\" not in name:
        hint = _suggest(name, [*BUILTIN, *registered])
        raise SpecError("data.dataset", f"unknown dataset {name!r}"
                        + (f" ({hint})" if hint else "")
                        + f"; built-in: {', '.join(BUILTIN)}; or give a .npz or .csv file")
    if p.suffix.lower() not in (".npz", ".csv"):
        raise SpecError("data.dataset", f"a dataset file must be .npz or .csv, got {name!r}")
    if not p.is_absolute():
        p = (base_dir if base_dir is not None else Path.cwd()) / p
    try:
        p = p.resolve()
        found = p.is_file()
    except (OSError, ValueError):
        found = False
    if not found:
        raise SpecError("data.dataset", f"file not found: {p}")
    data["dataset"], data["file"] = str(p), True


def _activations(spec: dict) -> None:
    """One activation name per hidden layer."""
    model = spec["model"]
    n, act = len(model["hidden"]), model["activation"]
    if isinstance(act, str):
        model["activation"] = [act] * n
    elif len(act) != n:
        raise SpecError("model.activation", f"has {len(act)} entries for {n} hidden layers; "
                                             f"give one name, or a list of {n}")


def _l1_proximal(spec: dict) -> None:
    """The proximal L1 step follows a plain gradient step: sgd only (every arm, in a
    comparison)."""
    if not spec["regularization"]["l1_proximal"]:
        return
    names = [spec["optimizer"]["name"]]
    if spec["kind"] == "compare" and spec.get("compare"):
        if spec["compare"]["optimizers"] is None:
            return  # compare.arms: each arm was validated whole
        names = [a["name"] for a in spec["compare"]["optimizers"]]
    for name in names:
        if name != "sgd":
            raise SpecError("regularization.l1_proximal",
                            f"the proximal L1 step needs optimizer sgd, not {name}")


def _hidden_size(spec: dict) -> None:
    h = spec["model"]["hidden"]
    total = sum(a * b for a, b in zip(h, h[1:], strict=False))
    if total > MAX_HIDDEN_PARAMS:
        raise SpecError("model.hidden", f"{total:,} parameters between hidden layers, above "
                                        f"the limit of {MAX_HIDDEN_PARAMS:,}")


def _closed_form_problem(spec: dict) -> str | None:
    """Why ``closed_form`` cannot fit this model, or None. (With ``task: auto`` the output
    is not known yet; the trainer checks that case.)"""
    model, task = spec["model"], spec["data"]["task"]
    if model["kind"] != "mlp":
        return f"fits a linear model, not model.kind {model['kind']}"
    if model["hidden"]:
        return f"needs a linear model: model.hidden must be [], got {model['hidden']}"
    if model["output"] in ("softmax", "sigmoid"):
        return f"needs a linear output, not model.output {model['output']}"
    if model["output"] == "auto" and task == "classification":
        return "needs a linear output; data.task classification gives softmax or sigmoid"
    if spec["regularization"]["l1"] > 0:
        return "solves the L2 (ridge) objective only; set regularization.l1 to 0"
    if model["dropout"]["input"] > 0:
        return "has no dropout; set model.dropout.input to 0"
    return None


def _closed_form(spec: dict) -> None:
    if spec["optimizer"]["name"] == "closed_form":
        why = _closed_form_problem(spec)
        if why:
            raise SpecError("optimizer.name", f"closed_form {why}")


def _batch_size(spec: dict) -> None:
    """Second-order and line-search methods default to the full batch (docs/optimizers.md)."""
    training = spec["training"]
    if training["batch_size"] is LATER:
        full = spec["optimizer"]["name"] in FULL_BATCH_OPTIMIZERS
        training["batch_size"] = "full" if full else 128


def _compare(spec: dict) -> None:
    """``compare`` only on a comparison, and always filled there."""
    if spec["kind"] != "compare":
        if spec["compare"] is not None:
            raise SpecError("compare", f"only for kind: compare; this job is kind: {spec['kind']}")
        return
    if spec["compare"] is None:
        spec["compare"] = _COMPARE.check({}, "compare")
    for i, arm in enumerate(spec["compare"]["optimizers"] or []):
        why = _closed_form_problem(spec) if arm["name"] == "closed_form" else None
        if why:
            raise SpecError(f"compare.optimizers[{i}]", f"closed_form {why}")


def _accuracy_needs_classes(spec: dict) -> None:
    if spec["data"]["task"] != "regression":
        return
    for path in ("regularization.early_stopping.metric", "compare.metric"):
        metric = _lookup(spec, path)
        if isinstance(metric, str) and metric.endswith("accuracy"):
            raise SpecError(path, f"{metric} needs a classification task; data.task is "
                                  "regression")


def _split_parts(spec: dict) -> dict[str, str]:
    """The parts of the data that the spec reads, each with the key that asks for it:
    ``{"val": "regularization.early_stopping.metric", "test": "compare.metric", ...}``
    (the first key that needs a part names it)."""
    needs: dict[str, str] = {}

    def need(metric: Any, key: str) -> None:
        if isinstance(metric, str) and metric[:4] in ("val_", "test"):
            needs.setdefault("val" if metric.startswith("val_") else "test", key)

    es = spec["regularization"]["early_stopping"]
    if es is not None:
        need(es["metric"], "regularization.early_stopping.metric")
    cmp = spec.get("compare")
    if spec["kind"] == "compare" and cmp:
        need(cmp["metric"], "compare.metric")
        for i, arm in enumerate(cmp.get("optimizers") or ()):
            grid = next((k for k, v in arm.items() if isinstance(v, list)), None)
            if grid is not None:  # a grid is tuned on the validation metric
                needs.setdefault("val", f"compare.optimizers[{i}].{grid}")
        for i, arm in enumerate(cmp.get("arms") or ()):
            grid = next((k for k, v in arm.items() if is_grid(k, v)), None)
            if grid is not None:
                needs.setdefault("val", f"compare.arms[{i}].{grid}")
        if cmp.get("search"):  # searched arms are tuned on the validation metric too
            needs.setdefault("val", "compare.search")
    return needs


def _parts_exist(spec: dict) -> None:
    """A metric is only read on a part that the split makes: a val_* metric (early
    stopping, a comparison's metric, a grid's tuning) needs data.validation above 0, a
    test_* one data.test above 0 (or folds, whose test part is the held-out fold)."""
    data = spec["data"]
    for part, key in _split_parts(spec).items():
        if part == "val" and data["validation"] <= 0:
            raise SpecError(key, "needs a validation part: set data.validation above 0 "
                                 "(it is 0)")
        if part == "test" and data["test"] <= 0 and not data["folds"]:
            raise SpecError(key, "needs a test part: set data.test above 0 (it is 0)")


def _target(spec: dict) -> None:
    """``compare.target`` must be a value the metric can take: an accuracy in [0, 1], a
    loss at or above 0 (a target outside never counts as reached)."""
    cmp = spec.get("compare")
    if spec["kind"] != "compare" or not cmp or cmp.get("target") is None:
        return
    target, metric = cmp["target"], cmp["metric"]
    if metric.endswith("accuracy") and not 0 <= target <= 1:
        raise SpecError("compare.target", f"{target} is not an accuracy ({metric} lies in "
                                          "[0, 1])")
    if metric.endswith("loss") and target < 0:
        raise SpecError("compare.target", f"{target} is below 0, which {metric} never is")


def _bagging(spec: dict) -> None:
    """Bagging trains an ensemble of networks; a kernel SVM is fitted once."""
    if spec["regularization"]["bagging"] and spec["model"]["kind"] != "mlp":
        raise SpecError("regularization.bagging", "bags networks only, not model.kind: "
                                                  f"{spec['model']['kind']}")


def _batch_norm_batch(spec: dict) -> None:
    """Batch norm on minibatches of one sample normalises every unit to 0 (torch refuses
    it too: "expected more than 1 value per channel")."""
    model, bs = spec["model"], spec["training"]["batch_size"]
    if model["batch_norm"] and model["hidden"] and bs == 1:
        raise SpecError("training.batch_size", "batch_norm needs at least 2 samples per "
                                               "minibatch, got 1")


# ------------------------------------------------ rules that need the dataset's shape
def parameter_count(spec: dict, n_features: int, n_out: int) -> int:
    """Parameters of the spec's MLP on data of ``n_features`` (before PCA) and ``n_out``
    outputs, as ``nn.network.layout`` lays them out: weights, biases (batch norm's γ and β
    instead, on hidden layers) and PReLU slopes."""
    model = spec["model"]
    hidden = list(model["hidden"])
    sizes = [spec["data"]["pca"] or n_features, *hidden, n_out]
    acts = model["activation"]
    acts = [acts] * len(hidden) if isinstance(acts, str) else list(acts)
    total = sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))
    for i, width in enumerate(sizes[1:]):
        on_hidden = i < len(hidden)
        total += width * (2 if on_hidden and model["batch_norm"] else 1)
        total += width if on_hidden and acts[i] == "prelu" else 0
    return total


def check_data(spec: dict, *, n_features: int, task: str, n_out: int,
               split: tuple[int, int, int]) -> None:
    """The rules that need the dataset: called at submission, where the client has read it.

    ``task`` is the resolved task, ``n_out`` the network's outputs (classes for softmax, 1
    for sigmoid or one regression target), ``split`` the smallest (train, validation, test)
    sizes the job will see (over its folds). Raises :class:`SpecError` naming the key.
    """
    data = spec["data"]
    n_train, n_val, n_test = split
    if task == "regression":
        for path in ("regularization.early_stopping.metric", "compare.metric"):
            metric = _lookup(spec, path)
            if isinstance(metric, str) and metric.endswith("accuracy"):
                raise SpecError(path, f"{metric} needs a classification task; this dataset "
                                      "is a regression (its labels are not classes)")
    if n_train < 1:
        raise SpecError("data.validation", "no samples are left for training: lower "
                                           "data.validation or data.test")
    for part, key in _split_parts(spec).items():
        if part == "val" and n_val < 1:
            raise SpecError(key, f"needs a validation part, but data.validation "
                                 f"{data['validation']} of this dataset is 0 samples")
        if part == "test" and n_test < 1:
            raise SpecError(key, f"needs a test part, but data.test {data['test']} of this "
                                 "dataset is 0 samples")
    pca = data["pca"]
    if pca is not None and pca > min(n_features, n_train):
        raise SpecError("data.pca", f"{pca} components asked for, but the data has "
                        f"{n_features} features and {n_train} training samples")
    resolved = {**spec, "data": {**data, "task": task}}
    for path, arm in _optimizer_arms(spec):  # task: auto is known now
        why = _closed_form_problem(resolved) if arm.get("name") == "closed_form" else None
        if why:
            raise SpecError(path if path != "optimizer" else "optimizer.name",
                            f"closed_form {why}")
    if spec["model"]["kind"] == "mlp":
        _max_params(spec, parameter_count(spec, n_features, n_out))


def _optimizer_arms(spec: dict) -> list[tuple[str, Mapping[str, Any]]]:
    """(key, optimizer) of each optimizer this job trains with; none for ``compare.arms``
    (``check_data`` runs on each arm's whole spec)."""
    cmp = spec.get("compare")
    if spec["kind"] == "compare" and cmp:
        if cmp["optimizers"] is None:
            return []
        return [(f"compare.optimizers[{i}]", a) for i, a in enumerate(cmp["optimizers"])]
    return [("optimizer", spec["optimizer"])]


def _max_params(spec: dict, k: int) -> None:
    """A method with ``max_params`` (newton's full Hessian) refuses a larger model at
    submission rather than failing on a worker."""
    for path, arm in _optimizer_arms(spec):
        defaults = OPTIMIZERS.get(arm.get("name"), {})
        if "max_params" not in defaults:
            continue
        limit = arm.get("max_params", defaults["max_params"])
        limit = max(limit) if isinstance(limit, list) else limit
        if k > limit:
            raise SpecError(f"{path}.max_params" if "max_params" in arm else f"{path}.name",
                            f"{arm['name']} is limited to {limit:,} parameters, and this "
                            f"model has {k:,}; use lbfgs or cg_pr, or raise max_params")


def validate(raw: Mapping[str, Any], base_dir: Path | None = None, *,
             extra_datasets: Collection[str] = ()) -> dict[str, Any]:
    """Return the normalised spec of ``raw`` or raise :class:`SpecError` naming the key.

    ``base_dir`` (the spec file's folder; default the working directory) resolves a
    relative dataset path; ``extra_datasets`` are dataset names known to the database
    (``gradq datasets add``), accepted beside the built-ins. ``raw`` is not modified.
    """
    if not isinstance(raw, Mapping):
        raise SpecError("", f"a job spec must be a mapping of keys, got {_what(raw)}")
    if raw.get("kind") == "suite":  # docs/suites.md: one comparison per workload (spec/suite.py)
        from .suite import validate_suite

        return validate_suite(raw, validate, base_dir, extra_datasets=extra_datasets)
    # A section written as a bare `model:` with everything under it commented out loads as
    # null: read it as "all defaults".
    raw = {k: {} if v is None and k in _SECTIONS else v for k, v in raw.items()}
    spec = _SCHEMA.check(raw, "")
    _not_built(spec, raw)
    _data_split(spec)
    _dataset(spec, Path(base_dir) if base_dir is not None else None, extra_datasets)
    _activations(spec)
    _hidden_size(spec)
    _closed_form(spec)
    _batch_size(spec)
    _compare(spec)
    if spec["compare"] is not None:
        _check_arms(spec, raw)
    _l1_proximal(spec)  # after _compare, which fills a comparison's default arms
    _accuracy_needs_classes(spec)
    _parts_exist(spec)
    _target(spec)
    check_search_method(spec)
    _batch_norm_batch(spec)
    _bagging(spec)
    return spec


