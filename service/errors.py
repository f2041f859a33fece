"""The service's own exceptions, in a module that imports nothing (the CLI loads it at once).

The CLI maps them to its exit codes (docs/cli.md): a :class:`UsageError` is the user's bad input
(exit 2, its one-line message), :class:`ServiceUnavailable` and :class:`SchemaError` a
database or broker to start or migrate (exit 3). Anything else that escapes a command is a
bug in gradq and is reported as an internal error with its traceback, never as bad usage.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user (an id, a name, a setting, a spec): ``str(e)`` is one line."""


class NotFound(UsageError, LookupError):
    """Something the user named does not exist."""


class JobNotFound(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class AmbiguousJob(UsageError, LookupError):
    """A job id prefix that matches several jobs."""


class BadArgument(UsageError, ValueError):
    """A query argument the service cannot use (a filter, a sort key, a point count)."""


class InvalidTransition(UsageError, RuntimeError):
    """The job is not in a state that allows the requested change."""


class SettingsError(UsageError, ValueError):
    """An environment variable (docs/settings.md) with a value gradq cannot use; names the
    variable."""


class ServiceUnavailable(RuntimeError):
    """A database or broker cannot be reached (CLI exit code 3)."""


class SchemaError(RuntimeError):
    """The database schema is not the one this version of gradq needs (CLI exit code 3)."""
