"""A suite as jobs (docs/suites.md): one comparison per workload, children of the suite job.

``expand`` turns a validated suite spec into a job tree: the suite (kind ``suite``), under
it one comparison per workload (and, for ``target: auto``, its reference comparison,
created first so that ``gradq run`` and a FIFO pool run it first), under each comparison
its runs as ``service.experiments.compare.expand`` plans them. Comparisons are ordinary:
``report``, ``ls --parent``, the dashboard, ``rm``/``gc``, ``cancel``/``retry`` work on each.

A suite settles as a comparison does, one level up (``settle_status``): it ends when its
last comparison ends; ``succeeded`` when at least one workload's comparison succeeded (a
failed workload is marked failed in the report, the others stand), ``failed`` when none
did, ``cancelled`` when it was cancelled.
"""

from __future__ import annotations

import copy
from typing import Any

from gradq.service.celery_app import queue_for
from gradq.service.experiments.compare import expand as expand_compare
from gradq.service.store.newjob import NewJob

SUITE_KINDS = ("suite",)
PARENT_KINDS = ("compare", "suite")  # jobs that no worker runs: their children do


def stored_spec(spec: dict[str, Any], n_train: dict[str, int]) -> dict[str, Any]:
    """The suite's spec as stored: the plan's comparisons live in the children, the suite
    keeps each workload's name, metric, target and how it was set."""
    out = copy.deepcopy({k: v for k, v in spec.items() if k != "suite"})
    suite = {k: v for k, v in spec["suite"].items() if k != "_plan"}
    suite["_workloads"] = [
        {"name": w["name"], "metric": w["metric"], "target": w["target"],
         "target_set_by": w["target_set_by"], "n_train": n_train.get(w["name"]),
         "reference": (w["reference"]["compare"]["optimizers"] if w["reference"] else None)}
        for w in spec["suite"]["_plan"]]
    out["suite"] = suite
    return out


def expand(spec: dict[str, Any], io: dict[str, tuple[int, int]] | None = None,
           n_train: dict[str, int] | None = None) -> NewJob:
    """The suite job with its comparisons (references first) and their runs. ``io`` and
    ``n_train`` per workload name: the network's (inputs, outputs) and training rows."""
    io = io or {}
    n_train = n_train or {}
    plan = spec["suite"]["_plan"]
    children: list[NewJob] = []
    for w in plan:  # reference comparisons first: their targets are the suite's to learn
        if w["reference"] is not None:
            children.append(_comparison(w["reference"], io.get(w["name"]),
                                        n_train.get(w["name"])))
    for w in plan:
        children.append(_comparison(w["spec"], io.get(w["name"]), n_train.get(w["name"])))
    progress = {"workloads": [w["name"] for w in plan]}
    return NewJob(stored_spec(spec, n_train), "suite", spec["name"], spec["seed"], {},
                  queue_for(spec["device"]), children, progress)


def _comparison(spec: dict[str, Any], io: tuple[int, int] | None, n_train: int | None
                ) -> NewJob:
    spec = copy.deepcopy(spec)
    if n_train is not None:
        spec["_n_train"] = n_train  # samples to target: steps × batch, exactly (report)
    job = expand_compare(spec, user_batch=False, io=io)
    return job


def settle_status(counts: dict[str, int], cancel_requested: bool) -> tuple[str, str | None]:
    """A finished suite's status and error from its comparisons' statuses (all finished)."""
    bad = {k: v for k, v in counts.items() if k != "succeeded"}
    error = ("workloads not succeeded: " + ", ".join(f"{v} {k}" for k, v in sorted(bad.items()))
             if bad else None)
    if cancel_requested:
        return "cancelled", error
    return ("succeeded" if counts.get("succeeded") else "failed"), error


def prepare(spec: dict[str, Any]) -> NewJob:
    """Check each workload against its data (``service.submit.check_fit``: an optimizer
    that makes no sense on it, such as newton over ``max_params``, is refused with the
    reason) and expand the suite. Workloads use built-in datasets."""
    from gradq.nn.datasets import BUILTIN, DatasetError, load_builtin
    from gradq.service.settings import get_settings
    from gradq.service.spec import SpecError
    from gradq.service.spec.suite import remap, workload_path
    from gradq.service.submit import _io, check_fit, split_sizes

    suite_name = spec["suite"]["workloads"] if isinstance(spec["suite"]["workloads"], str) \
        else None
    io: dict[str, tuple[int, int]] = {}
    n_train: dict[str, int] = {}
    for i, w in enumerate(spec["suite"]["_plan"]):
        name = w["name"]
        dataset = w["spec"]["data"]["dataset"]
        if w["spec"]["data"]["file"] or dataset not in BUILTIN:
            raise SpecError(f"{workload_path(i, name, suite_name)}.spec.data.dataset",
                            f"{dataset!r}: a suite's workloads use built-in datasets ("
                            f"{', '.join(sorted(BUILTIN))})")
        try:
            ds = load_builtin(dataset, cache_dir=get_settings().cache_dir)
        except DatasetError as exc:
            raise SpecError(f"{workload_path(i, name, suite_name)}.spec.data.dataset",
                            str(exc)) from None
        for ref, one in ((False, w["spec"]), (True, w["reference"])):
            if one is None:
                continue
            try:
                check_fit(one, ds)
            except SpecError as e:
                raise remap(e, i, name, suite_name, ref) from None
        task = w["spec"]["data"]["task"] if w["spec"]["data"]["task"] != "auto" else ds.task
        for j, arm in enumerate(w["spec"]["compare"]["optimizers"] or ()):
            if arm["name"] == "closed_form" and task != "regression":
                raise SpecError(f"suite.optimizers[{j}]",
                                f"on workload {name}: closed_form solves least squares: it "
                                f"needs a regression task, and {dataset} is {task}")
        n_train[name] = split_sizes(w["spec"], ds, task)[0]
        io[name] = _io(w["spec"], ds)
    return expand(spec, io, n_train)
