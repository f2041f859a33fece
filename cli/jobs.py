"""A job's life: ``run``, ``submit``, ``cancel``, ``retry``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .common import (
    EXIT_FAILED,
    actions,
    commands_service,
    handle_errors,
    job_argument,
    json_option,
    queries,
    set_option,
    submit_service,
    warn,
)
from .output import Progress, emit_json
from .results import show_result

spec_argument = click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))


@click.command()
@spec_argument
@set_option
@json_option
@handle_errors
def run(spec: Path, sets: tuple[str, ...], as_json: bool) -> None:
    """Validate and run SPEC in this process (no broker); store it like a worker would."""
    from gradq.workers.local import run_here

    prepared = submit_service.prepare(spec, sets)
    for w in prepared.warnings:
        warn(w)
    ids = submit_service.create(prepared)
    if not as_json:
        click.echo(f"job {ids[0]}", err=True)
    progress = Progress()
    doc = run_here(ids, progress, progress.child)
    progress.done()
    show_result(doc, as_json, plots=True)
    if doc["status"] in ("failed", "diverged"):
        sys.exit(EXIT_FAILED)


@click.command()
@spec_argument
@set_option
@click.option("--priority", type=click.IntRange(0, 9), default=0, show_default=True,
              help="0–9; higher runs sooner.")
@json_option
@handle_errors
def submit(spec: Path, sets: tuple[str, ...], priority: int, as_json: bool) -> None:
    """Validate, store and enqueue SPEC; print the job id."""
    ids = submit_service.submit(spec, sets, priority=priority, warn=warn)
    doc: dict[str, Any] = {"id": ids[0], "status": "queued"}
    if len(ids) > 1:
        doc["children"] = ids[1:]
    if as_json:
        emit_json(doc)
    else:
        click.echo(ids[0])
        if len(ids) > 1:
            click.echo(f"{len(ids) - 1} child jobs queued", err=True)


@click.command()
@job_argument
@handle_errors
def cancel(job: str) -> None:
    """Stop a queued or running job (a comparison or suite: its whole tree)."""
    ids = actions.cancel(queries.resolve_id(job))
    click.echo(f"cancel requested for {len(ids)} job(s)", err=True)


@click.command()
@job_argument
@json_option
@handle_errors
def retry(job: str, as_json: bool) -> None:
    """Run a failed, diverged or cancelled job again (a comparison or suite: its failed or
    cancelled parts)."""
    job_id, requeued = commands_service.retry(job)
    if as_json:  # names the job asked for, not each one requeued
        emit_json({"id": job_id, "status": "queued", "requeued": requeued})
    else:
        click.echo(f"requeued {len(requeued)} job(s)", err=True)


COMMANDS = (run, submit, cancel, retry)
