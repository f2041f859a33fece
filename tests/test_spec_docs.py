"""The job-spec reference (docs/spec.md) and the JSON Schema, both generated from the schema
in gradq.service.spec: the committed file is current, the examples pass the schema, and bad
specs that validation refuses fail it too."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from gradq.service.spec import (
    SpecError,
    json_schema,
    load_spec_file,
    reference_markdown,
    validate,
)
from gradq.service.spec.kinds import Section
from gradq.service.spec.reference import REGENERATE
from gradq.service.spec.schema import _SCHEMA, DESCRIPTIONS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def checker() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)  # a valid draft 2020-12 schema
    return jsonschema.Draft202012Validator(schema)


def test_the_committed_reference_is_the_generated_one() -> None:
    committed = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    assert committed == reference_markdown(), (
        f"docs/spec.md is out of date: regenerate it with `{REGENERATE}`")


def _keys(section: Section, path: str = "") -> list[str]:
    out = []
    for key, (kind, _) in section.fields.items():
        dotted = f"{path}.{key}" if path else key
        out.append(dotted)
        alternatives = getattr(kind, "alternatives", (kind,))
        for sub in alternatives:
            if isinstance(sub, Section):
                out += _keys(sub, dotted)
    return out


def test_every_key_of_the_schema_has_a_meaning_in_the_reference() -> None:
    keys = _keys(_SCHEMA)
    assert set(keys) == set(DESCRIPTIONS)
    text = reference_markdown()
    for key in keys:
        assert f"| `{key}` |" in text or f"\n## `{key}`\n" in text, key


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_passes_the_json_schema(checker: Any, path: Path) -> None:
    raw = load_spec_file(path)
    assert [e.message for e in checker.iter_errors(raw)] == []
    # and so does its normalised spec (every default filled in; a suite's is its own)
    if raw.get("kind") != "suite":
        normalised = validate(raw, base_dir=path.parent)
        assert [e.message for e in checker.iter_errors(normalised)] == []


BASE: dict[str, Any] = {"data": {"dataset": "iris"}, "optimizer": {"name": "adam"}}
BAD = {
    "unknown top-level key": ({"modle": {}}, "modle"),
    "unknown nested key": ({"training": {"epoch": 3}}, "epoch"),
    "wrong enum": ({"kind": "trian"}, "trian"),
    "wrong activation": ({"model": {"activation": "relu6"}}, "relu6"),
    "out of range": ({"data": {"dataset": "iris", "validation": 1.5}}, "1.5"),
    "negative learning rate": ({"optimizer": {"name": "adam", "lr": -0.1}}, "-0.1"),
    "another optimizer's hyperparameter": ({"optimizer": {"name": "sgd", "beta1": 0.9}},
                                           "beta1"),
    "wrong type": ({"training": {"epochs": "ten"}}, "ten"),
    "no dataset": ({"data": {}}, "dataset"),
}


@pytest.mark.parametrize("change", BAD.values(), ids=list(BAD))
def test_bad_specs_fail_the_schema_and_validation(checker: Any, change: tuple) -> None:
    # Given: a valid spec with one bad change
    over, word = change
    raw = {**copy.deepcopy(BASE), **over}
    # When
    errors = list(checker.iter_errors(raw))
    # Then: the schema refuses it, and so does validate
    assert errors, raw
    assert any(word in e.message or word in e.json_path
               or any(word in c.message for c in (e.context or ())) for e in errors), \
        [e.message for e in errors]
    with pytest.raises(SpecError):
        validate(raw)


def test_the_schema_offers_defaults_and_descriptions() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert schema["else"]["required"] == ["data"] and schema["then"]["required"] == ["suite"]
    training = schema["properties"]["training"]
    assert training["properties"]["epochs"] == {"type": "integer", "minimum": 1, "default": 30,
                                                "description": DESCRIPTIONS["training.epochs"]}
    assert schema["properties"]["kind"]["enum"] == ["train", "compare", "suite"]


SUITE = {"kind": "suite", "suite": {"workloads": "book-mini"}}
BAD_SUITES = {
    "unknown suite name": ({"workloads": "book-maxi"}, "book-maxi"),
    "r_max at 1": ({"r_max": 1}, "minimum"),
    "budget in epochs": ({"budget": "epochs"}, "epochs"),
    "no optimizer": ({"optimizers": []}, "optimizers"),
    "a workload without a target": ({"workloads": [{"name": "w", "metric": "val_loss",
                                                    "spec": {"data": {"dataset": "iris"}}}]},
                                    "workloads"),
}


@pytest.mark.parametrize("change", BAD_SUITES.values(), ids=list(BAD_SUITES))
def test_bad_suites_fail_the_schema_and_validation(checker: Any, change: tuple) -> None:
    # Given: the built-in suite with one bad change
    over, word = change
    raw = copy.deepcopy(SUITE)
    raw["suite"].update(over)
    # When / Then: the schema refuses it (naming the value or key), and so does validate
    errors = list(checker.iter_errors(raw))
    assert errors, raw
    assert any(word in e.message or word in e.json_path for e in errors), \
        [e.message for e in errors]
    with pytest.raises(SpecError):
        validate(raw)


def test_a_suite_takes_no_train_keys_and_a_train_spec_no_suite(checker: Any) -> None:
    assert checker.is_valid(SUITE)
    assert not checker.is_valid({**SUITE, "data": {"dataset": "iris"}})
    assert not checker.is_valid({**copy.deepcopy(BASE), "suite": SUITE["suite"]})
