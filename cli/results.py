"""The read side: ``ls``, ``status``, ``results``, ``curves``, ``report``, ``export``."""

from __future__ import annotations

import io
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from gradq.service import present
from gradq.service.errors import UsageError
from gradq.service.status import FINISHED_NAMES
from gradq.service.status import NAMES as STATUSES

from .common import handle_errors, job_argument, json_option, queries
from .output import echo_lines, emit_json, table


def _since(value: str | None) -> datetime | None:
    """``--since WHEN`` as a UTC datetime; a value it cannot read is a usage error (exit 2)."""
    from gradq.service.store.queries import parse_since

    try:
        return parse_since(value) if value else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None


@click.command("ls")
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--kind", type=click.Choice(("train", "compare", "suite")), default=None)
@click.option("--parent", default=None, metavar="JOB", help="Only the children of JOB.")
@click.option("--name", default=None, metavar="TEXT",
              help="Only jobs whose name contains TEXT (case-insensitive).")
@click.option("--since", default=None, metavar="WHEN", callback=lambda c, p, v: _since(v),
              help="Only jobs created since WHEN: an ISO date/time (UTC) or an age (30m, 2h, 7d).")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@json_option
@handle_errors
def ls(status: str | None, kind: str | None, parent: str | None, name: str | None,
       since: datetime | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first."""
    rows = queries.list_jobs(status, kind, limit, parent, name=name, since=since)
    if as_json:
        emit_json(rows)
        return
    table([(r["id"], r["kind"], r["status"], r["name"], (r["parent"] or "")[:8],
            r["created_at"]) for r in rows],
          ("id", "kind", "status", "name", "parent", "created"))


@click.command()
@click.argument("jobs_", nargs=-1, required=True, metavar="JOB...")
@click.option("--watch", is_flag=True, help="Redraw until every job has ended.")
@click.option("--interval", type=float, default=1.0, show_default=True)
@json_option
@handle_errors
def status(jobs_: tuple[str, ...], watch: bool, interval: float, as_json: bool) -> None:
    """State, progress, device and worker of each JOB (with several, --json prints a list)."""
    while True:
        docs = queries.statuses(jobs_)
        if not as_json:
            for i, doc in enumerate(docs):
                if i:
                    click.echo("")
                echo_lines(present.status_lines(doc))
        if not watch or all(d["status"] in FINISHED_NAMES for d in docs):
            if as_json:
                emit_json(docs[0] if len(docs) == 1 else docs)
            return
        time.sleep(interval)
        if not as_json:
            click.echo("")


def show_result(doc: dict[str, Any], as_json: bool, plots: bool = False) -> None:
    """A job's result document, or a comparison's (or suite's) report; ``plots``: a
    suite's are written under ``$GRADQ_HOME/reports`` (``gradq run``)."""
    if doc["kind"] == "suite":
        from .suite_output import print_suite

        print_suite(doc["id"], as_json, default_png=plots)
    elif doc["kind"] == "compare":
        show_report(doc["id"], as_json)
    elif as_json:
        emit_json(doc)
    else:
        echo_lines(present.result_lines(doc))


def show_report(job_id: str, as_json: bool, png: Path | None = None) -> None:
    """A comparison's (or bagging job's) report; with ``png``, its plots written there."""
    from gradq.service.experiments.report import build_report

    rep = build_report(job_id)
    if png and rep.get("kind") != "bagging":
        from gradq.service.experiments.plots import plot_report

        written = plot_report(rep, png)
        if not as_json:
            echo_lines((f"wrote {p}" for p in written), err=True)
    if as_json:
        emit_json(rep)
        return
    if rep.get("partial") and rep.get("kind") != "bagging":
        click.echo(f"partial: {rep['partial']}", err=True)
    echo_lines(present.report_lines(rep))


@click.command()
@job_argument
@json_option
@handle_errors
def results(job: str, as_json: bool) -> None:
    """Final metrics, timings, device and parameter count of JOB."""
    doc = queries.result(job)
    if as_json:
        emit_json(doc)
    else:
        show_result(doc, False)


@click.command()
@click.argument("jobs_", nargs=-1, required=True, metavar="JOB...")
@click.option("--metric", "metrics", multiple=True, help="Only this metric (repeatable).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--png", "png_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--max-points", "max_points", type=click.IntRange(min=0), default=0,
              show_default=True,
              help="At most about N points per series, downsampled as the dashboard does "
                   "(per bucket its first, last, lowest and highest point); 0: every point.")
@json_option
@handle_errors
def curves(jobs_: tuple[str, ...], metrics: tuple[str, ...], csv_path: Path | None,
           png_path: Path | None, max_points: int, as_json: bool) -> None:
    """Learning curves of one or more jobs (several are overlaid in the PNG)."""
    if 0 < max_points < 4:
        raise UsageError(f"--max-points: {max_points} is below the minimum 4 (0 means all)")
    docs = [queries.curves(j, metrics, max_points=max_points or None) for j in jobs_]
    for d, j in zip(docs, jobs_, strict=True):
        if metrics and not d["metrics"]:
            raise UsageError(f"job {j} has no metric named {', '.join(metrics)}")
    if csv_path:
        _write_csv(docs, csv_path)
    if png_path:
        from gradq.service.experiments.plots import plot_curves

        plot_curves(docs, png_path, queries.labels([d["id"] for d in docs]))
    if as_json:
        emit_json(docs[0] if len(docs) == 1 else {"jobs": docs})
        return
    if csv_path or png_path:
        echo_lines((f"wrote {p}" for p in (csv_path, png_path) if p), err=True)
        return
    for d in docs:
        rows = []
        for name, m in sorted(d["metrics"].items()):
            for step, epoch, value in zip(m["step"], m["epoch"], m["value"], strict=True):
                rows.append((d["id"][:8], name, step, epoch, value))
        table(rows, ("job", "metric", "step", "epoch", "value"))


def _write_csv(docs: list[dict[str, Any]], path: Path) -> None:
    import csv

    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["job", "metric", "step", "epoch", "time_s", "value"])
        for d in docs:
            for name, m in sorted(d["metrics"].items()):
                for row in zip(m["step"], m["epoch"], m["time_s"], m["value"], strict=True):
                    w.writerow([d["id"], name, *row])


@click.command()
@job_argument
@click.option("--png", "png_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the plots: FILE gets the learning curves, FILE-final.png the "
                   "final metric per arm (and FILE-grid.png for a grid).")
@json_option
@handle_errors
def report(job: str, png_path: Path | None, as_json: bool) -> None:
    """A comparison's statistics: which optimizer is better, with 95% intervals (a suite:
    time to target, performance profiles and win probability)."""
    job_id = queries.resolve_id(job)
    if queries.result(job_id)["kind"] == "suite":
        from .suite_output import print_suite

        print_suite(job_id, as_json, png_path)
        return
    show_report(job_id, as_json, png_path)


@click.command()
@job_argument
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@handle_errors
def export(job: str, out: Path) -> None:
    """Write JOB's trained parameters to an .npz (W0, b0, W1, b1, … in layer order)."""
    data = queries.artifact(job, "model")
    out.write_bytes(data)
    import numpy as np

    with np.load(io.BytesIO(data)) as z:
        names = ", ".join(z.files)
    click.echo(f"wrote {out} ({names})", err=True)


COMMANDS = (ls, status, results, curves, report, export)
