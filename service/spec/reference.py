"""The reference of job-spec keys (docs/spec.md), generated from the schema and the registry.

Regenerate the committed file with ``python -m gradq.service.spec.docs > docs/spec.md``
(``docs.py``); a test fails when it differs from :func:`reference_markdown`.
"""

from __future__ import annotations

import json
from typing import Any

from gradq.nn import registry

from .kinds import LATER, REQUIRED, Either, Kind, Section
from .optimizers import kind_of
from .schema import _SCHEMA, DESCRIPTIONS

REGENERATE = "python -m gradq.service.spec.docs > docs/spec.md"

_INTRO = f"""\
# Job spec reference

<!-- Generated from the schema in gradq/service/spec by `{REGENERATE}`.
     Do not edit by hand: tests/test_spec_docs.py fails when this file is out of date. -->

A job spec is a YAML (or JSON) file; `gradq run` and `gradq submit` validate it, and
`--set KEY=VALUE` overrides one dotted key with a YAML value (`--set optimizer.lr=0.01`).
Every key but `data.dataset` has a default. An unknown key, a wrong type or a value out of
range is refused with one line naming the key's dotted path, and nothing is stored.
`examples/` holds complete specs.

Beyond these tables, validation checks rules across keys, e.g. `data.validation +
data.test < 1`, one activation per hidden layer, `closed_form` only for a linear
regression, and each arm of a comparison validated as a whole spec.
"""

_EDITORS = """\
## Checking job files in an editor

`gradq spec --schema` prints a JSON Schema (draft 2020-12) of the job spec, generated from
the same schema as these tables: types, allowed values, ranges, defaults, descriptions,
unknown keys, and each optimizer's own hyperparameters. Save it once:

```sh
gradq spec --schema > gradq.schema.json
```

In VS Code, with the YAML extension (Red Hat), map it onto your job files in
`.vscode/settings.json`:

```json
{"yaml.schemas": {"./gradq.schema.json": ["jobs/*.yaml", "examples/*.yaml"]}}
```

or name it in the file itself, on its first line (any editor using yaml-language-server,
e.g. Neovim or Helix):

```yaml
# yaml-language-server: $schema=./gradq.schema.json
data:
  dataset: digits
```

The editor then completes keys, shows each key's meaning and default on hover, and marks
unknown keys and values out of range as you type. In CI, any JSON Schema validator checks
the files, e.g. `check-jsonschema --schemafile gradq.schema.json jobs/*.yaml`. The schema
does not know the cross-field rules or the datasets: `gradq submit` remains the final word.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _value(v: Any) -> str:
    if v is REQUIRED:
        return "required"
    if v is LATER:
        return "(see meaning)"
    return f"`{json.dumps(v)}`"


def _section_of(kind: Kind) -> Section | None:
    if isinstance(kind, Section):
        return kind
    if isinstance(kind, Either):
        return next((a for a in kind.alternatives if isinstance(a, Section)), None)
    return None


def _rows(section: Section, path: str) -> list[str]:
    rows = []
    for key, (kind, default) in section.fields.items():
        dotted = f"{path}.{key}" if path else key
        sub = _section_of(kind)
        shown = "" if sub is not None and default == {} else _value(default)
        rows.append(f"| `{dotted}` | {_cell(kind.describe)} | {shown} | "
                    f"{_cell(DESCRIPTIONS.get(dotted, ''))} |")
        if sub is not None:
            rows += _rows(sub, dotted)
    return rows


def _table(rows: list[str]) -> str:
    head = "| key | type or values | default | meaning |\n|---|---|---|---|\n"
    return head + "\n".join(rows) + "\n"


def _optimizers() -> str:
    out = ["## Optimizers\n",
           "`optimizer.name` picks one; its hyperparameters sit beside the name "
           "(`optimizer: {name: sgd, lr: 0.1}`), every one optional. A first-order optimizer "
           "(one with `lr`) also takes `schedule: {kind: linear, final_lr, steps}`. "
           "Full-batch optimizers default `training.batch_size` to `full`. The table is the "
           "registry in `nn/entries.py` (docs/optimizers.md).\n",
           "| name | kind | hyperparameters (defaults) | full batch | what it is |",
           "|---|---|---|---|---|"]
    for e in registry.all_entries():
        hyper = ", ".join(f"`{k}` {json.dumps(v)}" for k, v in e.defaults.items()) or "—"
        out.append(f"| `{e.name}` | {e.kind.replace('_', '-')} | {hyper} | "
                   f"{'yes' if e.full_batch else 'no'} | {_cell(e.summary)} |")
    out += ["", "### Hyperparameters\n", "| key | type or range | meaning |", "|---|---|---|"]
    seen: dict[str, registry.Range] = {}
    for e in registry.all_entries():
        for k in e.defaults:
            seen.setdefault(k, e.range_of(k))
    for k, r in seen.items():
        out.append(f"| `{k}` | {_cell(kind_of(r).describe)} | {_cell(r.doc)} |")
    return "\n".join(out) + "\n"


def _suite_section() -> str:
    """``kind: suite``'s keys (validated by ``suite.py``, not the schema's sections): one row
    per key of ``SUITE_KEYS`` and ``WORKLOAD_KEYS``, meanings from ``suite.DESCRIPTIONS``."""
    from gradq.service.experiments.workloads import BUILTIN_SUITES

    from .suite import BUDGETS, DEFAULTS, DESCRIPTIONS, SUITE_KEYS, TOP_KEYS, WORKLOAD_KEYS

    types = {
        "workloads": f"one of {', '.join(sorted(BUILTIN_SUITES))}, or a list of workloads",
        "workloads[].name": "a string",
        "workloads[].spec": "a mapping of data, model, regularization, optimizer, training",
        "workloads[].metric": "a metric the workload logs",
        "workloads[].target": "a number, or auto",
        "workloads[].reference": "null or a list as compare.optimizers",
        "optimizers": "null or a non-empty list as compare.optimizers",
        "search": "null or a mapping as compare.search",
        "seeds": "an integer >= 1",
        "tune_seeds": "an integer >= 1",
        "budget": f"one of {', '.join(BUDGETS)}",
        "r_max": "a number > 1",
    }
    keys = ["workloads", *(f"workloads[].{k}" for k in WORKLOAD_KEYS), *SUITE_KEYS[1:]]
    default = {**{k: _value(v) for k, v in DEFAULTS.items()}, "workloads": "required",
               **{f"workloads[].{k}": "required" for k in WORKLOAD_KEYS},
               "workloads[].reference": _value(None)}
    body = "\n".join(f"| `suite.{k}` | {_cell(types[k])} | {default[k]} | "
                     f"{_cell(DESCRIPTIONS[f'suite.{k}'])} |" for k in keys)
    return (f"## `suite`\n\nKind suite only: optimizers judged across workloads, each "
            f"workload one comparison (docs/suites.md). A suite spec has the top-level keys "
            f"{', '.join(f'`{k}`' for k in TOP_KEYS)} and no others.\n\n"
            "| key | type or values | default | meaning |\n|---|---|---|---|\n"
            + body + "\n")


def reference_markdown() -> str:
    """docs/spec.md: every key of the job spec with its type, default and meaning, the
    optimizers and their hyperparameters, and how to use the JSON Schema in an editor."""
    parts = [_INTRO, "## Top level\n", _table([
        r for key, (kind, _) in _SCHEMA.fields.items() if _section_of(kind) is None
        for r in _rows(Section({key: _SCHEMA.fields[key]}), "")])]
    for key, (kind, _) in _SCHEMA.fields.items():
        sub = _section_of(kind)
        if sub is None:
            continue
        about = DESCRIPTIONS.get(key, "")
        parts.append(f"## `{key}`\n\n{_cell(about[:1].upper() + about[1:])}.\n"
                     if about else f"## `{key}`\n")
        parts.append(_table(_rows(sub, key)))
    parts += [_suite_section(), _optimizers(), _EDITORS]
    return "\n".join(parts)

