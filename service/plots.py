"""PNG plots with matplotlib (Agg: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(docs: list[dict[str, Any]], path: Path,
                labels: dict[str, str] | None = None) -> Path:
    """One panel per metric, one line per job (several jobs are overlaid), each line named
    by ``labels[job id]`` (name · arm · seed, see ``queries.labels``), else its short id."""
    labels = labels or {}
    names = sorted({m for d in docs for m in d["metrics"]})
    if not names:
        raise LookupError("no learning curves to plot")
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 2.6 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        for d in docs:
            m = d["metrics"].get(name)
            if m:
                ax.plot(m["step"], m["value"], label=labels.get(d["id"], d["id"][:8]))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if len(docs) > 1:
            ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_report(rep: dict[str, Any], path: Path) -> list[Path]:
    """Learning curves per arm (mean over seeds with a 95% band) and the final metric per
    arm with its interval. Returns the files written."""
    from .report import mean_curves

    path = Path(path)
    written = []
    curves = mean_curves(rep["id"], rep["metric"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (steps, mean, half) in curves.items():
        ax.plot(steps, mean, label=label)
        ax.fill_between(steps, mean - half, mean + half, alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(rep["metric"])
    ax.set_title("mean over seeds, 95% band")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    arms = [a for a in rep["arms"] if a["mean"] is not None]
    final = path.with_name(path.stem + "-final" + path.suffix)
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(1, len(arms))))
    for i, a in enumerate(arms):
        lo, hi = a["ci95"] if a["ci95"] else (a["mean"], a["mean"])
        ax.errorbar(a["mean"], i, xerr=[[a["mean"] - lo], [hi - a["mean"]]], fmt="o",
                    capsize=4)
    ax.set_yticks(range(len(arms)), [a["optimizer"] for a in arms])
    ax.set_xlabel(f"{rep['metric']} (mean, 95% interval)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(final, dpi=110)
    plt.close(fig)
    written.append(final)
    grids = [a for a in rep["arms"] if a.get("tuning")]
    if grids:
        written.append(_plot_grids(grids, path.with_name(path.stem + "-grid" + path.suffix)))
    return written


def _plot_grids(arms: list[dict[str, Any]], path: Path) -> Path:
    """The tuning metric against each grid's hyperparameter (one panel per arm)."""
    fig, axes = plt.subplots(1, len(arms), figsize=(4.5 * len(arms), 3.5), squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=True):
        t = arm["tuning"]
        grid = [g for g in t["grid"] if g.get(t["metric"]) is not None]
        keys = sorted({k for g in grid for k, v in g["setting"].items()
                       if len({str(h["setting"].get(k)) for h in grid}) > 1})
        key = keys[0] if keys else None
        xs = [g["setting"].get(key) if key else i for i, g in enumerate(grid)]
        ys = [g[t["metric"]] for g in grid]
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
        if numeric:
            order = sorted(range(len(xs)), key=lambda i: xs[i])
            ax.plot([xs[i] for i in order], [ys[i] for i in order], "o-")
            if xs and all(x > 0 for x in xs) and max(xs) / min(xs) > 20:  # none: all failed
                ax.set_xscale("log")
        else:
            ax.plot(range(len(xs)), ys, "o")
            ax.set_xticks(range(len(xs)), [str(x) for x in xs], rotation=30)
        ax.set_title(f"{arm['optimizer']}: chosen {t.get('chosen')}", fontsize=8)
        ax.set_xlabel(key or "grid point")
        ax.set_ylabel(t["metric"])
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
