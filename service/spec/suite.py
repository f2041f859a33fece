"""``kind: suite`` (docs/suites.md): validation of a suite spec into one comparison per workload.

A suite spec has ``name``, ``kind``, ``seed``, ``dtype``, ``device`` and a ``suite``
section. Each workload becomes a ``kind: compare`` spec — the workload's train spec with the
suite's optimizers, search and seeds — and is validated by :func:`gradq.service.spec.validate`
like any comparison; an error it finds is reported under the suite's own key
(``compare.optimizers[3]`` → ``suite.optimizers[3]``, naming the workload), so that a user
reads the key they wrote. A workload with ``target: auto`` gets a second comparison, the
reference, run first with its own seeds; its best arm's median final metric is the target.

The rules that need the data (an optimizer that makes no sense on a workload, such as
newton over ``max_params``, or an accuracy on a regression) are checked at submission by
``service.submit``, which loads each workload's dataset, and reported the same way.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

TOP_KEYS = ("name", "kind", "seed", "dtype", "device", "suite")
SUITE_KEYS = ("workloads", "optimizers", "search", "seeds", "tune_seeds", "budget", "r_max")
WORKLOAD_KEYS = ("name", "spec", "metric", "target", "reference")
WORKLOAD_SPEC_KEYS = ("data", "model", "regularization", "optimizer", "training")
BUDGETS = ("steps", "samples", "seconds")
REFERENCE_SEED_OFFSET = 1000  # the reference comparison's seeds start here past the suite's
DEFAULTS: dict[str, Any] = {"optimizers": None, "search": None, "seeds": 5, "tune_seeds": 1,
                            "budget": "steps", "r_max": 4.0}

# What each key of a suite spec means: docs/spec.md's suite table and the JSON Schema's
# descriptions read these (a key without one fails the reference's generation).
DESCRIPTIONS: dict[str, str] = {
    "suite": "kind: suite only: optimizers judged across workloads (docs/suites.md)",
    "suite.workloads": "a built-in suite's name, or a list of workloads {name, spec, metric, "
                       "target}",
    "suite.workloads[].name": "unique within the suite",
    "suite.workloads[].spec": "the workload: a train spec's sections",
    "suite.workloads[].metric": "e.g. val_loss or val_accuracy: what time to target and the "
                                "final figures read",
    "suite.workloads[].target": "a value of the metric, or auto (the median final metric of a "
                                "reference comparison's best arm)",
    "suite.workloads[].reference": "with target: auto, the optimizers of the reference "
                                   "comparison (default: the suite's, each at its given "
                                   "settings, unsearched)",
    "suite.optimizers": "the optimizers judged, with search spaces allowed (null: "
                        "compare.optimizers' default)",
    "suite.search": "the search run per optimizer on every workload",
    "suite.seeds": "evaluation seeds per arm and workload",
    "suite.tune_seeds": "as compare.tune_seeds",
    "suite.budget": "what time to target is counted in for the profiles",
    "suite.r_max": "the performance profile's range, τ in [1, r_max]",
}

Validate = Callable[..., dict[str, Any]]


def _err(path: str, message: str) -> Exception:
    from gradq.service.spec import SpecError

    return SpecError(path, message)


def optuna_missing() -> bool:
    """Whether Optuna (``method: tpe``) cannot be imported here."""
    return importlib.util.find_spec("optuna") is None


TPE_INSTALL = "pip install 'gradq[tpe]' (or pip install optuna)"


def check_search_method(spec: Mapping[str, Any], path: str = "compare.search") -> None:
    """``method: tpe`` needs Optuna and decides one wave at a time, so it is refused
    without Optuna and together with successive halving; ``wave`` is for tpe only."""
    search = (spec.get("compare") or {}).get("search") if spec.get("kind") == "compare" \
        else None
    if not search:
        return
    if search["method"] == "tpe":
        if optuna_missing():
            raise _err(f"{path}.method", f"tpe uses Optuna's TPESampler, which is not "
                                         f"installed: {TPE_INSTALL}")
        if search.get("pruner"):
            raise _err(f"{path}.pruner", "successive halving is not combined with tpe "
                                         "(tpe decides trials in waves); use method: random")
    elif search.get("wave") is not None:
        raise _err(f"{path}.wave", f"only for method: tpe (this search is "
                                   f"{search['method']})")


def _what(v: Any) -> str:
    return f"{type(v).__name__} {v!r}"


def _number(path: str, v: Any, above: float | None = None, integer: bool = False) -> Any:
    ok = isinstance(v, int) if integer else isinstance(v, int | float)
    if isinstance(v, bool) or not ok:
        kind = "an integer" if integer else "a number"
        raise _err(path, f"must be {kind}, got {_what(v)}")
    if above is not None and not v > above:
        raise _err(path, f"must be above {above:g}, got {v}")
    return v


def _section(raw: Any) -> dict[str, Any]:
    if raw is None:
        raise _err("suite", "missing: a suite needs suite.workloads (a built-in suite name "
                            "such as book-mini, or a list of workloads)")
    if not isinstance(raw, Mapping):
        raise _err("suite", f"must be a mapping, got {_what(raw)}")
    for k in raw:
        if k not in SUITE_KEYS:
            raise _err(f"suite.{k}", f"unknown key; suite takes {', '.join(SUITE_KEYS)}")
    out = {**DEFAULTS, **{k: v for k, v in raw.items() if v is not None or k == "search"}}
    if "workloads" not in raw or raw["workloads"] is None:
        raise _err("suite.workloads", "missing: a built-in suite name (book-mini) or a list "
                                      "of workloads {name, spec, metric, target}")
    if out["budget"] not in BUDGETS:
        raise _err("suite.budget", f"{out['budget']!r} is not a unit of time to target; one "
                                   f"of {', '.join(BUDGETS)}")
    r_max = _number("suite.r_max", out["r_max"])
    if not r_max > 1:
        raise _err("suite.r_max", f"must be above 1 (the profile spans τ in [1, r_max]), "
                                  f"got {r_max}")
    out["r_max"] = float(r_max)
    _number("suite.seeds", out["seeds"], above=0, integer=True)
    _number("suite.tune_seeds", out["tune_seeds"], above=0, integer=True)
    opts = out["optimizers"]
    if opts is not None and not isinstance(opts, list):
        raise _err("suite.optimizers", f"must be a list of optimizers, got {_what(opts)}")
    if opts == []:
        raise _err("suite.optimizers", "empty: list at least one optimizer to judge")
    return out


def _workloads(section: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The workload entries as written (a built-in suite's copied), and the suite's name."""
    from gradq.service.experiments.workloads import BUILTIN_SUITES, builtin

    w = section["workloads"]
    if isinstance(w, str):
        if w not in BUILTIN_SUITES:
            raise _err("suite.workloads", f"unknown suite {w!r}; built-in suites: "
                                          f"{', '.join(sorted(BUILTIN_SUITES))}")
        return builtin(w), w
    if not isinstance(w, list) or not w:
        raise _err("suite.workloads", f"must be a built-in suite name or a non-empty list of "
                                      f"workloads, got {_what(w)}")
    names: set[str] = set()
    for i, entry in enumerate(w):
        path = f"suite.workloads[{i}]"
        if not isinstance(entry, Mapping):
            raise _err(path, f"must be a mapping {{name, spec, metric, target}}, got "
                             f"{_what(entry)}")
        for k in entry:
            if k not in WORKLOAD_KEYS:
                raise _err(f"{path}.{k}", f"unknown key; a workload takes "
                                          f"{', '.join(WORKLOAD_KEYS)}")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _err(f"{path}.name", "missing: each workload needs a name")
        if name in names:
            raise _err(f"{path}.name", f"{name!r} is used twice; workload names are unique")
        names.add(name)
        if not isinstance(entry.get("spec"), Mapping):
            raise _err(f"{path}.spec", "missing: a train spec (data, model, training, ...)")
        for k in entry["spec"]:
            if k not in WORKLOAD_SPEC_KEYS:
                raise _err(f"{path}.spec.{k}", f"not in a workload: a workload is a train "
                                               f"spec ({', '.join(WORKLOAD_SPEC_KEYS)}); the "
                                               "suite sets kind, seed and compare")
        if "target" not in entry or entry["target"] is None:
            raise _err(f"{path}.target", "missing: a value of the workload's metric, or auto "
                                         "(set by a reference comparison run first)")
        t = entry["target"]
        if t != "auto":
            _number(f"{path}.target", t)
        ref = entry.get("reference")
        if ref is not None and t != "auto":
            raise _err(f"{path}.reference", "only with target: auto (the reference "
                                            "comparison sets the target)")
        if ref is not None and (not isinstance(ref, list) or not ref):
            raise _err(f"{path}.reference", f"must be a non-empty list of optimizers, got "
                                            f"{_what(ref)}")
    return [copy.deepcopy(dict(e)) for e in w], None


def workload_path(i: int, name: str, suite_name: str | None) -> str:
    """How a workload is named in an error: its index, or the built-in suite and name."""
    return f"suite.workloads[{i}]" if suite_name is None else \
        f"suite.workloads ({suite_name}: {name})"


def remap(e: Exception, i: int, name: str, suite_name: str | None,
          reference: bool = False) -> Exception:
    """An error of a workload's comparison spec, under the suite key that the user wrote."""
    from gradq.service.spec import SpecError

    assert isinstance(e, SpecError)
    path, msg = e.path, e.message
    where = workload_path(i, name, suite_name)
    on = f"on workload {name}{' (its reference comparison)' if reference else ''}: "
    if path.startswith("compare.optimizers"):
        if reference:
            return SpecError(f"{where}.reference" + path[len("compare.optimizers"):],
                             on + msg)
        return SpecError("suite.optimizers" + path[len("compare.optimizers"):], on + msg)
    if path.startswith("compare.search"):
        return SpecError("suite.search" + path[len("compare.search"):], msg)
    if path in ("compare.seeds", "compare.tune_seeds"):
        return SpecError("suite." + path[len("compare."):], msg)
    if path in ("compare.metric", "compare.target"):
        return SpecError(f"{where}.{path[len('compare.'):]}", on + msg)
    if path in ("seed", "dtype", "device", "name"):
        return SpecError(path, msg)
    return SpecError(f"{where}.spec.{path}" if path else f"{where}.spec", msg)


def compare_spec(top: dict[str, Any], section: dict[str, Any], entry: dict[str, Any],
                 reference: bool = False) -> dict[str, Any]:
    """The raw comparison spec that runs a workload (or its reference comparison)."""
    raw = copy.deepcopy(dict(entry["spec"]))
    target = entry["target"]
    optimizers = section["optimizers"]
    seed = top.get("seed", 0)
    if reference:
        optimizers = entry.get("reference") or optimizers
        seed = (seed if isinstance(seed, int) else 0) + REFERENCE_SEED_OFFSET
    cmp: dict[str, Any] = {"seeds": section["seeds"], "tune_seeds": section["tune_seeds"],
                           "metric": entry.get("metric", "val_loss"),
                           "target": None if reference or target == "auto" else target,
                           "search": copy.deepcopy(section["search"])}
    if optimizers is not None:
        cmp["optimizers"] = copy.deepcopy(optimizers)
    if reference and not any(isinstance(o, Mapping) and any(isinstance(v, Mapping)
                                                            for v in o.values())
                             for o in optimizers or ()):
        cmp["search"] = None  # reference optimizers given as fixed settings: nothing to search
    role = "reference" if reference else "workload"
    raw.update(kind="compare", seed=seed, compare=cmp,
               name=f"{top.get('name') or 'suite'}/{entry['name']}"
                    + ("/reference" if reference else ""))
    for k in ("dtype", "device"):
        if k in top:
            raw[k] = top[k]
    raw["_suite_role"] = role
    return raw


def validate_suite(raw: Mapping[str, Any], validate: Validate, base_dir: Path | None = None,
                   *, extra_datasets: Collection[str] = ()) -> dict[str, Any]:
    """The normalised suite spec; ``suite._plan`` holds each workload's normalised
    comparison spec (and its reference's), which ``service.experiments.suite`` expands."""
    from gradq.service.spec import METRICS

    for k in raw:
        if k not in TOP_KEYS:
            raise _err(k, f"unknown key for kind: suite; it takes {', '.join(TOP_KEYS)} (a "
                          "workload's data, model and training go under suite.workloads)")
    top = {k: raw[k] for k in TOP_KEYS if k in raw and k != "suite"}
    if "name" in top and top["name"] is not None and not isinstance(top["name"], str):
        raise _err("name", f"must be a string, got {_what(top['name'])}")
    section = _section(raw.get("suite"))
    entries, suite_name = _workloads(section)
    plan = []
    for i, entry in enumerate(entries):
        name = entry["name"]
        metric = entry.get("metric", "val_loss")
        if metric not in METRICS:
            raise _err(f"{workload_path(i, name, suite_name)}.metric",
                       f"{metric!r} is not a metric a workload logs; one of "
                       f"{', '.join(METRICS)}")
        if metric.startswith("train_"):
            raise _err(f"{workload_path(i, name, suite_name)}.metric",
                       "a suite judges a validation or test metric, not train_loss")
        specs = {}
        for ref in ((False, True) if entry["target"] == "auto" else (False,)):
            one = compare_spec(top, section, entry, reference=ref)
            role = one.pop("_suite_role")
            try:
                spec = validate(one, base_dir, extra_datasets=extra_datasets)
            except Exception as e:
                from gradq.service.spec import SpecError

                if isinstance(e, SpecError):
                    raise remap(e, i, name, suite_name, ref) from None
                raise
            spec["_suite_role"] = role
            spec["_workload"] = name
            spec["_user_batch"] = False  # full-batch methods: full batch (docs/optimizers.md)
            specs[role] = spec
        work = specs["workload"]
        target = entry["target"]
        plan.append({"name": name, "metric": metric,
                     "target": None if target == "auto" else float(target),
                     "target_set_by": ("reference" if target == "auto" else
                                       "builtin" if suite_name else "user"),
                     "spec": work, "reference": specs.get("reference")})
    first = plan[0]["spec"]
    suite = {k: section[k] for k in SUITE_KEYS if k != "workloads"}
    suite["workloads"] = suite_name or [e["name"] for e in entries]
    suite["optimizers"] = first["compare"]["optimizers"]
    suite["search"] = first["compare"]["search"]
    suite["_plan"] = plan
    return {"name": top.get("name") or suite_name or "suite", "kind": "suite",
            "seed": first["seed"], "dtype": first["dtype"], "device": first["device"],
            "suite": suite}
