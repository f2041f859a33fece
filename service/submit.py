"""From a spec file to stored (and enqueued) jobs, refusing bad input before anything is kept.

The client reads and checks everything — the spec, the dataset file, the fit between the two
— and only then stores the job and its dataset in one transaction. A comparison is expanded
here into its child jobs (docs/spec.md ``compare``, docs/guarantees.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradq.nn.datasets import BUILTIN, Dataset, DatasetError, load_builtin
from gradq.nn.preprocess import split_indices
from gradq.service.celery_app import ping_broker
from gradq.service.experiments.compare import expand
from gradq.service.publish import publish_jobs
from gradq.service.settings import get_settings
from gradq.service.spec import (
    FULL_BATCH_OPTIMIZERS,
    SpecError,
    apply_overrides,
    arm_path,
    arm_points,
    arm_spec,
    check_data,
    load_spec_file,
    validate,
)
from gradq.service.store import create as store
from gradq.service.store.datasets import fetch_dataset_bytes, read_user_file, registered
from gradq.service.store.newjob import NewJob


@dataclass(frozen=True)
class Prepared:
    """A validated submission, ready to store."""

    spec: dict[str, Any]
    job: NewJob
    dataset: tuple[str, bytes, str] | None  # (hash, canonical bytes, source) of a file
    dataset_hash: str | None
    warnings: tuple[str, ...] = ()  # see ``warnings``: runs as asked, but not as intended


def prepare(path: str | Path, sets: list[str] | tuple[str, ...] = ()) -> Prepared:
    """Load, override and validate a spec, read its data, and expand it into jobs."""
    settings = get_settings()
    path = Path(path)
    raw = load_spec_file(path, max_bytes=settings.max_spec_bytes)
    raw = apply_overrides(raw, list(sets))
    reg_hash = None
    name = (raw.get("data") or {}).get("dataset") if isinstance(raw.get("data"), dict) else None
    if isinstance(name, str) and name not in BUILTIN and not _looks_like_path(name):
        reg_hash = registered(name)
    spec = validate(raw, base_dir=path.parent, extra_datasets=(name,) if reg_hash else ())
    if spec["kind"] == "suite":  # one comparison per workload, each checked on its data
        from gradq.service.experiments import suite

        return Prepared(spec, suite.prepare(spec), None, None)
    dataset = None
    digest = reg_hash
    task = spec["data"]["task"]
    try:
        if spec["data"]["file"]:
            digest, data, ds = read_user_file(spec["data"]["dataset"], task,
                                              settings.max_dataset_bytes)
            dataset = (digest, data, Path(spec["data"]["dataset"]).name)
        elif reg_hash is not None:
            from gradq.nn.datasets import parse_bytes

            ds = parse_bytes(fetch_dataset_bytes(reg_hash), "npz", name=name, task=task)
        else:
            # made once per process (``gradq run``'s runner gets the same arrays) and
            # cached on disk for the next process
            ds = load_builtin(spec["data"]["dataset"], cache_dir=settings.cache_dir)
    except DatasetError as exc:
        raise SpecError("data.dataset", str(exc)) from None
    check_fit(spec, ds)
    user_batch = isinstance(raw.get("training"), dict) and "batch_size" in raw["training"]
    if spec["kind"] == "compare":
        spec["_user_batch"] = user_batch  # the grid's final runs are planned later
    return Prepared(spec, expand(spec, user_batch, io=_io(spec, ds)), dataset, digest,
                    warnings=tuple(warnings(spec)))


def _io(spec: dict[str, Any], ds: Dataset) -> tuple[int, int]:
    """The network's inputs and outputs on this data (to name arms' shapes)."""
    n_in = spec["data"]["pca"] or int(ds.X.shape[1])
    task = spec["data"]["task"] if spec["data"]["task"] != "auto" else ds.task
    if task != "classification":
        return n_in, 1 if ds.y.ndim == 1 else int(ds.y.shape[1])
    k = len(set(ds.y.tolist()))
    return n_in, 1 if k == 2 and spec["model"]["output"] in ("auto", "sigmoid") else k


# Methods whose every step assumes the whole objective: line searches and curvature pairs
# (second order), Jacobs' sign test (delta_bar_delta). closed_form takes no batches at all.
_FULL_BATCH_RULES = FULL_BATCH_OPTIMIZERS - {"closed_form"}


def warnings(spec: dict[str, Any]) -> list[str]:
    """What a validated spec asks for that will run, but not as the method intends
    (docs/optimizers.md).

    A line-search or second-order method, or delta_bar_delta, on minibatches; and newton,
    whose full Hessian costs O(k²) memory and O(k³) time in the k parameters. A comparison's
    arms are judged with the batch size ``expand`` gives them. Pure: reads the spec only.
    """
    batch = spec["training"]["batch_size"]
    if spec["kind"] == "compare" and spec.get("compare"):
        user_batch = bool(spec.get("_user_batch", True))
        if spec["compare"]["optimizers"] is None:  # compare.arms
            runs = []
            for arm in spec["compare"]["arms"]:
                name = arm.get("optimizer.name") or (arm.get("optimizer") or {}).get(
                    "name", spec["optimizer"]["name"])
                size = arm.get("training.batch_size", batch)
                if name in FULL_BATCH_OPTIMIZERS and not user_batch \
                        and "training.batch_size" not in arm:
                    size = "full"
                if isinstance(name, str) and isinstance(size, int | str):
                    runs.append((name, size))  # a tuned optimizer or batch: not judged here
        else:
            runs = [(arm["name"], "full" if arm["name"] in FULL_BATCH_OPTIMIZERS
                     and not user_batch else batch) for arm in spec["compare"]["optimizers"]]
    else:
        runs = [(spec["optimizer"]["name"], batch)]
    out = []
    for name, size in dict.fromkeys(runs):  # each (optimizer, batch) once, in order
        if name not in _FULL_BATCH_RULES or size == "full":
            continue
        if name == "delta_bar_delta":
            why = ("Jacobs' rule reads sign changes of the gradient, and minibatch noise "
                   "makes them up")
        else:
            why = ("its line searches and curvature estimates see a new sample each step, "
                   "so they are noisy and the loss may rise")
        out.append(f"{name} on minibatches of {size}: {why}; it is meant for "
                   "training.batch_size: full (its default)")
    if any(name == "newton" for name, _ in runs):
        out.append("newton builds the full k×k Hessian from k Hessian-vector products and "
                   "factors it: O(k²) memory and O(k³) time per step in the k parameters "
                   "(models above max_params are refused); lbfgs or cg_pr scale further")
    return out


def _looks_like_path(name: str) -> bool:
    return "/" in name or "\\" in name or name.endswith((".npz", ".csv"))


def check_fit(spec: dict[str, Any], ds: Dataset) -> None:
    """Checks that need the data: task against output and optimizer, sizes against k."""
    task = spec["data"]["task"] if spec["data"]["task"] != "auto" else ds.task
    if spec["data"]["task"] != "auto" and ds.task != task:
        raise SpecError("data.task", f"{task} asked for, but the labels are {ds.task} "
                        "(classification needs integer labels)")
    output = spec["model"]["output"]
    n_classes = len(set(ds.y.tolist())) if task == "classification" else None
    if output == "softmax" and task != "classification":
        raise SpecError("model.output", "softmax needs a classification task")
    if output == "sigmoid" and (task != "classification" or n_classes != 2):
        raise SpecError("model.output", "sigmoid needs a binary classification task "
                        f"(this dataset has {n_classes or 'no'} classes)")
    if output == "linear" and task == "classification":
        raise SpecError("model.output", "linear needs a regression task")
    if spec["model"]["kind"] == "kernel_svm" and task != "classification":
        raise SpecError("model.kind", "kernel_svm is a classifier: it needs a classification "
                        "task")
    if spec["optimizer"]["name"] == "closed_form" and task != "regression":
        raise SpecError("optimizer.name", "closed_form solves least squares: it needs a "
                        "regression task and a linear output")
    n, d = ds.X.shape
    folds = spec["data"]["folds"]
    if folds is not None and folds > n:
        raise SpecError("data.folds", f"{folds} folds asked for, but there are {n} samples")
    if output == "auto":
        output = "linear" if task == "regression" else (
            "sigmoid" if n_classes == 2 else "softmax")
    n_out = (int(ds.y.max()) + 1 if output == "softmax" else
             1 if output == "sigmoid" or ds.y.ndim == 1 else int(ds.y.shape[1]))
    check_data(spec, n_features=d, task=task, n_out=n_out, split=split_sizes(spec, ds, task))
    cmp = spec.get("compare") or {}
    for i, arm in enumerate(cmp.get("arms") or ()):  # each arm as the whole spec it runs
        for point in arm_points(arm):
            one = arm_spec(spec, point)
            try:
                check_data(one, n_features=d, task=task, n_out=n_out,
                           split=split_sizes(one, ds, task))
            except SpecError as e:
                raise SpecError(arm_path(i, arm), str(e)) from None


def split_sizes(spec: dict[str, Any], ds: Dataset, task: str) -> tuple[int, int, int]:
    """The smallest (train, validation, test) sizes the job's split gives, over its folds
    (the split's own arithmetic: per-class rounding for classification)."""
    data = spec["data"]
    k = data["folds"]
    folds = [None] if not k else sorted({(k, 0), (k, k - 1)})  # the largest and smallest
    sizes = [tuple(len(p) for p in split_indices(ds.y, task, data["validation"],
                                                 data["test"], spec["seed"], f))
             for f in folds]
    return tuple(min(s[i] for s in sizes) for i in range(3))  # type: ignore[return-value]


def _time_limits(prepared: Prepared) -> list[tuple[str, float]]:
    """Every ``training.time_limit_s`` the submission may run with, where it is set: the
    spec's, each arm's (a search space's bounds or choices), each stored job's."""
    out: list[tuple[str, float]] = []

    def add(where: str, value: Any) -> None:
        if isinstance(value, dict):  # a search space: {uniform: [a, b]}, {choice: [...]}
            for bounds in value.values():
                for v in bounds if isinstance(bounds, list) else ():
                    add(where, v)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out.append((where, float(value)))

    def walk(spec: dict[str, Any], where: str) -> None:
        add(where, (spec.get("training") or {}).get("time_limit_s"))
        for i, arm in enumerate((spec.get("compare") or {}).get("arms") or ()):
            add(arm_path(i, arm), arm.get("training.time_limit_s"))
            add(arm_path(i, arm), (arm.get("training") or {}).get("time_limit_s")
                if isinstance(arm.get("training"), dict) else None)

    walk(prepared.spec, "training.time_limit_s")
    todo = [prepared.job]
    while todo:
        job = todo.pop()
        walk(job.spec, "training.time_limit_s")
        todo += list(job.children)
    return out


def check_time_limit(prepared: Prepared, limit_s: float) -> None:
    """Refuse a ``training.time_limit_s`` longer than the queue keeps a message in flight.

    A job's message is acknowledged when the job ends; Redis hands a message that is still
    unacknowledged after the broker's visibility timeout to another worker. The claim makes
    that delivery a no-op, but a job that may run that long is refused here instead, so
    that a message is in flight once (docs/queue.md). ``gradq run`` has no broker: no limit.
    """
    for where, value in _time_limits(prepared):
        if value > limit_s:
            raise SpecError(where, f"training.time_limit_s: {value:g} s is longer than the "
                            f"queue can hold a running job's message ({limit_s:g} s, 90% of "
                            "the broker's visibility timeout): raise GRADQ_BROKER_VISIBILITY_S "
                            "on the workers and clients, or train in shorter jobs")


def create(prepared: Prepared, *, priority: int = 0) -> list[str]:
    """Store the jobs (no message sent); returns [id] or [parent, children…]."""
    return store.create_jobs(prepared.job, dataset=prepared.dataset, priority=priority,
                            max_attempts=get_settings().max_attempts,
                            dataset_hash=prepared.dataset_hash)


def submit(path: str | Path, sets: list[str] | tuple[str, ...] = (), *, priority: int = 0,
           warn: Callable[[str], None] | None = None) -> list[str]:
    """Validate, store and enqueue. The broker is checked first, so a submit that cannot be
    enqueued stores nothing; should it fail between store and publish, the sweeper
    publishes the stored jobs later. ``warn`` receives the spec's warnings."""
    prepared = prepare(path, sets)
    check_time_limit(prepared, get_settings().max_time_limit_s)
    for w in prepared.warnings:
        if warn is not None:
            warn(w)
    ping_broker()
    ids = create(prepared, priority=priority)
    publish_jobs(ids)
    return ids
