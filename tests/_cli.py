"""Shared test helpers for driving the CLI in process (click's CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from gradq.cli.main import main


def cli(*args: str) -> str:
    """Run ``gradq ARGS``; assert it succeeded; return its standard output."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def cli_json(*args: str) -> Any:
    """Run ``gradq ARGS --json`` and parse its one JSON document."""
    return json.loads(cli(*args, "--json"))


def write_spec(tmp_path: Path, doc: dict[str, Any], name: str = "spec.json") -> Path:
    """Write a spec document to a JSON file in ``tmp_path``."""
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path
