"""Spec files and ``--set``: YAML or JSON loaded safely (no aliases, no duplicate keys, a
size cap), and dotted ``KEY=VALUE`` overrides applied to the raw mapping."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .kinds import DEFAULT_MAX_BYTES, SpecError, _what


class _AliasRefused(yaml.MarkedYAMLError):
    pass


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases (no alias bombs, no shared nodes)
    and with duplicate keys refused instead of silently keeping the last one."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _AliasRefused(problem="YAML aliases are not allowed (no & anchors or * aliases)",
                                problem_mark=event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: {...}`, merged below
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark)
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class says so
                    break
        return super().construct_mapping(node, deep=deep)


def _yaml_reason(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        reason = "; ".join(part for part in (e.context, e.problem) if part) or "invalid YAML"
        return f"line {mark.line + 1}: {reason}" if mark is not None else reason
    return str(e)


def _parse_value(text: str) -> Any:
    """A ``--set`` value (or a NOT_BUILT value): YAML, loaded safely."""
    return yaml.load(text, Loader=_SpecLoader)  # a SafeLoader subclass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def load_spec_file(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Read a spec file: JSON for ``.json``, YAML otherwise. Raise :class:`SpecError` (one
    line naming the file) for a missing, oversized, empty or malformed file, YAML aliases,
    duplicate keys, or a top level that is not a mapping."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise SpecError("", f"{p}: not a file")
        if size > max_bytes:
            raise SpecError("", f"{p}: {size:,} bytes, above the limit of {max_bytes:,} bytes")
        with p.open("rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise SpecError("", f"{p}: file not found") from None
    except OSError as e:
        raise SpecError("", f"{p}: cannot read: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise SpecError("", f"{p}: above the limit of {max_bytes:,} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError("", f"{p}: not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise SpecError("", f"{p}: the file is empty")
    fmt = "JSON" if p.suffix.lower() == ".json" else "YAML"
    try:
        if fmt == "JSON":
            doc = json.loads(text, object_pairs_hook=_no_duplicates)
        else:
            doc = yaml.load(text, Loader=_SpecLoader)  # a SafeLoader subclass
    except json.JSONDecodeError as e:
        raise SpecError("", f"{p}: invalid JSON: line {e.lineno}: {e.msg}") from None
    except yaml.YAMLError as e:
        raise SpecError("", f"{p}: invalid YAML: {_yaml_reason(e)}") from None
    except RecursionError:
        raise SpecError("", f"{p}: nested too deeply") from None
    except ValueError as e:  # a duplicate JSON key, a YAML date like 2024-13-45
        raise SpecError("", f"{p}: invalid {fmt}: {e}") from None
    if doc is None:
        raise SpecError("", f"{p}: the file is empty")
    if not isinstance(doc, dict):
        raise SpecError("", f"{p}: the top level must be a mapping of keys (data:, model:, "
                            f"...), got {_what(doc)}")
    return doc


def apply_overrides(raw: Mapping[str, Any], sets: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``K=V`` applied: the dotted key ``K`` set to the
    YAML value ``V``, creating mappings on the way (a null one included). Validation
    afterwards names any unknown key."""
    if not isinstance(raw, Mapping):
        raise SpecError("", f"a job spec must be a mapping of keys, got {_what(raw)}")
    out = copy.deepcopy(dict(raw))
    for item in sets:
        key, eq, text = item.partition("=")
        parts = [part.strip() for part in key.split(".")]
        if not eq:
            raise SpecError("--set", f"{item!r} is not KEY=VALUE (e.g. optimizer.lr=0.01)")
        if not all(parts):
            raise SpecError("--set", f"{item!r}: the key must be a dotted path such as "
                                     "optimizer.lr")
        key = ".".join(parts)
        try:
            value = _parse_value(text)
        except (yaml.YAMLError, ValueError, RecursionError) as e:
            reason = _yaml_reason(e) if isinstance(e, yaml.YAMLError) else str(e)
            raise SpecError("--set", f"{key}: cannot read the value {text!r}: {reason}") from None
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise SpecError(".".join(parts[: i + 1]),
                                f"is {_what(child)}, so --set {key} cannot set a key inside it")
            node = child
        node[parts[-1]] = value
    return out


