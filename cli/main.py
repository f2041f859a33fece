"""The ``gradq`` command: the group, its global options, and the commands by topic (docs/cli.md).

Each command parses, calls one service function and prints; they live by topic in
``jobs.py`` (run, submit, cancel, retry), ``results.py`` (ls, status, results, curves,
report, export), ``data.py`` (datasets, spec) and ``admin.py`` (worker, ui, db, rm, gc).
What they share (exit codes, error handling, options) is in ``common.py``; the text they
print comes from ``gradq.service.present`` through ``output.py``.

Exit codes: 0 success; 1 the job failed or diverged (``run``); 2 bad usage or an invalid
spec, with one line naming the key; 3 a service unreachable, with its URL (password hidden)
and what to start; 4 an internal error (a bug in gradq): one line naming it, then its
traceback (all of it with ``-v``).

Start-up time is what users feel at every command, so these modules import click and the
standard library only; each service module is imported when a command first uses it
(``gradq --help`` loads no store module, ``gradq ls`` no NumPy, Celery or Alembic).
"""

from __future__ import annotations

import click

from . import admin, data, jobs, results
from .common import (  # noqa: F401 - the documented names, kept importable from here
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_SERVICE,
    EXIT_USAGE,
    SHORT_TRACEBACK,
    handle_errors,
)


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


for _module in (jobs, results, data, admin):
    for _command in _module.COMMANDS:
        main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
