"""Inputs: ``datasets`` (list, add) and ``spec --schema``."""

from __future__ import annotations

from pathlib import Path

import click
from gradq.service.settings import get_settings

from .common import datasets_service, handle_errors, json_option
from .output import emit_json, table


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
@handle_errors
def datasets(ctx: click.Context, as_json: bool) -> None:
    """List built-in and registered datasets."""
    if ctx.invoked_subcommand is not None:
        return
    rows = datasets_service.listing()
    if as_json:
        emit_json(rows)
        return
    table([(r["name"], r["kind"], r.get("description") or r.get("source")) for r in rows],
          ("name", "kind", "description"))


@datasets.command("add")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@handle_errors
def datasets_add(name: str, file: Path, as_json: bool) -> None:
    """Register FILE (.npz with X, y; or .csv, last column y) under NAME."""
    from gradq.nn.datasets import DatasetError
    from gradq.service.spec import SpecError

    try:
        doc = datasets_service.add(name, file, get_settings().max_dataset_bytes)
    except DatasetError as exc:
        raise SpecError("", str(exc)) from None
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"registered {name}: {doc['samples']} samples, {doc['features']} "
                   f"features, {doc['task']} ({doc['hash'][:12]})")


@click.command("spec")
@click.option("--schema", is_flag=True, required=True,
              help="Print the JSON Schema of a job spec (for an editor's completion and "
                   "checking of YAML job files).")
@handle_errors
def spec(schema: bool) -> None:
    """Describe the job spec: --schema prints its JSON Schema on stdout.

    Point an editor at it to complete and check job files, e.g. with the YAML language
    server: `gradq spec --schema > gradq.schema.json`, then start a job file with
    `# yaml-language-server: $schema=gradq.schema.json`.
    """
    import json

    from gradq.service.spec import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


COMMANDS = (datasets, spec)
