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
    """One status line on standard error, redrawn in place on a terminal.

    A comparison run here (``gradq run``) also reports its children: on a terminal they
    join the one line (``search: child 3 of 18 · epoch 2/9 …``); elsewhere (a log file, a
    pipe) a plain line is printed once per phase of the comparison, not once per child."""

    def __init__(self, tty: bool | None = None) -> None:
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.last = ""
        self.printed_at = 0.0
        self.children = ""  # the children's part of the line
        self.phase: object = ()  # the phase last announced (none yet)

    def __call__(self, progress: dict[str, Any]) -> None:
        line = present.progress_line(progress)
        now = time.monotonic()
        if not self.tty and now - self.printed_at < 2.0:
            return  # a log file gets a line every two seconds, not one per epoch
        self.printed_at = now
        if self.tty:
            self._draw(" · ".join(p for p in (self.children, line) if p))
        else:
            click.echo(line, err=True)

    def child(self, event: dict[str, Any]) -> None:
        """A comparison's child starts (``workers.local.run_here``'s ``on_child``)."""
        phase = present.phase_name(event["phase"])
        total = event["ran"] + event["queued"]
        if self.tty:
            self.children = f"{phase}: child {event['ran'] + 1} of {total}"
            self._draw(self.children)
        elif event["phase"] != self.phase:
            click.echo(f"{phase}: {event['queued']} children queued", err=True)
        self.phase = event["phase"]

    def _draw(self, line: str) -> None:
        click.echo("\r" + line.ljust(len(self.last)), nl=False, err=True)
        self.last = line

    def done(self) -> None:
        if self.tty and self.last:
            click.echo("", err=True)
        self.last = ""
