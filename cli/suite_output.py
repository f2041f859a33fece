"""``gradq report SUITE`` (and ``gradq run`` of a suite): the suite's table, or its JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .output import emit_json, fmt, table


def print_suite(job_id: str, as_json: bool, png: Path | None = None,
                default_png: bool = False) -> dict[str, Any]:
    """Print a suite's report (SPEC §12); write its plots to ``png`` (and, with
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
    unit = rep["budget"]
    click.echo(f"suite {rep['name']} ({rep['status']}): time to target in {unit} (median "
               f"over seeds; - never reached), final metric mean ± half-width of its 95% "
               "interval")
    rows = []
    for w in rep["workloads"]:
        target = f"{fmt(w['target'])} ({w['target_set_by']})"
        if not w["arms"]:
            rows.append([w["name"], w["status"] or "-", w["metric"], target, "-", "-", "-",
                         "-", "-"])
        for a in w["arms"]:
            fin = a["final"]
            final = (f"{fmt(fin['mean'])} ± {fmt((fin['ci95'][1] - fin['ci95'][0]) / 2)}"
                     if fin["ci95"] else fmt(fin["mean"]))
            rows.append([w["name"], w["status"] or "-", w["metric"], target, a["label"],
                         a["time_to_target"][unit], f"{a['reached']}/{a['n']}",
                         a.get("ratio"), final])
    table(rows, ["workload", "status", "metric", "target", "arm", f"t({unit})", "reached",
                 "ratio", "final ± 95%"])
    win = rep["win_probability"]
    kmax = win["k"][-1] if win["k"] else None
    arms = list(rep["score"])
    click.echo("")
    table([[a, rep["score"][a], rep["profiles"]["rho"][a][0],
            (win[a][0] if win["k"] else None), (win[a][-1] if win["k"] else None)]
           for a in arms],
          ["arm", f"score (tau 1-{fmt(rep['r_max'])})", "fastest on (rho(1))",
           "P(best) k=1", f"P(best) k={kmax or '-'}"])
    click.echo(f"scored on {len(rep['scored'])} workload(s)"
               + (f"; failed: {', '.join(rep['failed'])}" if rep["failed"] else ""))
    return rep
