"""How a comparison fans out into child jobs, and how a grid's tuning phase ends.

Every arm sees, for a given seed, the same split, minibatch order and initial parameters
(all three are functions of the seed alone): a paired design. An arm whose hyperparameter
is a list is a grid (DeepOBS's protocol): each grid point first runs on
``compare.tune_seeds`` seeds; when every tuning run has finished, the point with the best
validation metric is chosen per arm, and that setting runs on all ``compare.seeds`` seeds.
``data.folds: k`` runs one child per fold and reports like a comparison over folds.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from typing import Any

from .celery_app import queue_for
from .jobs import NewJob
from .spec import FULL_BATCH_OPTIMIZERS, SpecError, lower_is_better, normalise_optimizer


def arm_label(arm: dict[str, Any]) -> str:
    """``adam`` or ``adam(lr=0.01)`` — how an arm is named in reports (grids shown as lists)."""
    hyper = {k: v for k, v in arm.items() if k != "name"}
    if not hyper:
        return arm["name"]
    return f"{arm['name']}(" + ", ".join(f"{k}={v}" for k, v in sorted(hyper.items())) + ")"


def grid_points(arm: dict[str, Any]) -> list[dict[str, Any]]:
    """Every setting of an arm's grid (one, without a grid), as {hyperparameter: value}."""
    keys = [k for k, v in arm.items() if isinstance(v, list)]
    base = {k: v for k, v in arm.items() if k != "name" and k not in keys}
    if not keys:
        return [base]
    return [{**base, **dict(zip(keys, combo, strict=True))}
            for combo in itertools.product(*(arm[k] for k in keys))]


def tuning_metric(metric: str) -> str:
    """The validation counterpart of the comparison's metric, used to choose a setting."""
    return "val_accuracy" if metric.endswith("accuracy") else "val_loss"


def _child(spec: dict[str, Any], **changes: Any) -> dict[str, Any]:
    c = copy.deepcopy(spec)
    c["kind"] = "train"
    c["compare"] = None
    c.update(changes)
    return c


def _arm_job(spec: dict[str, Any], n: int, arm: dict[str, Any], setting: dict[str, Any],
             seed: int, user_batch: bool, **extra: Any) -> NewJob:
    opt = normalise_optimizer({"name": arm["name"], **setting}, f"compare.optimizers[{n}]")
    training = dict(spec["training"])
    if not user_batch and opt["name"] in FULL_BATCH_OPTIMIZERS:
        training["batch_size"] = "full"  # line-search methods default to the full batch
    c = _child(spec, optimizer=opt, seed=seed, training=training, _arm=arm_label(arm),
               _arm_index=n, **extra)
    return NewJob(c, "train", spec["name"], seed, opt, queue_for(spec["device"]))


def expand(spec: dict[str, Any], user_batch: bool = True) -> NewJob:
    """A train job, or a comparison with its first children (per arm × seed, grid point ×
    tuning seed, or fold)."""
    queue = queue_for(spec["device"])
    if spec["kind"] == "train" and not spec["data"]["folds"]:
        return NewJob(spec, "train", spec["name"], spec["seed"], spec["optimizer"], queue)
    children: list[NewJob] = []
    if spec["kind"] == "train":
        k = spec["data"]["folds"]
        for i in range(k):
            # one arm whose samples are the folds (as a comparison's are its seeds), so the
            # report gives the mean over folds with its interval
            c = _child(spec, _fold=[k, i], _arm=spec["optimizer"]["name"])
            children.append(NewJob(c, "train", spec["name"], spec["seed"], spec["optimizer"],
                                   queue))
        return NewJob(spec, "compare", spec["name"], spec["seed"], {}, queue, children)
    cmp = spec["compare"]
    for n, arm in enumerate(cmp["optimizers"]):
        points = grid_points(arm)
        if len(points) > 1:
            if spec["data"]["validation"] <= 0:
                raise SpecError(f"compare.optimizers[{n}]", "a grid is tuned on the "
                                "validation metric: set data.validation above 0")
            for point in points:
                for i in range(cmp["tune_seeds"]):
                    children.append(_arm_job(spec, n, arm, point, spec["seed"] + i,
                                             user_batch, _phase="tune", _grid=point))
        else:
            for i in range(cmp["seeds"]):
                children.append(_arm_job(spec, n, arm, points[0], spec["seed"] + i,
                                         user_batch))
    return NewJob(spec, "compare", spec["name"], spec["seed"], {}, queue, children)


def user_batch_of(spec: dict[str, Any]) -> bool:
    return bool(spec.get("_user_batch", True))


def final_children(spec: dict[str, Any], tuning: list[tuple[dict[str, Any], float | None]]
                   ) -> tuple[list[NewJob], dict[str, Any]]:
    """After the tuning phase: the chosen setting per grid arm, run on every seed.

    ``tuning`` lists each finished tuning child as (its spec, its validation metric or None
    when it failed or diverged). Returns the new children and a summary for the report.
    """
    cmp = spec["compare"]
    metric = tuning_metric(cmp["metric"])
    low = lower_is_better(metric)
    by_arm: dict[int, dict[str, list[float]]] = {}
    for cspec, value in tuning:
        n = cspec["_arm_index"]
        key = json.dumps(cspec["_grid"], sort_keys=True)
        by_arm.setdefault(n, {}).setdefault(key, [])
        if value is not None and math.isfinite(value):
            by_arm[n][key].append(value)
    jobs: list[NewJob] = []
    summary: dict[str, Any] = {}
    for n, arm in enumerate(cmp["optimizers"]):
        if n not in by_arm:
            continue
        scores = {k: (sum(v) / len(v) if v else None) for k, v in by_arm[n].items()}
        ranked = [k for k in scores if scores[k] is not None]
        grid = [{"setting": json.loads(k), "n": len(by_arm[n][k]), metric: scores[k]}
                for k in by_arm[n]]
        label = arm_label(arm)
        if not ranked:
            summary[label] = {"metric": metric, "grid": grid, "chosen": None}
            continue
        best = (min if low else max)(ranked, key=lambda k: scores[k])
        setting = json.loads(best)
        summary[label] = {"metric": metric, "grid": grid, "chosen": setting}
        for i in range(cmp["seeds"]):
            jobs.append(_arm_job(spec, n, arm, setting, spec["seed"] + i,
                                 user_batch_of(spec), _phase="final", _grid=setting))
    return jobs, summary
