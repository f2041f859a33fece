"""The JSON Schema (draft 2020-12) of a job spec, generated from the schema's kinds.

Editors use it for completion and checking of YAML job files (docs/spec.md says how);
``gradq spec --schema`` prints it. It checks what can be checked key by key: types, enums,
ranges, defaults, unknown keys, and each optimizer's own hyperparameters. The cross-field
rules (``rules.py``), the dataset and a comparison's arms validated whole stay with
:func:`gradq.service.spec.validate`, so a file the schema accepts may still be refused there.
"""

from __future__ import annotations

import copy
from typing import Any

from gradq.nn import registry

from .arms import _ArmList
from .kinds import (
    _SCI_NUMBER,
    LATER,
    REQUIRED,
    Bool,
    Choice,
    Const,
    Either,
    Float,
    Int,
    Kind,
    ListOf,
    Section,
    Str,
)
from .optimizers import _SCHEDULE, _Arms, _Optimizer, _OptimizerName, kind_of
from .schema import _SCHEMA, DESCRIPTIONS
from .spaces import DISTRIBUTIONS
from .suite import DESCRIPTIONS as SUITE_DESCRIPTIONS
from .suite import TOP_KEYS as SUITE_TOP_KEYS

DRAFT = "https://json-schema.org/draft/2020-12/schema"
# PyYAML (YAML 1.1) reads `lr: 1e-3` as the string "1e-3"; validation accepts exactly that
# shape, and so does the schema, for a checker that loads YAML the same way
_SCI_PATTERN = "^" + _SCI_NUMBER.pattern + "$"
_ARM_KEY = r"^(label|dtype|(model|regularization|optimizer|training)(\..+)?)$"


def _number(kind: Float | Int) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer" if isinstance(kind, Int) else "number"}
    lo_open = getattr(kind, "lo_open", False)
    hi_open = getattr(kind, "hi_open", False)
    if kind.lo is not None:
        out["exclusiveMinimum" if lo_open else "minimum"] = kind.lo
    if kind.hi is not None:
        out["exclusiveMaximum" if hi_open else "maximum"] = kind.hi
    if isinstance(kind, Float):
        return {"anyOf": [out, {"type": "string", "pattern": _SCI_PATTERN}]}
    return out


def _space() -> dict[str, Any]:
    """A search space: one of {loguniform: [a, b]}, ..., {choice: [...]}."""
    pair = {"type": "array", "minItems": 2, "maxItems": 2}
    return {"type": "object", "minProperties": 1, "maxProperties": 1,
            "propertyNames": {"enum": list(DISTRIBUTIONS)},
            "properties": {d: ({"type": "array", "minItems": 1} if d == "choice" else pair)
                           for d in DISTRIBUTIONS}}


def _hyper_schema(name: str) -> dict[str, Any]:
    """The properties of optimizer ``name``: its hyperparameters and ``schedule``."""
    entry = registry.get(name)
    props: dict[str, Any] = {}
    for key, default in entry.defaults.items():
        r = entry.range_of(key)
        props[key] = {**kind_schema(kind_of(r)), "default": default}
        if r.doc:
            props[key]["description"] = r.doc
    if entry.schedule and "lr" in entry.defaults:
        props["schedule"] = {**kind_schema(_SCHEDULE), "default": None,
                             "description": "learning-rate schedule: linear from lr to "
                                            "final_lr over steps updates, then constant"}
    return props


def _optimizer() -> dict[str, Any]:
    names = list(registry.names())
    keys = sorted({k for e in registry.all_entries() for k in e.defaults} | {"schedule"})
    rules = []
    for name in names:
        props = _hyper_schema(name)
        then = {"properties": props, "propertyNames": {"enum": ["name", *props]}}
        when: dict[str, Any] = {"properties": {"name": {"const": name}}, "required": ["name"]}
        if name == "adam":  # the default name
            when = {"anyOf": [when, {"not": {"required": ["name"]}}]}
        rules.append({"if": when, "then": then})
    return {"type": "object",
            "properties": {"name": {"enum": names, "default": "adam"}},
            "propertyNames": {"enum": ["name", *keys]},
            "allOf": rules}


def _arms() -> dict[str, Any]:
    names = list(registry.names())
    keys = sorted({k for e in registry.all_entries() for k in e.defaults} | {"schedule"})
    value = {"anyOf": [{"type": ["number", "boolean", "null", "string"]},
                       {"type": "array", "minItems": 1}, _space(), kind_schema(_SCHEDULE)]}
    mapping = {"type": "object", "required": ["name"],
               "properties": {"name": {"enum": names}},
               "propertyNames": {"enum": ["name", *keys]},
               "additionalProperties": value}
    return {"type": "array", "minItems": 1, "items": {"anyOf": [{"enum": names}, mapping]}}


def kind_schema(kind: Kind, path: str = "") -> dict[str, Any]:
    """The JSON Schema of one field kind (``path``: its dotted key, for descriptions)."""
    if isinstance(kind, Section):
        props: dict[str, Any] = {}
        required = []
        for key, (sub, default) in kind.fields.items():
            dotted = f"{path}.{key}" if path else key
            props[key] = kind_schema(sub, dotted)
            if default is REQUIRED or isinstance(sub, Section) and props[key].get("required"):
                required.append(key)  # a section with a required key (data) is required too
            elif default is not LATER:
                props[key]["default"] = copy.deepcopy(default)
            if dotted in DESCRIPTIONS:
                props[key]["description"] = DESCRIPTIONS[dotted]
        out = {"type": "object", "properties": props, "additionalProperties": False}
        return {**out, "required": required} if required else out
    if isinstance(kind, (Int, Float)):
        return _number(kind)
    if isinstance(kind, Bool):
        return {"type": "boolean"}
    if isinstance(kind, Str):
        return {"type": "string"} if kind.empty else {"type": "string", "minLength": 1}
    if isinstance(kind, Choice):
        return {"enum": list(kind.options)}
    if isinstance(kind, _OptimizerName):
        return {"enum": list(registry.names())}
    if isinstance(kind, Const):
        return {"const": kind.value}
    if isinstance(kind, Either):
        return {"anyOf": [kind_schema(a, path) for a in kind.alternatives]}
    if isinstance(kind, ListOf):
        out = {"type": "array", "items": kind_schema(kind.item, path)}
        if kind.unique:
            out["uniqueItems"] = True
        if kind.nonempty:
            out["minItems"] = 1
        return out
    if isinstance(kind, _Optimizer):
        return _optimizer()
    if isinstance(kind, _Arms):
        return _arms()
    if isinstance(kind, _ArmList):
        return {"type": "array", "minItems": 1,
                "items": {"type": "object", "required": ["label"],
                          "properties": {"label": {"type": "string", "minLength": 1}},
                          "propertyNames": {"pattern": _ARM_KEY}}}
    raise TypeError(f"no JSON Schema for the kind {type(kind).__name__}")


def _suite(main: dict[str, Any]) -> dict[str, Any]:
    """``suite``, the section of a ``kind: suite`` spec: its workloads' train specs are
    checked as the sections of a train spec are."""
    from gradq.service.experiments.workloads import BUILTIN_SUITES

    from .suite import BUDGETS, WORKLOAD_SPEC_KEYS

    top = main["properties"]
    compare = next(a for a in top["compare"]["anyOf"] if a.get("type") == "object")
    compare = compare["properties"]
    workload_spec = {"type": "object", "required": ["data"], "additionalProperties": False,
                     "properties": {k: top[k] for k in WORKLOAD_SPEC_KEYS}}
    workload = {"type": "object", "required": ["name", "spec", "metric", "target"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "spec": workload_spec,
                    "metric": {"type": "string", "minLength": 1},
                    "target": {"anyOf": [{"type": "number"}, {"const": "auto"}],
                               "description": SUITE_DESCRIPTIONS["suite.workloads[].target"]},
                    "reference": {
                        **compare["optimizers"],
                        "description": SUITE_DESCRIPTIONS["suite.workloads[].reference"]}}}
    suite = {"type": "object", "required": ["workloads"], "additionalProperties": False,
             "properties": {
                 "workloads": {"anyOf": [{"enum": sorted(BUILTIN_SUITES)},
                                         {"type": "array", "minItems": 1, "items": workload}],
                               "description": SUITE_DESCRIPTIONS["suite.workloads"]},
                 "optimizers": compare["optimizers"], "search": compare["search"],
                 "seeds": compare["seeds"], "tune_seeds": compare["tune_seeds"],
                 "budget": {"enum": list(BUDGETS), "default": "steps"},
                 "r_max": {"type": "number", "exclusiveMinimum": 1, "default": 4}}}
    return suite


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a job spec file, as a JSON-ready dict: a train
    or compare spec, or (``kind: suite``) a suite of workloads. Every key is a property at
    the top, so that an editor completes all of them; which keys a kind takes (and which it
    needs) is said by ``if``/``then``/``else`` on ``kind``."""
    out = kind_schema(_SCHEMA)
    props = out["properties"]
    props["kind"] = {**props["kind"], "enum": [*props["kind"]["enum"], "suite"]}
    props["suite"] = {**_suite(out), "description": SUITE_DESCRIPTIONS["suite"]}
    required = out.pop("required")
    return {"$schema": DRAFT, "title": "gradq job spec",
            "description": "A gradq job spec (docs/spec.md). Generated from "
                           "gradq.service.spec; print it with gradq spec --schema.",
            **out,
            "if": {"properties": {"kind": {"const": "suite"}}, "required": ["kind"]},
            "then": {"required": ["suite"], "propertyNames": {"enum": list(SUITE_TOP_KEYS)}},
            "else": {"required": required, "not": {"required": ["suite"]}}}
