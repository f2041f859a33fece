"""What every command shares: exit codes, error handling, the shared options and the
service modules, imported at their first use (``gradq --help`` loads no store, ``gradq ls``
no NumPy, Celery or Alembic)."""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import click
from gradq.service.errors import SchemaError, ServiceUnavailable, UsageError
from gradq.service.settings import redact

EXIT_FAILED, EXIT_USAGE, EXIT_SERVICE, EXIT_INTERNAL = 1, 2, 3, 4
SHORT_TRACEBACK = 3  # frames shown of an internal error without -v


class _LazyModule:
    """A service module imported at its first attribute access, then looked up by name."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


if TYPE_CHECKING:
    from gradq.service import commands as commands_service
    from gradq.service import submit as submit_service
    from gradq.service.store import actions, db, queries
    from gradq.service.store import datasets as datasets_service
else:
    commands_service = _LazyModule("gradq.service.commands")
    datasets_service = _LazyModule("gradq.service.store.datasets")
    db = _LazyModule("gradq.service.store.db")
    actions = _LazyModule("gradq.service.store.actions")
    queries = _LazyModule("gradq.service.store.queries")
    submit_service = _LazyModule("gradq.service.submit")

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print exactly one JSON document on standard output.")
set_option = click.option("--set", "sets", multiple=True, metavar="K=V",
                          help="Override one spec key (dotted path, YAML value).")
job_argument = click.argument("job", metavar="JOB")


def warn(message: str) -> None:
    """A spec's warning on standard error."""
    click.echo(f"warning: {message}", err=True)


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
