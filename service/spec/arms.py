"""``compare.arms``: arms of dotted overrides, each a value, a grid or a search space; the
normalised spec of one arm, and the comparison rules checked arm by arm.

``arm_spec`` validates an arm as a whole spec, and ``_kind_at`` reads the schema: both import
their module (``rules``, ``schema``) when called, as those import this one."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from gradq.nn import registry

from .kinds import Either, Kind, Section, SpecError, Str, _bad, _join, _what
from .optimizers import _OPTIMIZER_NAME, HYPERPARAMETERS
from .spaces import DISTRIBUTIONS, _refuse_grid_and_space, candidates, check_space, is_space


def is_grid(key: str, value: Any) -> bool:
    """Whether an arm's override of the dotted ``key`` is a grid: a list, for a key whose
    own value is not a list (``model.hidden: [64]`` is a value)."""
    if not isinstance(value, list):
        return False
    kind = _kind_at(key)
    return kind is not None and not kind.accepts(value)



_ARM_SECTIONS = ("model", "regularization", "optimizer", "training")


def _kind_at(key: str) -> Kind | None:
    """The field kind of a dotted spec key (None where unknown: validation names it)."""
    parts = key.split(".")
    if parts[0] == "optimizer" and len(parts) == 2:
        return _OPTIMIZER_NAME if parts[1] == "name" else HYPERPARAMETERS.get(parts[1])
    from .schema import _SCHEMA

    node: Kind = _SCHEMA
    for part in parts:
        if isinstance(node, Either):
            node = next((a for a in node.alternatives if isinstance(a, Section)), node)
        if not isinstance(node, Section) or part not in node.fields:
            return None
        node = node.fields[part][0]
    return node


class _ArmList(Kind):
    """``compare.arms``: ``[{label: ..., dotted.key: value, ...}]``. Each override is a
    value, a grid (a list, for a key that is not itself a list) or a search space; the
    labels are unique. The arms are validated whole by ``_check_arms``."""

    describe = "a list of arms {label: ..., dotted.key: value, ...}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (list, tuple))

    def check(self, value: Any, path: str) -> list[dict[str, Any]]:
        if not isinstance(value, (list, tuple)):
            raise _bad(path, self.describe, value)
        if not value:
            raise SpecError(path, "must list at least one arm")
        arms: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for i, entry in enumerate(value):
            p = f"{path}[{i}]"
            if not isinstance(entry, Mapping):
                raise _bad(p, "a mapping {label: ..., dotted.key: value}", entry)
            if "label" not in entry:
                raise SpecError(_join(p, "label"), "required: every arm has a unique label")
            label = Str(empty=False).check(entry["label"], _join(p, "label"))
            if label in seen:
                raise SpecError(_join(p, "label"), f"{label!r} is already the label of "
                                                   f"{path}[{seen[label]}]")
            seen[label] = i
            arm: dict[str, Any] = {"label": label}
            for key, v in entry.items():
                if key != "label":
                    arm[str(key)] = self._override(str(key), v, f"{p} (label {label})")
            _refuse_grid_and_space(arm, f"{p} (label {label})", dotted=True,
                                   is_grid=is_grid)
            arms.append(arm)
        return arms

    @staticmethod
    def _override(key: str, v: Any, where: str) -> Any:
        top = key.split(".")[0]
        if top not in _ARM_SECTIONS and key != "dtype":
            why = ("the data section is shared by every arm, so that each seed gives every "
                   "arm the same split" if top == "data" else "it is the comparison's own")
            raise SpecError(where, f"{key}: cannot differ between arms ({why}); an arm "
                                   f"overrides keys of {', '.join(_ARM_SECTIONS)} or dtype")
        kind = _kind_at(key)
        if isinstance(v, Mapping) and (kind is None and next(iter(v), None) in DISTRIBUTIONS
                                       or kind is not None and not kind.accepts(v)):
            try:
                return check_space(v, key)
            except SpecError as e:
                raise SpecError(where, str(e)) from None
        if isinstance(v, (list, tuple)) and kind is not None and not kind.accepts(v):
            if not v:
                raise SpecError(where, f"{key}: an empty grid; give a value or a non-empty "
                                       "list")
            return copy.deepcopy(list(v))
        return copy.deepcopy(v)


def arm_spec(base: Mapping[str, Any], overrides: Mapping[str, Any], user_batch: bool = True
             ) -> dict[str, Any]:
    """The normalised train spec of one arm: the comparison ``base`` (normalised) with the
    arm's dotted ``overrides`` (values, no grids or spaces) applied, validated whole.

    An arm that names an optimizer (``optimizer`` or ``optimizer.name``) starts from that
    optimizer's defaults; the batch size then follows it unless the user gave one. An arm
    that changes ``model.hidden`` keeps a single activation for its new depth. The data
    section (already checked, its file already read) is the base's, unchanged. Raises
    :class:`SpecError` naming the key.
    """
    raw = {k: copy.deepcopy(v) for k, v in base.items() if not str(k).startswith("_")}
    raw.update(kind="train", compare=None)
    keys = set(overrides)
    acts = raw["model"]["activation"]
    if keys & {"model.hidden", "model"} and "model.activation" not in keys \
            and isinstance(acts, list) and len(set(acts)) <= 1:
        raw["model"]["activation"] = acts[0] if acts else "relu"
    if keys & {"optimizer", "optimizer.name"}:
        raw["optimizer"] = {}
        if not user_batch:
            raw["training"].pop("batch_size", None)
    for key, value in overrides.items():
        parts = key.split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise SpecError(".".join(parts[: i + 1]), f"is {_what(child)}, so an arm "
                                                          f"cannot set {key} inside it")
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    from .rules import validate

    data = base["data"]
    spec = validate(raw, extra_datasets=(data["dataset"],))
    spec["data"]["file"], spec["data"]["dataset"] = data["file"], data["dataset"]
    return spec


def arm_path(i: int, arm: Mapping[str, Any]) -> str:
    """How a message names arm ``i`` of ``compare.arms``."""
    return f"compare.arms[{i}] (label {arm['label']})"


def arm_points(arm: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The overrides of an arm that validation tries: its first candidate of every key,
    then each other candidate (a grid's points, a space's endpoints or options) in turn."""
    over = {k: v for k, v in arm.items() if k != "label"}
    options = {k: candidates(v, is_grid(k, v)) for k, v in over.items()}
    first = {k: v[0] for k, v in options.items()}
    return [first] + [{**first, k: x} for k, v in options.items() for x in v[1:]]


DEFAULT_LR_SCALE = 100.0  # a default space spans two decades either side of the lr


def _default_lr_spaces(optimizers: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    """A search over optimizers named without any space (``optimizers: [sgd, adam]`` with
    ``search: {trials: 16}``) searches each one's learning rate: log-uniform over two decades
    either side of its lr (its own, or its default), as benchmark suites give every
    optimizer a learning-rate range by default. Optimizers without an lr (closed form,
    second order) stay as they are. Returns the spaces as ``tuned`` entries."""
    tuned = []
    for i, arm in enumerate(optimizers):
        defaults = registry.get(arm["name"]).defaults
        if "lr" not in defaults:  # closed form and second order: nothing to search
            continue
        lr = arm.get("lr", defaults["lr"])  # validated: a positive number (no grid here)
        arm["lr"] = check_space({"loguniform": [lr / DEFAULT_LR_SCALE, lr * DEFAULT_LR_SCALE]},
                                "lr")
        tuned.append((f"compare.optimizers[{i}]", "lr", arm["lr"]))
    return tuned


def _check_arms(spec: dict, raw: Mapping[str, Any]) -> None:
    """A comparison's arms and searches, each arm validated as a whole spec at every value
    its grid or space may take (endpoints, options); one line names the arm and the key."""
    cmp = spec["compare"]
    given = raw.get("compare") if isinstance(raw.get("compare"), Mapping) else {}
    user_batch = isinstance(raw.get("training"), Mapping) and "batch_size" in raw["training"]
    if cmp["arms"] is None and cmp["optimizers"] is None:
        raise SpecError("compare.optimizers", "must list optimizers, or give compare.arms")
    if cmp["arms"] is not None:
        if given.get("optimizers") is not None:
            raise SpecError("compare.arms", "give compare.arms or compare.optimizers, not both"
                                            " (optimizers is the shorthand for arms over "
                                            "optimizer)")
        cmp["optimizers"] = None
        tuned = []
        for i, arm in enumerate(cmp["arms"]):
            where = arm_path(i, arm)
            over = {k: v for k, v in arm.items() if k != "label"}
            for point in arm_points(arm):
                try:
                    arm_spec(spec, point, user_batch)
                except SpecError as e:
                    raise SpecError(where, str(e)) from None
            tuned += [(where, k, v) for k, v in over.items()
                      if is_grid(k, v) or is_space(v)]
    else:
        tuned = [(f"compare.optimizers[{i}]", k, v) for i, arm in enumerate(cmp["optimizers"])
                 for k, v in arm.items() if isinstance(v, list) or is_space(v)]
        if cmp["search"] is not None and not tuned:
            tuned = _default_lr_spaces(cmp["optimizers"])
    def error(where: str, key: str, message: str) -> SpecError:
        # an arm of compare.arms is named with its label; an optimizer's key is a path
        if where.startswith("compare.arms"):
            return SpecError(where, f"{key}: {message}")
        return SpecError(_join(where, key), message)

    spaces = [t for t in tuned if is_space(t[2])]
    if spaces and cmp["search"] is None:
        where, key, _ = spaces[0]
        raise error(where, key, "a search space needs compare.search, e.g. "
                                "{method: random, trials: 16}")
    pruner = (cmp["search"] or {}).get("pruner")
    if pruner:  # a trial must train through its rung: the rung's end is its checkpoint
        for where, key, value in tuned:
            if key == "training.epochs" and is_space(value):
                # the rungs are the arm's, cut from one epoch budget: a trial with a budget
                # of its own would be ranked against trials at other epochs
                raise error(where, key, "successive halving gives every trial of an arm the "
                                        "same rungs, up to training.epochs: it cannot be "
                                        "searched under compare.search.pruner (search it "
                                        "without the pruner, or give it one value per arm)")
        stops = [("regularization.early_stopping", spec["regularization"]["early_stopping"]),
                 ("training.time_limit_s", spec["training"]["time_limit_s"])]
        stops += [(f"{arm_path(i, arm)}: {k}", v) for i, arm in enumerate(cmp["arms"] or ())
                  for k, v in arm.items()
                  if k.startswith(("regularization.early_stopping", "training.time_limit_s"))]
        for key, value in stops:
            if value is not None:
                raise SpecError("compare.search.pruner", f"successive halving trains every "
                                f"trial to the end of its rung; {key} would stop it early "
                                "(drop the pruner, or the early stop)")
    if cmp["search"] is not None and not spaces:
        raise SpecError("compare.search", "no arm has a search space ({loguniform: [a, b]}, "
                                          "{uniform: [a, b]}, {int: [a, b]}, {choice: [...]})"
                                          " nor a first-order optimizer whose lr it could "
                                          "search by default")
    if tuned and spec["data"]["validation"] <= 0:
        where, key, _ = tuned[0]
        raise error(where, key, "grids and searches are tuned on the validation metric: "
                                "set data.validation above 0")


