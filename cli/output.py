"""Printing: one JSON document for scripts, aligned text for people (after ``gh``).

The text itself comes from ``gradq.service.present`` (shared with the dashboard); this
module only writes it to the right stream.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import click
from gradq.service import present
from gradq.service.present import fmt

__all__ = ["Progress", "echo_lines", "emit_json", "fmt", "pairs", "table"]


def emit_json(doc: Any) -> None:
    """Exactly one JSON document on standard output."""
    import json

    from gradq.service.store.encoding import json_safe  # here: `gradq --help` loads no store

    click.echo(json.dumps(json_safe(doc), indent=2, allow_nan=False))


def echo_lines(lines: Iterable[str], err: bool = False) -> None:
    """Each line on standard output (or standard error)."""
    for line in lines:
        click.echo(line, err=err)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """An aligned plain-text table."""
    echo_lines(present.table_lines(rows, headers))


def pairs(items: Sequence[tuple[str, Any]]) -> None:
    """A two-column key/value listing."""
    echo_lines(present.pairs_lines(items))


class Progress:
    """One status line on standard error, redrawn in place on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = ""
        self.printed_at = 0.0

    def __call__(self, progress: dict[str, Any]) -> None:
        line = present.progress_line(progress)
        now = time.monotonic()
        if not self.tty and now - self.printed_at < 2.0:
            return  # a log file gets a line every two seconds, not one per epoch
        self.printed_at = now
        if self.tty:
            click.echo("\r" + line.ljust(len(self.last)), nl=False, err=True)
        else:
            click.echo(line, err=True)
        self.last = line

    def label(self, text: str) -> None:
        self.done()
        click.echo(text, err=True)

    def done(self) -> None:
        if self.tty and self.last:
            click.echo("", err=True)
        self.last = ""
