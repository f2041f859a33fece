"""How gradq shows values and reports to people: one home for the CLI and the dashboard.

Pure functions from documents (the JSON the service returns) to text; nothing here prints,
reads the database or imports more than the standard library, so ``gradq --help`` and the
read commands stay quick. ``cli/output.py`` prints these lines; the dashboard's templates
use ``fmt`` and ``interval`` as filters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

NONE = "-"  # a value that is not there (no interval, no metric yet)
HOLM_SHOWN = 15  # longer pair tables show only the pairs with p < 0.05


def fmt(v: Any, digits: int = 4) -> str:
    """A value as people read it: ``digits`` significant figures, ``-`` for none.

    The CLI's rule, which its output keeps byte for byte: a flag is ``True``/``False`` as in
    ``amsgrad=False`` (the dashboard showed yes/no before; one spelling now), and a list
    is its items, each formatted."""
    if v is None:
        return NONE
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.{digits}g}"
        return f"{v:.{digits}f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:.1f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x, digits)}" for k, x in v.items())
    if isinstance(v, list | tuple):
        return "[" + ", ".join(fmt(x, digits) for x in v) + "]"
    return str(v)


def interval(ci: Sequence[float] | None) -> str:
    """``[low, high]`` of an interval, ``-`` without one."""
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci else NONE


def pm(mean: float | None, ci95: Sequence[float] | None) -> str:
    """``mean ± half-width`` of a symmetric interval (``mean`` alone without one)."""
    if mean is None:
        return NONE
    return f"{fmt(mean)} ± {fmt((ci95[1] - ci95[0]) / 2)}" if ci95 else fmt(mean)


def size(n: float) -> str:
    """A byte count in B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def space(value: Any) -> str:
    """``loguniform[1e-05, 1]`` for ``{loguniform: [1e-05, 1]}``; other values as they are."""
    if isinstance(value, dict) and len(value) == 1:
        ((kind, args),) = value.items()
        return f"{kind}{args}"
    return str(value)


# ------------------------------------------------------------------ layouts
def table_lines(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> list[str]:
    """An aligned plain-text table: upper-case headers, then one line per row."""
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    out = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in cells]
    return out


def pairs_lines(items: Sequence[tuple[str, Any]]) -> list[str]:
    """A two-column key/value listing."""
    width = max(len(k) for k, _ in items)
    return [f"{k.ljust(width)}  {fmt(v)}" for k, v in items]


# ------------------------------------------------------------ job documents
def result_lines(doc: dict[str, Any]) -> list[str]:
    """A job's result document (``gradq results``): identity, final metrics, timings."""
    items: list[tuple[str, Any]] = [
        ("id", doc["id"]), ("status", doc["status"]), ("name", doc["name"]),
        ("optimizer", doc["optimizer"]), ("device", doc["device"]), ("worker", doc["worker"]),
        ("attempts", doc["attempts"]), ("params", doc["params"])]
    items += list((doc.get("final") or {}).items())
    items += list((doc.get("timing") or {}).items())
    if doc.get("error"):
        items.append(("error", doc["error"]))
    return pairs_lines(items)


def status_lines(doc: dict[str, Any]) -> list[str]:
    """A job's status document (``gradq status``): state, progress or children, and a
    failed job's traceback."""
    p = doc.get("progress") or {}
    items: list[tuple[str, Any]] = [("id", doc["id"]), ("kind", doc["kind"]),
                                    ("status", doc["status"]), ("device", doc["device"]),
                                    ("worker", doc["worker"]), ("attempts", doc["attempts"])]
    if "children" in p:
        items.append(("children", ", ".join(f"{v} {k}" for k, v in p["children"].items() if v)
                      or "none"))
        for label, st in (p.get("search") or {}).items():  # a search's trials, per arm
            at = (f", deciding the rung at {st['rung_epochs']} epochs"
                  if st["rung_epochs"] else f", chosen {st['chosen']}")
            items.append((f"search {label}", f"{st['done']}/{st['trials']} trials done, "
                          f"{st['pruned']} pruned, {st['running']} running, "
                          f"{st['queued']} queued{at}"))
    elif p:
        items.append(("progress", f"epoch {p.get('epoch')}/{p.get('epochs')}, step "
                                  f"{p.get('step')}/{p.get('steps')}"))
        items += [(k, p[k]) for k in ("train_loss", "val_loss", "val_accuracy") if k in p]
    if doc.get("error"):
        items.append(("error", doc["error"]))
    out = pairs_lines(items)
    if doc.get("traceback") and doc["status"] == "failed":
        out.append(doc["traceback"].rstrip())
    return out


def phase_name(phase: str | None) -> str:
    """A comparison child's ``_phase`` as a progress line names it."""
    return {"tune": "tuning", "search": "search", "final": "final runs"}.get(
        phase or "", "runs")


def progress_line(progress: dict[str, Any]) -> str:
    """One line of a running job's progress (``gradq run``'s status line)."""
    parts = []
    if "epoch" in progress:
        parts.append(f"epoch {progress['epoch']}/{progress['epochs']}")
        parts.append(f"step {progress['step']}/{progress.get('steps', '?')}")
    parts += [f"{k} {fmt(progress[k])}" for k in ("train_loss", "val_loss", "val_accuracy")
              if k in progress]
    return "  ".join(parts)


# ------------------------------------------------------------------ reports
def report_lines(rep: dict[str, Any]) -> list[str]:
    """A comparison's report (``gradq report``): arms with intervals, the better relation,
    paired tests, tuning and search. A bagging report has its own layout."""
    if rep.get("kind") == "bagging":
        return bagging_lines(rep)
    out = [f"metric {rep['metric']} ({'lower' if rep['lower_is_better'] else 'higher'} "
           "is better); mean ± half-width of its 95% t-interval"]
    if rep.get("seeds"):
        out.append(f"seeds: tune {rep['seeds']['tune']}, eval {rep['seeds']['eval']}")
    gap = any("gap" in a for a in rep["arms"])
    stacked = any("stacked" in a for a in rep["arms"])
    rows = []
    for a in rep["arms"]:
        row = [a["label"], a["n"], pm(a["mean"], a["ci95"]), a["std"]]
        if gap:
            row.append(pm(a["gap"]["mean"], a["gap"]["ci95"]) if a.get("gap") else NONE)
        if stacked:
            st = a.get("stacked")
            row.append(f"{st['stacked']}/{st['stacked'] + st['alone']}" if st else NONE)
        rows.append([*row, a.get("excluded") or ""])
    out += table_lines(rows, ["arm", "n", "mean ± 95%", "std",
                              *(["gap ± 95%"] if gap else []),
                              *(["stacked"] if stacked else []), "excluded"])
    if gap:
        out.append("gap: test minus train value of the metric, per run (generalization gap)")
    better = rep.get("better") or []
    out.append("better: " + ("; ".join(f"{a} > {b}" for a, b in better) if better
                             else "no arm's interval is wholly better than another's"))
    out += pair_lines(rep)
    for a in rep["arms"]:
        if a.get("tuning"):
            t = a["tuning"]
            out.append(f"tuned {a['label']} on {t['metric']}: chose {t['chosen']} from "
                       + ", ".join(f"{g['setting']}→{fmt(g.get(t['metric']))}"
                                   for g in t["grid"]))
        if a.get("search"):
            out += search_lines(a["label"], a["search"])
    out += [f"note: {n}" for n in rep.get("notes") or ()]
    return out


def pair_lines(rep: dict[str, Any]) -> list[str]:
    """The paired differences, their p-values before and after Holm, survivors marked."""
    rows = [p for p in rep.get("pairs") or [] if p["n"]]
    if not rows:
        return []
    tested = sum(1 for p in rows if p["p"] is not None)
    out = [f"pairs: a − b over the seeds both ran; paired t-test, Holm-adjusted over "
           f"{tested} pair{'' if tested == 1 else 's'}; * = survives Holm (p_holm < 0.05)"]
    if len(rows) > HOLM_SHOWN:  # a long table: the pairs with p < 0.05 before or after Holm
        hidden = [p for p in rows if p["p"] is None or p["p"] >= 0.05]
        rows = [p for p in rows if p not in hidden]
        out.append(f"({len(hidden)} pairs with p ≥ 0.05 not shown; --json lists every pair)")
    out += table_lines([(p["a"], p["b"], p["n"], p["diff"], interval(p["ci95"]), p["p"],
                         p["p_holm"], "*" if p["significant"] else "") for p in rows],
                       ("a", "b", "n", "diff", "ci95", "p", "p_holm", "holm"))
    return out


def search_lines(label: str, sr: dict[str, Any]) -> list[str]:
    """One arm's search: its space, trials, chosen point, budget and expected best."""
    spaces = "; ".join(f"{k} ~ {space(v)}" for k, v in (sr.get("space") or {}).items())
    budget = sr.get("budget") or {}
    chosen = ", ".join(f"{k}={fmt(v)}" for k, v in sr["chosen"].items()) \
        if sr.get("chosen") else "nothing yet"
    out = [f"search {label}: {sr.get('method')} over {spaces or 'no space'}; "
           f"{sr.get('trials')} trials, {sr.get('pruned', 0)} pruned, "
           f"{sr.get('failed', 0)} failed; chose {chosen}; budget "
           f"{budget.get('epochs', NONE)} epochs, {budget.get('samples', NONE)} samples, "
           f"{fmt(budget.get('run_s'))} s"]
    eb = sr.get("expected_best") or []
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, len(eb)) if 1 <= k <= len(eb)})
    if ks:
        out.append(f"  expected best {sr.get('metric', 'validation metric')} of k trials: "
                   + ", ".join(f"k={k} {fmt(eb[k - 1])}" for k in ks))
    return out


def bagging_lines(rep: dict[str, Any]) -> list[str]:
    """A bagging report: each member and the ensemble, and the book's error prediction."""
    ens = rep["ensemble"]
    out = table_lines([(f"member {i}", m["test_error"], m["test_loss"], m.get("test_accuracy"))
                       for i, m in enumerate(rep["members"])]
                      + [("ensemble", ens["test_error"], ens["test_loss"],
                          ens.get("test_accuracy"))],
                      ("model", "test_error", "test_loss", "test_accuracy"))
    k = rep["models"]
    out.append(f"members' error variance v = {fmt(rep['v'])}, covariance c = {fmt(rep['c'])}")
    out.append(f"predicted ensemble error (1/k)v + ((k-1)/k)c with k={k}: "
               f"{fmt(rep['predicted_error'])}; observed: {fmt(rep['observed_error'])}; "
               f"mean member error: {fmt(rep['mean_member_error'])}")
    return out


def freed_lines(doc: dict[str, Any], dry_run: bool) -> list[str]:
    """``gradq gc``'s table of what was (or would be) freed, per kind."""
    verb = "would free" if dry_run else "freed"
    return table_lines([(k, v["rows"], size(v["bytes"])) for k, v in doc["freed"].items()],
                       ("kind", "rows", verb))


def removed_line(d: dict[str, Any]) -> str:
    """``gradq rm``'s line for one deleted job: its rows per table and their bytes."""
    parts = ", ".join(f"{v['rows']} {k}" for k, v in d["deleted"].items() if v["rows"])
    total = sum(v["bytes"] for v in d["deleted"].values())
    return f"deleted {d['id']}: {parts or 'nothing'} ({size(total)})"


def suite_lines(rep: dict[str, Any]) -> list[str]:
    """A suite's report (docs/suites.md): per workload and arm the median time to target in the
    suite's unit, the seeds that reached it, the ratio to the fastest arm and the final
    metric; then per arm the score, ρ(1) and the win probability at 1 and at all trials."""
    unit = rep["budget"]
    out = [f"suite {rep['name']} ({rep['status']}): time to target in {unit} (median over "
           "seeds; - never reached), final metric mean ± half-width of its 95% interval"]
    rows = []
    for w in rep["workloads"]:
        target = f"{fmt(w['target'])} ({w['target_set_by']})"
        head = [w["name"], w["status"] or NONE, w["metric"], target]
        if not w["arms"]:
            rows.append([*head, NONE, NONE, NONE, NONE, NONE])
        for a in w["arms"]:
            rows.append([*head, a["label"], a["time_to_target"][unit],
                         f"{a['reached']}/{a['n']}", a.get("ratio"),
                         pm(a["final"]["mean"], a["final"]["ci95"])])
    out += table_lines(rows, ["workload", "status", "metric", "target", "arm", f"t({unit})",
                              "reached", "ratio", "final ± 95%"])
    win = rep["win_probability"]
    last = win["k"][-1] if win["k"] else None
    out.append("")
    out += table_lines(
        [[a, s, rep["profiles"]["rho"][a][0], win[a][0] if last else None,
          win[a][-1] if last else None] for a, s in rep["score"].items()],
        ["arm", f"score (tau 1-{fmt(rep['r_max'])})", "fastest on (rho(1))", "P(best) k=1",
         f"P(best) k={last or NONE}"])
    out.append(f"scored on {len(rep['scored'])} workload(s)"
               + (f"; failed: {', '.join(rep['failed'])}" if rep["failed"] else ""))
    return out
