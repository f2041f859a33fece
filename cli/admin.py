"""Running and keeping the service: ``worker``, ``ui``, ``db``, ``rm``, ``gc``."""

from __future__ import annotations

import sys

import click
from gradq.service import present
from gradq.service.settings import get_settings, redact

from .common import db, handle_errors, json_option
from .output import echo_lines, emit_json


@click.command()
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
    """The GPUs to start workers on: ``all`` those usable, or the ids given. Where none is
    usable and GPUs were asked for, the probe's error ends the command (exit 3)."""
    ids = None
    if spec != "all":
        try:
            ids = [int(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise click.BadParameter(f"{spec!r}: use a list like 0,1 or 'all'",
                                     param_hint="--gpus") from None
    n, problem = _probe_gpus()
    if n == 0 and required:
        from gradq.service.errors import ServiceUnavailable

        raise ServiceUnavailable(f"gradq worker --gpus: no CUDA GPU is usable here: {problem}; "
                                 "fix the CUDA install, or use --cpu")
    return list(range(n)) if ids is None else ids


def _probe_gpus() -> tuple[int, str]:
    """(usable GPUs, why none is) counted in a child process: this supervisor never
    initialises CUDA itself."""
    import subprocess

    probe = "import cupy; print(cupy.cuda.runtime.getDeviceCount())"
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             timeout=60)
    except subprocess.TimeoutExpired:
        return 0, "the probe (import cupy; getDeviceCount) did not answer in 60 s"
    if out.returncode == 0 and out.stdout.strip().isdigit():
        n = int(out.stdout.strip())
        return n, "" if n else "CUDA sees no device"
    lines = [ln.strip() for ln in out.stderr.splitlines() if ln.strip()]
    return 0, (lines[-1] if lines else f"the probe exited with {out.returncode}")


@click.command()
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


# ------------------------------------------------------------------------ db
@click.group("db")
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


# ----------------------------------------------------------------- retention
@click.command()
@click.argument("job_refs", nargs=-1, required=True, metavar="JOB...")
@click.option("--force", is_flag=True,
              help="Cancel a running job first and wait for its worker to let go.")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=None,
              help="With --force: the longest wait, in seconds (default: 2 leases).")
@json_option
@handle_errors
def rm(job_refs: tuple[str, ...], force: bool, wait_s: float | None, as_json: bool) -> None:
    """Delete jobs (a comparison or suite: with its whole tree) and everything they own."""
    from gradq.service.store import retention

    done = retention.remove(job_refs, force=force, wait_s=wait_s,
                            on_wait=lambda m: click.echo(m, err=True))
    if as_json:
        emit_json(done)
        return
    echo_lines(present.removed_line(d) for d in done)


@click.command()
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
    echo_lines(present.freed_lines(doc, dry_run))
    vac = doc["vacuum"]
    if vac.get("ran") and "file_bytes_after" in vac:
        click.echo(f"VACUUM: file {present.size(vac['file_bytes'])} -> "
                   f"{present.size(vac['file_bytes_after'])}", err=True)
    elif vac.get("ran"):
        click.echo("VACUUM done", err=True)
    elif vac.get("free_bytes"):
        click.echo(f"{present.size(vac['free_bytes'])} free inside the database file",
                   err=True)
    if vac.get("hint"):
        click.echo(vac["hint"], err=True)


COMMANDS = (worker, rm, gc, ui, db_group)
