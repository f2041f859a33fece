"""``gradq report SUITE`` (and ``gradq run`` of a suite): the suite's table, or its JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from gradq.service import present

from .output import echo_lines, emit_json


def print_suite(job_id: str, as_json: bool, png: Path | None = None,
                default_png: bool = False) -> dict[str, Any]:
    """Print a suite's report (docs/suites.md); write its plots to ``png`` (and, with
    ``default_png``, to ``$GRADQ_HOME/reports/<id>/profiles.png`` when none is given)."""
    from gradq.service.experiments.suite_report import build_suite_report

    rep = build_suite_report(job_id)
    if png is None and default_png:
        from gradq.service.settings import get_settings

        png = get_settings().home / "reports" / rep["id"] / "profiles.png"
        png.parent.mkdir(parents=True, exist_ok=True)
    if png is not None:
        from gradq.service.experiments.plots import plot_suite

        for p in plot_suite(rep, png):
            click.echo(f"wrote {p}", err=True)
    if as_json:
        emit_json(rep)
        return rep
    if rep.get("partial"):
        click.echo(f"partial: {rep['partial']}", err=True)
    echo_lines(present.suite_lines(rep))
    return rep
