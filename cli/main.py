"""The ``gradq`` command: parse, call one service function, print (SPEC §3).

Exit codes: 0 success; 1 the job failed or diverged (``run``); 2 bad usage or an invalid
spec, with one line naming the key; 3 a service unreachable, with its URL (password hidden)
and what to start; 4 an internal error (a bug in gradq): one line naming it, then its
traceback (all of it with ``-v``).

Start-up time is what users feel at every command, so this module imports click and the
standard library only; each service module is imported when a command first uses it
(``gradq --help`` loads no service module, ``gradq ls`` no NumPy, Celery or Alembic).
"""

from __future__ import annotations

import functools
import importlib
import io
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from gradq.service.errors import SchemaError, ServiceUnavailable, UsageError
from gradq.service.settings import get_settings, redact

from .output import Progress, emit_json, fmt, pairs, table

EXIT_FAILED, EXIT_USAGE, EXIT_SERVICE, EXIT_INTERNAL = 1, 2, 3, 4
STATUSES = ("queued", "running", "succeeded", "failed", "diverged", "cancelled")
SHORT_TRACEBACK = 3  # frames shown of an internal error without -v


class _LazyModule:
    """A service module imported at its first attribute access, then looked up by name."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


if TYPE_CHECKING:
    from gradq.service import submit as submit_service
    from gradq.service.store import datasets as datasets_service
    from gradq.service.store import db, jobs, queries
else:
    datasets_service = _LazyModule("gradq.service.store.datasets")
    db = _LazyModule("gradq.service.store.db")
    jobs = _LazyModule("gradq.service.store.jobs")
    queries = _LazyModule("gradq.service.store.queries")
    submit_service = _LazyModule("gradq.service.submit")


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {redact(message)}", err=True)
    sys.exit(code)


def _verbose() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("verbose"))


def _internal_error(exc: Exception) -> NoReturn:
    """A bug, shown as one: its type and message, its traceback, exit code 4."""
    import traceback

    message = " ".join(str(exc).split()) or "(no message)"
    click.echo(redact(f"internal error (a bug in gradq, not in your input): "
                      f"{type(exc).__name__}: {message}"), err=True)
    if _verbose():
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    else:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__,
                                                  limit=-SHORT_TRACEBACK, chain=False))
        text += (f"(the last {SHORT_TRACEBACK} calls; `gradq -v ...` shows the whole "
                 "traceback)\n")
    click.echo(redact(text).rstrip(), err=True)
    sys.exit(EXIT_INTERNAL)


def _closed_pipe() -> NoReturn:
    """Stop quietly, with the status of a process that SIGPIPE ended (as `head`'s writers
    do); standard output goes to /dev/null so that the exit's flush cannot fail again."""
    import contextlib
    import os

    with contextlib.suppress(OSError, ValueError):  # no descriptor behind it (a test's)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(128 + 13)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the service's own exceptions into one line on stderr and the documented exit
    code; anything else is a bug and is reported as an internal error (exit 4)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:  # SpecError, JobNotFound, AmbiguousJob, SettingsError, …
            _fail(str(exc), EXIT_USAGE)
        except (ServiceUnavailable, SchemaError) as exc:
            _fail(str(exc), EXIT_SERVICE)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own: usage errors (exit 2) and ctx.exit()
        except BrokenPipeError:  # the reader went away (`gradq ls | head`): not a bug
            _closed_pipe()
        except Exception as exc:
            _internal_error(exc)

    return wrapper


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print exactly one JSON document on standard output.")
set_option = click.option("--set", "sets", multiple=True, metavar="K=V",
                          help="Override one spec key (dotted path, YAML value).")
job_argument = click.argument("job", metavar="JOB")


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Exit codes: 0 success; 1 the job failed or diverged (run); 2 bad usage "
                    "or an invalid spec; 3 a database or broker unreachable; 4 an internal "
                    "error (a bug in gradq: its traceback follows, all of it with -v).")
@click.version_option(package_name="gradq")
@click.option("-v", "--verbose", is_flag=True,
              help="Log what the service does; show an internal error's whole traceback.")
def main(verbose: bool) -> None:
    """gradq: train classic networks and compare optimizers as queued GPU jobs."""
    import logging

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# ---------------------------------------------------------------- run/submit
@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@set_option
@json_option
@handle_errors
def run(spec: Path, sets: tuple[str, ...], as_json: bool) -> None:
    """Validate and run SPEC in this process (no broker); store it like a worker would."""
    import socket

    from gradq.workers.runner import execute

    prepared = submit_service.prepare(spec, sets)
    for w in prepared.warnings:
        click.echo(f"warning: {w}", err=True)
    ids = submit_service.create(prepared)
    progress = Progress()
    host = socket.gethostname()
    if not as_json:
        click.echo(f"job {ids[0]}", err=True)
    delay = 0.5
    while len(ids) == 1:
        execute(ids[0], worker=f"{host}-local", observer=progress)
        if queries.result(ids[0])["status"] != "queued":
            break
        # a transient error gave the job back (attempts counted): run it again after a pause
        time.sleep(delay)
        delay = min(8.0, 2 * delay)
    while len(ids) > 1 and (todo := jobs.queued_children(ids[0])):
        # a grid's final runs appear when its tuning runs are done: keep going until none.
        # A child takes the queued siblings that can train beside it as stacked replicas
        # (as a worker does), so the queue is read again after each run.
        progress.label(f"child {todo[0]} ({len(todo)} queued)")
        execute(todo[0], worker=f"{host}-local", observer=progress)
    progress.done()
    doc = queries.result(ids[0])
    if doc["kind"] == "suite":  # its table, and its plots under GRADQ_HOME/reports
        from .suite_output import print_suite

        print_suite(ids[0], as_json, default_png=True)
    elif doc["kind"] == "compare":
        _print_compare(ids[0], as_json)
    elif as_json:
        emit_json(doc)
    else:
        _print_result(doc)
    if doc["status"] in ("failed", "diverged"):
        sys.exit(EXIT_FAILED)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@set_option
@click.option("--priority", type=click.IntRange(0, 9), default=0, show_default=True,
              help="0–9; higher runs sooner.")
@json_option
@handle_errors
def submit(spec: Path, sets: tuple[str, ...], priority: int, as_json: bool) -> None:
    """Validate, store and enqueue SPEC; print the job id."""
    ids = submit_service.submit(spec, sets, priority=priority,
                                warn=lambda w: click.echo(f"warning: {w}", err=True))
    doc: dict[str, Any] = {"id": ids[0], "status": "queued"}
    if len(ids) > 1:
        doc["children"] = ids[1:]
    if as_json:
        emit_json(doc)
    else:
        click.echo(ids[0])
        if len(ids) > 1:
            click.echo(f"{len(ids) - 1} child jobs queued", err=True)


# -------------------------------------------------------------------- worker
@main.command()
@click.option("--gpus", default=None, metavar="0,1,...|all",
              help="One worker process per GPU, pinned with CUDA_VISIBLE_DEVICES.")
@click.option("--cpu", is_flag=True, help="Start a NumPy (CPU) worker.")
@click.option("--queues", default=None, metavar="Q1,Q2",
              help="Queues to consume (default: gpu,auto for GPU workers; cpu,auto for CPU).")
@click.option("--concurrency", type=click.IntRange(1), default=1, show_default=True,
              help="Processes of the CPU worker (BLAS threads are split between them).")
@click.option("--loglevel", default="INFO", show_default=True)
@handle_errors
def worker(gpus: str | None, cpu: bool, queues: str | None, concurrency: int,
           loglevel: str) -> None:
    """Start a worker pool (and its lease sweeper) until interrupted."""
    import logging

    from gradq.service.celery_app import ping_broker
    from gradq.workers.pool import plan, run_pool

    logging.getLogger("gradq").setLevel(loglevel.upper())  # the sweeper's reports too
    gpu_ids = _gpu_ids(gpus) if gpus else []
    if not gpu_ids and not cpu:
        gpu_ids = _gpu_ids("all", required=False)
        cpu = not gpu_ids
    ping_broker()
    db.ensure_schema(db.get_engine())
    qs = tuple(q for q in queues.split(",") if q) if queues else None
    members = plan(gpu_ids, cpu, qs, concurrency)
    s = get_settings()
    click.echo(f"gradq worker: {', '.join(m.name for m in members)}; broker "
               f"{redact(s.broker_url)}; database {redact(s.database_url)}", err=True)
    sys.exit(run_pool(members, loglevel))


def _gpu_ids(spec: str, required: bool = True) -> list[int]:
    if spec != "all":
        try:
            return [int(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise click.BadParameter(f"{spec!r}: use a list like 0,1 or 'all'",
                                     param_hint="--gpus") from None
    import subprocess

    # counted in a child process: this supervisor never initialises CUDA itself
    probe = "import cupy; print(cupy.cuda.runtime.getDeviceCount())"
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             timeout=60)
        n = int(out.stdout.strip()) if out.returncode == 0 else 0
    except (subprocess.TimeoutExpired, ValueError):
        n = 0
    if n == 0 and required:
        raise click.BadParameter("no CUDA GPU is usable here (is CuPy installed?); "
                                 "use --cpu", param_hint="--gpus")
    return list(range(n))


# ---------------------------------------------------------------- read side
@main.command("ls")
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


def _since(value: str | None) -> datetime | None:
    """``--since WHEN`` as a UTC datetime; a value it cannot read is a usage error (exit 2)."""
    from gradq.service.store.queries import parse_since

    try:
        return parse_since(value) if value else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None


@main.command()
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
                _print_status(doc)
        if not watch or all(d["status"] not in ("queued", "running") for d in docs):
            if as_json:
                emit_json(docs[0] if len(docs) == 1 else docs)
            return
        time.sleep(interval)
        if not as_json:
            click.echo("")


@main.command()
@job_argument
@json_option
@handle_errors
def results(job: str, as_json: bool) -> None:
    """Final metrics, timings, device and parameter count of JOB."""
    doc = queries.result(job)
    if as_json:
        emit_json(doc)
    elif doc["kind"] == "compare":
        _print_compare(doc["id"], False)
    else:
        _print_result(doc)


@main.command()
@click.argument("jobs_", nargs=-1, required=True, metavar="JOB...")
@click.option("--metric", "metrics", multiple=True, help="Only this metric (repeatable).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--png", "png_path", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@handle_errors
def curves(jobs_: tuple[str, ...], metrics: tuple[str, ...], csv_path: Path | None,
           png_path: Path | None, as_json: bool) -> None:
    """Learning curves of one or more jobs (several are overlaid in the PNG)."""
    docs = [queries.curves(j, metrics) for j in jobs_]
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
        for p in (csv_path, png_path):
            if p:
                click.echo(f"wrote {p}", err=True)
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


@main.command()
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
    _print_compare(job_id, as_json, png_path)


@main.command()
@job_argument
@handle_errors
def cancel(job: str) -> None:
    """Stop a queued or running job (a comparison: all its children)."""
    ids = jobs.cancel(queries.resolve_id(job))
    click.echo(f"cancel requested for {len(ids)} job(s)", err=True)


@main.command()
@job_argument
@json_option
@handle_errors
def retry(job: str, as_json: bool) -> None:
    """Run a failed, diverged or cancelled job again."""
    from gradq.service.celery_app import ping_broker, send_job

    job_id = queries.resolve_id(job)  # an unknown id is a usage error, broker or not
    ping_broker()
    todo = jobs.retry(job_id)
    for todo_id, queue, prio in todo:  # not job_id: the JSON below names the job asked for
        send_job(todo_id, queue, prio)
    jobs.mark_enqueued([t[0] for t in todo])
    if as_json:
        emit_json({"id": job_id, "status": "queued",
                   "requeued": [t[0] for t in todo]})
    else:
        click.echo(f"requeued {len(todo)} job(s)", err=True)


@main.command()
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


# ----------------------------------------------------------------- retention
def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@main.command()
@click.argument("job_refs", nargs=-1, required=True, metavar="JOB...")
@click.option("--force", is_flag=True,
              help="Cancel a running job first and wait for its worker to let go.")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=None,
              help="With --force: the longest wait, in seconds (default: 2 leases).")
@json_option
@handle_errors
def rm(job_refs: tuple[str, ...], force: bool, wait_s: float | None, as_json: bool) -> None:
    """Delete jobs (a comparison: with its children) and everything they own."""
    from gradq.service.store import retention

    done = retention.remove(job_refs, force=force, wait_s=wait_s,
                            on_wait=lambda m: click.echo(m, err=True))
    if as_json:
        emit_json(done)
        return
    for d in done:
        parts = ", ".join(f"{v['rows']} {k}" for k, v in d["deleted"].items() if v["rows"])
        total = sum(v["bytes"] for v in d["deleted"].values())
        click.echo(f"deleted {d['id']}: {parts or 'nothing'} ({_size(total)})")


@main.command()
@click.option("--dry-run", is_flag=True, help="Only say what would be freed.")
@click.option("--vacuum", is_flag=True,
              help="Afterwards return free space to the file system (SQLite: VACUUM; "
                   "PostgreSQL: plain VACUUM, and the command for VACUUM FULL).")
@json_option
@handle_errors
def gc(dry_run: bool, vacuum: bool, as_json: bool) -> None:
    """Delete checkpoints of finished jobs, unused datasets and orphaned rows."""
    from gradq.service.store import retention

    doc = retention.collect(dry_run=dry_run, vacuum=vacuum)
    if as_json:
        emit_json(doc)
        return
    verb = "would free" if dry_run else "freed"
    table([(k, v["rows"], _size(v["bytes"])) for k, v in doc["freed"].items()],
          ("kind", "rows", verb))
    vac = doc["vacuum"]
    if vac.get("ran") and "file_bytes_after" in vac:
        click.echo(f"VACUUM: file {_size(vac['file_bytes'])} -> "
                   f"{_size(vac['file_bytes_after'])}", err=True)
    elif vac.get("ran"):
        click.echo("VACUUM done", err=True)
    elif vac.get("free_bytes"):
        click.echo(f"{_size(vac['free_bytes'])} free inside the database file", err=True)
    if vac.get("hint"):
        click.echo(vac["hint"], err=True)


# ------------------------------------------------------------------------ ui
@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback exposes the dashboard (a warning).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Another Host name to answer (behind a proxy or in a container).")
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in a browser.")
@handle_errors
def ui(host: str, port: int, allow_hosts: tuple[str, ...], open_browser: bool) -> None:
    """Serve the read-only web dashboard over the database the CLI uses."""
    from gradq.ui.app import serve

    serve(host, port, allow_hosts, open_browser)


# ------------------------------------------------------------------ datasets
@main.group(invoke_without_command=True)
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


# ------------------------------------------------------------------------ db
@main.group("db")
def db_group() -> None:
    """Database schema migrations."""


def _db_migrate_command(name: str, default: str, summary: str) -> None:
    """``gradq db upgrade|downgrade``: the same option and output, one service call each
    (``db.<name>``, looked up when the command runs)."""

    @db_group.command(name, help=summary)
    @click.option("--revision", default=default, show_default=True)
    @handle_errors
    def command(revision: str) -> None:
        rev = getattr(db, name)(revision=revision)
        click.echo(f"database {redact(get_settings().database_url)} is at revision {rev}")


_db_migrate_command("upgrade", "head", "Apply migrations (alembic upgrade).")
_db_migrate_command("downgrade", "base",
                    "Revert migrations (alembic downgrade); ``base`` drops every gradq table.")


@db_group.command("current")
@handle_errors
def db_current() -> None:
    """Show the schema revision and the one this gradq needs."""
    rev = db.current_revision(db.get_engine())  # unreachable: exit 3; anything else is a bug
    click.echo(f"current {rev or 'base'}, head {db.head_revision()}")


# ---------------------------------------------------------------- printing
def _print_result(doc: dict[str, Any]) -> None:
    items: list[tuple[str, Any]] = [
        ("id", doc["id"]), ("status", doc["status"]), ("name", doc["name"]),
        ("optimizer", doc["optimizer"]), ("device", doc["device"]), ("worker", doc["worker"]),
        ("attempts", doc["attempts"]), ("params", doc["params"])]
    for k, v in (doc.get("final") or {}).items():
        items.append((k, v))
    for k, v in (doc.get("timing") or {}).items():
        items.append((k, v))
    if doc.get("error"):
        items.append(("error", doc["error"]))
    pairs(items)


def _print_status(doc: dict[str, Any]) -> None:
    p = doc.get("progress") or {}
    items: list[tuple[str, Any]] = [("id", doc["id"]), ("kind", doc["kind"]),
                                    ("status", doc["status"]), ("device", doc["device"]),
                                    ("worker", doc["worker"]), ("attempts", doc["attempts"])]
    if "children" in p:
        items.append(("children", ", ".join(f"{v} {k}" for k, v in p["children"].items() if v)
                      or "none"))
        for label, st in (p.get("search") or {}).items():  # a search's trials, per arm
            at = (f", deciding the rung at {st['rung_epochs']} epochs"
                  if st["rung_epochs"] else f", chosen {st['chosen']}")
            items.append((f"search {label}", f"{st['done']}/{st['trials']} trials done, "
                          f"{st['pruned']} pruned, {st['running']} running, "
                          f"{st['queued']} queued{at}"))
    elif p:
        items.append(("progress", f"epoch {p.get('epoch')}/{p.get('epochs')}, step "
                                  f"{p.get('step')}/{p.get('steps')}"))
        for k in ("train_loss", "val_loss", "val_accuracy"):
            if k in p:
                items.append((k, p[k]))
    if doc.get("error"):
        items.append(("error", doc["error"]))
    pairs(items)
    if doc.get("traceback") and doc["status"] == "failed":
        click.echo(doc["traceback"].rstrip())


def _print_compare(job_id: str, as_json: bool, png: Path | None = None) -> None:
    from gradq.service.experiments.report import build_report

    rep = build_report(job_id)
    if rep.get("kind") == "bagging":
        _print_bagging(rep, as_json)
        return
    if png:
        from gradq.service.experiments.plots import plot_report

        written = plot_report(rep, png)
        if not as_json:
            for p in written:
                click.echo(f"wrote {p}", err=True)
    if as_json:
        emit_json(rep)
        return
    if rep.get("partial"):
        click.echo(f"partial: {rep['partial']}", err=True)
    click.echo(f"metric {rep['metric']} ({'lower' if rep['lower_is_better'] else 'higher'} "
               "is better); mean ± half-width of its 95% t-interval")
    if rep.get("seeds"):
        click.echo(f"seeds: tune {rep['seeds']['tune']}, eval {rep['seeds']['eval']}")
    gap = any("gap" in a for a in rep["arms"])
    stacked = any("stacked" in a for a in rep["arms"])
    rows = []
    for a in rep["arms"]:
        row = [a["label"], a["n"], _pm(a["mean"], a["ci95"]), a["std"]]
        if gap:
            row.append(_pm(a["gap"]["mean"], a["gap"]["ci95"]) if a.get("gap") else "-")
        if stacked:
            st = a.get("stacked")
            row.append(f"{st['stacked']}/{st['stacked'] + st['alone']}" if st else "-")
        rows.append([*row, a.get("excluded") or ""])
    table(rows, ["arm", "n", "mean ± 95%", "std", *(["gap ± 95%"] if gap else []),
                 *(["stacked"] if stacked else []), "excluded"])
    if gap:
        click.echo("gap: test minus train value of the metric, per run (generalization gap)")
    better = rep.get("better") or []
    click.echo("better: " + ("; ".join(f"{a} > {b}" for a, b in better) if better
                             else "no arm's interval is wholly better than another's"))
    _print_pairs(rep)
    for a in rep["arms"]:
        if a.get("tuning"):
            t = a["tuning"]
            click.echo(f"tuned {a['label']} on {t['metric']}: chose {t['chosen']} from "
                       + ", ".join(f"{g['setting']}→{fmt(g.get(t['metric']))}"
                                   for g in t["grid"]))
        if a.get("search"):
            _print_search(a["label"], a["search"])
    if rep.get("notes"):
        for n in rep["notes"]:
            click.echo(f"note: {n}")


def _pm(mean: float | None, ci95: list[float] | None) -> str:
    """``mean ± half-width`` of a symmetric interval (``mean`` alone without one)."""
    if mean is None:
        return "-"
    return f"{fmt(mean)} ± {fmt((ci95[1] - ci95[0]) / 2)}" if ci95 else fmt(mean)


def _print_pairs(rep: dict[str, Any]) -> None:
    """The paired differences, their p-values before and after Holm, survivors marked."""
    rows = [p for p in rep.get("pairs") or [] if p["n"]]
    if not rows:
        return
    tested = sum(1 for p in rows if p["p"] is not None)
    click.echo(f"pairs: a − b over the seeds both ran; paired t-test, Holm-adjusted over "
               f"{tested} pair{'' if tested == 1 else 's'}; * = survives Holm (p_holm < 0.05)")
    if len(rows) > 15:  # a long table: the pairs with p < 0.05 before or after Holm
        hidden = [p for p in rows if p["p"] is None or p["p"] >= 0.05]
        rows = [p for p in rows if p not in hidden]
        click.echo(f"({len(hidden)} pairs with p ≥ 0.05 not shown; --json lists every pair)")
    table([(p["a"], p["b"], p["n"], p["diff"],
            f"[{fmt(p['ci95'][0])}, {fmt(p['ci95'][1])}]" if p["ci95"] else "-",
            p["p"], p["p_holm"], "*" if p["significant"] else "") for p in rows],
          ("a", "b", "n", "diff", "ci95", "p", "p_holm", "holm"))


def _print_search(label: str, sr: dict[str, Any]) -> None:
    """One arm's search: its space, trials, chosen point, budget and expected best."""
    space = "; ".join(f"{k} ~ {_space(v)}" for k, v in (sr.get("space") or {}).items())
    budget = sr.get("budget") or {}
    chosen = ", ".join(f"{k}={fmt(v)}" for k, v in sr["chosen"].items()) \
        if sr.get("chosen") else "nothing yet"
    click.echo(f"search {label}: {sr.get('method')} over {space or 'no space'}; "
               f"{sr.get('trials')} trials, {sr.get('pruned', 0)} pruned, "
               f"{sr.get('failed', 0)} failed; chose {chosen}; budget "
               f"{budget.get('epochs', '-')} epochs, {budget.get('samples', '-')} samples, "
               f"{fmt(budget.get('run_s'))} s")
    eb = sr.get("expected_best") or []
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, len(eb)) if 1 <= k <= len(eb)})
    if ks:
        click.echo(f"  expected best {sr.get('metric', 'validation metric')} of k trials: "
                   + ", ".join(f"k={k} {fmt(eb[k - 1])}" for k in ks))


def _space(space: Any) -> str:
    """``loguniform[1e-05, 1]`` for ``{loguniform: [1e-05, 1]}``; other values as they are."""
    if isinstance(space, dict) and len(space) == 1:
        ((kind, args),) = space.items()
        return f"{kind}{args}"
    return str(space)


def _print_bagging(rep: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(rep)
        return
    table([(f"member {i}", m["test_error"], m["test_loss"], m.get("test_accuracy"))
           for i, m in enumerate(rep["members"])]
          + [("ensemble", rep["ensemble"]["test_error"], rep["ensemble"]["test_loss"],
              rep["ensemble"].get("test_accuracy"))],
          ("model", "test_error", "test_loss", "test_accuracy"))
    k = rep["models"]
    click.echo(f"members' error variance v = {fmt(rep['v'])}, covariance c = {fmt(rep['c'])}")
    click.echo(f"predicted ensemble error (1/k)v + ((k-1)/k)c with k={k}: "
               f"{fmt(rep['predicted_error'])}; observed: {fmt(rep['observed_error'])}; "
               f"mean member error: {fmt(rep['mean_member_error'])}")


if __name__ == "__main__":  # pragma: no cover
    main()


