"""Printing: one JSON document for scripts, aligned tables for people (after ``gh``)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import click


def emit_json(doc: Any) -> None:
    """Exactly one JSON document on standard output."""
    import json

    from gradq.service.store.encoding import json_safe  # here: `gradq --help` loads no service

    click.echo(json.dumps(json_safe(doc), indent=2, allow_nan=False))


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.4g}"
        return f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:.1f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items())
    return str(v)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """An aligned plain-text table."""
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)))
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def pairs(items: Sequence[tuple[str, Any]]) -> None:
    """A two-column key/value listing."""
    width = max(len(k) for k, _ in items)
    for k, v in items:
        click.echo(f"{k.ljust(width)}  {fmt(v)}")


class Progress:
    """One status line on standard error, redrawn in place on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = ""
        self.printed_at = 0.0

    def __call__(self, progress: dict[str, Any]) -> None:
        parts = []
        if "epoch" in progress:
            parts.append(f"epoch {progress['epoch']}/{progress['epochs']}")
            parts.append(f"step {progress['step']}/{progress.get('steps', '?')}")
        for k in ("train_loss", "val_loss", "val_accuracy"):
            if k in progress:
                parts.append(f"{k} {fmt(progress[k])}")
        line = "  ".join(parts)
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
