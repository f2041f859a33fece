"""PNG plots with matplotlib (Agg: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from gradq.service.errors import UsageError  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _save(fig: Any, path: Path) -> None:
    """Write a figure as every plot here does (tight, 110 dpi) and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(docs: list[dict[str, Any]], path: Path,
                labels: dict[str, str] | None = None) -> Path:
    """One panel per metric, one line per job (several jobs are overlaid), each line named
    by ``labels[job id]`` (name · arm · seed, see ``queries.labels``), else its short id."""
    labels = labels or {}
    names = sorted({m for d in docs for m in d["metrics"]})
    if not names:
        raise UsageError("no learning curves to plot")
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
    _save(fig, path)
    return path


def plot_report(rep: dict[str, Any], path: Path) -> list[Path]:
    """Learning curves per arm (mean over seeds with a 95% band), the final metric per arm
    with its interval, and where they apply: the metric against each grid's
    hyperparameter (``-grid``), the expected best validation metric against the number of
    trials of each searched arm (``-search``), and the capacity figure (``-capacity``).
    Returns the files written."""
    from gradq.service.experiments.report import mean_curves

    path = Path(path)
    written = []
    curves = mean_curves(rep["id"], rep["metric"])
    fig, ax = plt.subplots(figsize=(7, 4))
    single = []  # a bagging arm logs its ensemble once, at the end: a point, not a curve
    for label, (steps, mean, half) in curves.items():
        if len(steps) < 2:
            single.append(label)
            continue
        ax.plot(steps, mean, label=label)
        ax.fill_between(steps, mean - half, mean + half, alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(rep["metric"])
    ax.set_title("mean over seeds, 95% band"
                 + (f" (one final point, no curve: {', '.join(single)})" if single else ""),
                 fontsize=10)
    ax.grid(alpha=0.3)
    if len(curves) > len(single):
        ax.legend(fontsize=8)
    _save(fig, path)
    written.append(path)
    arms = [a for a in rep["arms"] if a["mean"] is not None]
    final = path.with_name(path.stem + "-final" + path.suffix)
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(1, len(arms))))
    for i, a in enumerate(arms):
        lo, hi = a["ci95"] if a["ci95"] else (a["mean"], a["mean"])
        ax.errorbar(a["mean"], i, xerr=[[a["mean"] - lo], [hi - a["mean"]]], fmt="o",
                    capsize=4)
    ax.set_yticks(range(len(arms)), [a["label"] for a in arms])
    ax.set_xlabel(f"{rep['metric']} (mean, 95% interval)")
    ax.grid(alpha=0.3, axis="x")
    _save(fig, final)
    written.append(final)
    grids = [a for a in rep["arms"] if a.get("tuning")]
    if grids:
        written.append(_plot_grids(grids, path.with_name(path.stem + "-grid" + path.suffix)))
    searched = [a for a in rep["arms"] if a.get("search")]
    if searched:
        written.append(_plot_search(searched, path.with_name(
            path.stem + "-search" + path.suffix)))
    points = capacity_points(rep)
    if points is not None:
        written.append(_plot_capacity(points, path.with_name(
            path.stem + "-capacity" + path.suffix)))
    return written


def _plot_search(arms: list[dict[str, Any]], path: Path) -> Path:
    """Per searched arm, the expected best validation metric of k trials against k
    (Tang et al.'s unbiased estimator; k where k trials could all be failures is left
    out)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    metric = "validation metric"
    for a in arms:
        eb = a["search"]["expected_best"]
        ks = [k for k, v in enumerate(eb, start=1) if v is not None]
        ax.plot(ks, [eb[k - 1] for k in ks], marker=".", label=a["label"])
        metric = a["search"].get("metric", metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trials k")
    ax.set_ylabel(f"expected best {metric}")
    ax.set_title("expected best of k trials drawn from each arm's space")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return path


def capacity_points(rep: dict[str, Any]) -> dict[str, Any] | None:
    """The capacity figure's points, taken from the report as they are (None when the arms
    do not vary exactly one numeric key): the key, and per arm that has runs, sorted by
    the key's value: x, label, and the test and train metric's mean and 95% interval."""
    cap = rep.get("capacity")
    if not cap:
        return None
    by_label = {a["label"]: a for a in rep["arms"]}
    rows = sorted((x, label) for x, label in zip(cap["x"], cap["labels"], strict=True)
                  if by_label[label]["mean"] is not None)
    out: dict[str, Any] = {"key": cap["key"], "sum": cap.get("sum", False),
                           "metric": rep["metric"], "x": [],
                           "label": [], "test": [], "test_ci95": [], "train": [],
                           "train_ci95": [], "train_metric": None}
    for x, label in rows:
        a = by_label[label]
        train = a.get("train") or {}
        out["x"].append(x)
        out["label"].append(label)
        out["test"].append(a["mean"])
        out["test_ci95"].append(a["ci95"])
        out["train"].append(train.get("mean"))
        out["train_ci95"].append(train.get("ci95"))
        out["train_metric"] = train.get("metric", out["train_metric"])
    return out


def _band(ax: Any, xs: list[float], means: list[float | None],
          cis: list[list[float] | None], label: str) -> None:
    """A line through the means with its 95% band (a point without an interval has none)."""
    keep = [i for i, m in enumerate(means) if m is not None]
    x = [xs[i] for i in keep]
    m = [means[i] for i in keep]
    lo = [cis[i][0] if cis[i] else means[i] for i in keep]  # type: ignore[index]
    hi = [cis[i][1] if cis[i] else means[i] for i in keep]  # type: ignore[index]
    (line,) = ax.plot(x, m, marker="o", label=label)
    ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color())


def _plot_capacity(points: dict[str, Any], path: Path) -> Path:
    """The book's capacity figure (Goodfellow et al., fig. 5.3): train and test values of
    the metric against the varied key, each with its 95% band; x on a log scale when the
    values span more than a decade."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = points["x"]
    _band(ax, xs, points["test"], points["test_ci95"], points["metric"])
    if any(v is not None for v in points["train"]):
        _band(ax, xs, points["train"], points["train_ci95"],
              points["train_metric"] or "train")
    if xs and min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel(points["key"] + (" (sum of the list)" if points["sum"] else ""))
    ax.set_ylabel(points["metric"].removeprefix("test_"))
    ax.set_title("capacity: train and test, mean over seeds with 95% band")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return path


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
        ax.set_title(f"{arm['label']}: chosen {t.get('chosen')}", fontsize=8)
        ax.set_xlabel(key or "grid point")
        ax.set_ylabel(t["metric"])
        ax.grid(alpha=0.3)
    _save(fig, path)
    return path


def plot_suite(rep: dict[str, Any], path: Path) -> list[Path]:
    """A suite's performance profiles ρ_a(τ) (``path``, steps as Dolan and Moré draw them)
    and its win probability against the number of trials (``path``-win.png)."""
    path = Path(path)
    prof = rep["profiles"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, rho in prof["rho"].items():
        ax.step(prof["tau"], rho, where="post",
                label=f"{label} (score {rep['score'].get(label, 0):.2f})")
    ax.set_xlim(1, rep["r_max"])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"τ (time to target in {rep['budget']}, relative to the fastest arm)")
    ax.set_ylabel("ρ(τ): fraction of workloads")
    ax.set_title(f"performance profiles over {len(rep.get('scored', []))} workloads")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
    written = [path]
    win = rep["win_probability"]
    if win["k"]:
        fig, ax = plt.subplots(figsize=(7, 4))
        for label in prof["rho"]:
            if win.get(label):
                ax.plot(win["k"], win[label], marker="o", ms=3, label=label)
        ax.set_xlabel("trials per arm (k)")
        ax.set_ylabel("probability of being best")
        ax.set_ylim(-0.02, 1.02)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        win_path = path.with_name(path.stem + "-win.png")
        _save(fig, win_path)
        written.append(win_path)
    return written
