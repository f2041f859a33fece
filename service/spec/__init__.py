"""Job specs (docs/spec.md): load a YAML or JSON file, apply ``--set`` overrides, validate.

:func:`validate` turns what a user wrote into the *normalised* spec: every key present with
its default, numbers coerced where that is unambiguous, and every problem refused with one
line that names the key's dotted path (``model.hidden[1]: must be an integer ...``).

The rules are data, one module each:

- ``kinds``: the field-kind framework (:class:`Int`, :class:`Float`, :class:`Choice`,
  :class:`Section`, ...) and its messages;
- ``optimizers``: the ``optimizer:`` section, read from ``gradq.nn.registry``;
- ``spaces`` and ``arms``: search spaces, grids and comparison arms;
- ``schema``: every section and key with its kind and default;
- ``rules``: the cross-field rules, :func:`validate`, and those that need the dataset;
- ``files``: YAML/JSON loading and ``--set``;
- ``json_schema`` and ``reference``: the JSON Schema and docs/spec.md, generated from the
  schema (``python -m gradq.service.spec.docs > docs/spec.md`` regenerates the file).

No database or queue code lives here. This module re-exports the public names.
"""

from __future__ import annotations

from .arms import arm_path, arm_points, arm_spec, is_grid
from .files import apply_overrides, load_spec_file
from .json_schema import json_schema
from .kinds import (
    DEFAULT_MAX_BYTES,
    MAX_GRID_POINTS,
    MAX_HIDDEN_PARAMS,
    MAX_LAYER_WIDTH,
    NOT_BUILT,
    SpecError,
    canonical_json,
)
from .optimizers import FULL_BATCH_OPTIMIZERS, HYPERPARAMETERS, OPTIMIZERS, normalise_optimizer
from .reference import reference_markdown
from .rules import check_data, parameter_count, validate
from .schema import ACTIVATIONS, DIAGNOSTICS, METRICS, lower_is_better
from .spaces import DISTRIBUTIONS, candidates, check_space, is_space

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_MAX_BYTES",
    "DIAGNOSTICS",
    "FULL_BATCH_OPTIMIZERS",
    "HYPERPARAMETERS",
    "MAX_GRID_POINTS",
    "MAX_HIDDEN_PARAMS",
    "MAX_LAYER_WIDTH",
    "METRICS",
    "NOT_BUILT",
    "OPTIMIZERS",
    "DISTRIBUTIONS",
    "SpecError",
    "apply_overrides",
    "arm_path",
    "arm_points",
    "arm_spec",
    "candidates",
    "check_space",
    "is_grid",
    "is_space",
    "json_schema",
    "canonical_json",
    "check_data",
    "load_spec_file",
    "lower_is_better",
    "normalise_optimizer",
    "parameter_count",
    "reference_markdown",
    "validate",
]
