"""A comparison's statistics (Goodfellow et al. §5.4: estimators, standard error, intervals).

For each arm: n, mean, std (n − 1), standard error std/√n, and the 95% interval
mean ± t(0.975, n − 1)·se, and the generalization gap (the test value of the metric minus
its train value, per run) with its own interval. Arm A is ``better`` than B when A's
interval lies wholly on the good side of B's (the book's rule). Seeds are paired — every
arm sees the same split, minibatch order and, where shapes match, initial parameters for a
given seed — so ``pairs`` also gives, for every pair of arms, the mean per-seed difference
with its t-interval and the paired t-test's p-value, Holm-adjusted over all the pairs of the
report so that a table of many pairs does not find differences in noise. Failed or
diverged children are listed and left out of the statistics, never averaged in silently;
tuning and search trials (``_phase`` tune or search) never enter them.

A searched arm also reports the expected best validation metric after k trials drawn from
its space, k = 1…trials: Dodge et al. (2019)'s expected maximum with Tang et al. (2020)'s
correction, i.e. the exact expectation when the k trials are sampled *without
replacement* from the n trials that ran (an unbiased estimator; see ``expected_best``).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

import numpy as np
import sqlalchemy as sa
from gradq.service.errors import UsageError
from gradq.service.spec import lower_is_better
from gradq.service.status import FINISHED_NAMES, JobStatus
from gradq.service.store.db import session_scope
from gradq.service.store.models import Job, Metric, Result
from gradq.service.store.queries import resolve
from scipy import special  # the t distribution only: scipy.stats costs ~1 s to import
from sqlalchemy.orm import Session

_BAD_ENDS = FINISHED_NAMES - {JobStatus.SUCCEEDED.value}  # a tuning run that did not count

STATISTICS_PHASES = (None, "final")  # tuning runs and search trials are never pooled


def _t_ppf(q: float, df: int) -> float:
    """The q-quantile of Student's t with ``df`` degrees of freedom: exactly what
    ``scipy.stats.t.ppf`` returns (it calls the same ``stdtrit``)."""
    return special.stdtrit(df, q)


def _t_sf(x: float, df: int) -> float:
    """P(T > x) for Student's t: ``scipy.stats.t.sf``'s own formula, ``stdtr(df, −x)``."""
    return special.stdtr(df, -x)


def interval(values: list[float]) -> dict[str, Any]:
    """n, mean, std, se and the t-interval of a sample."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "se": None, "ci95": None}
    mean = float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "se": None, "ci95": None}
    std = float(x.std(ddof=1))
    se = std / math.sqrt(n)
    h = float(_t_ppf(0.975, n - 1)) * se
    return {"n": n, "mean": mean, "std": std, "se": se, "ci95": [mean - h, mean + h]}


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """∫ y dx by the trapezoid rule (``np.trapezoid`` exists only from NumPy 2.0; gradq
    supports NumPy ≥ 1.24)."""
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


def paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """The paired comparison of a and b (same seeds, same order): n, the mean difference
    a − b, its t-interval, and the two-sided paired t-test's p-value (None below 2 pairs;
    0 or 1 when every difference is the same nonzero or zero number)."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    iv = interval(d)
    doc: dict[str, Any] = {"n": iv["n"], "diff": iv["mean"], "ci95": iv["ci95"], "p": None}
    if iv["ci95"] is not None:
        if iv["se"] == 0:
            doc["p"] = 1.0 if iv["mean"] == 0 else 0.0
        else:
            t = iv["mean"] / iv["se"]
            doc["p"] = float(2 * _t_sf(abs(t), iv["n"] - 1))
    return doc


def holm(ps: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of the p-values that exist (None stays None): the i-th
    smallest of m becomes max over j ≤ i of min(1, (m − j + 1)·p_(j)), so it is monotone
    in p and capped at 1. Controls the family-wise error rate over all m tests."""
    order = sorted((i for i, p in enumerate(ps) if p is not None), key=lambda i: ps[i])
    m = len(order)
    out: list[float | None] = [None] * len(ps)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))  # type: ignore[operator]
        out[i] = running
    return out


_TAIL = 40.0  # a weight below e^-40 of the k-th largest (at the best position) is left out


def expected_best(values: list[float | None], lower_is_better: bool) -> list[float | None]:
    """E[best of k trials] for k = 1…n, from the n trials that ran (None: a failed trial).

    Dodge et al. (2019) introduced the expected validation performance against the number
    of trials; Tang et al. (2020) showed its with-replacement form is biased and gave the
    unbiased one used here: draw the k trials without replacement from the n observed, so
    with the values sorted worst first, v_(1) … v_(n), the best of k is v_(i) with
    probability C(i − 1, k − 1) / C(n, k), and E = Σ_i v_(i)·C(i − 1, k − 1) / C(n, k).
    (k = 1 gives the mean, k = n the best.) A failed trial ranks below every finished one;
    while k is at most the number f of failures a draw can be all failures, whose value is
    none, so E is None for k ≤ f and exact for k > f (failures then carry weight 0).

    The weights are computed in log space (log-factorials), not as big-integer binomials:
    counting m positions down from the best, w(m, k) = (k/n)·(n−k)!/(n−k−m)!·(n−1−m)!/(n−1)!,
    which falls like e^(−mk/n), so only the top ⌈40·n/k⌉ positions of each k are read.
    Blocks of k share one array, so 10,000 trials take tens of milliseconds
    (``benchmarks/expected_best.py``), equal to the exact sums up to float error.
    """
    n = len(values)
    done = [v for v in values if v is not None and math.isfinite(v)]
    f = n - len(done)
    out: list[float | None] = [None] * n
    if not done:
        return out
    top = np.zeros(n)  # top[m]: the value m positions below the best; failures weigh 0
    top[:len(done)] = sorted(done, reverse=not lower_is_better)
    logfact = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, n + 1)))))
    # down[j] = log (n − j)!, +inf past j = n (where i < k: weight 0), so that the row of k
    # of log (n − k − m)! over m is the slice down[k : k + width]
    down = np.concatenate((logfact[::-1], np.full(n + 1, np.inf)))
    k0 = f + 1
    while k0 <= n:
        ks = np.arange(k0, min(n + 1, max(k0 + 1, int(k0 * 1.25) + 1)))
        width = int(min(n - k0 + 1, math.ceil(_TAIL * n / k0)))
        logw = np.lib.stride_tricks.sliding_window_view(down, width)[ks]  # a copy
        np.subtract(logfact[n - 1 - np.arange(width)] - logfact[n - 1], logw, out=logw)
        logw += (np.log(ks / n) + logfact[n - ks])[:, None]
        out[k0 - 1:ks[-1]] = (np.exp(logw, out=logw) @ top[:width]).tolist()
        k0 = int(ks[-1]) + 1
    return out


def capacity_x(value: Any) -> float | None:
    """An arm's value of the varied key as a number: a number, or a list of numbers such as
    ``model.hidden: [64, 64]`` taken as its sum (the hidden units in all, so that depth
    and width both count as capacity). None when it is not numeric."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if (isinstance(value, list) and value
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        return float(sum(value))
    return None


def _capacity(order: list[str], overrides: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """When the arms' overrides differ in exactly one key and that key is numeric in every
    arm: {key, labels, x} (arms in report order), the axis of the capacity figure, with
    ``sum: true`` when a value was a list of several numbers (x is then their sum)."""
    if len(order) < 2 or any(label not in overrides for label in order):
        return None
    keys = {k for label in order for k in overrides[label]}
    missing = object()
    varying = [k for k in sorted(keys)
               if len({json.dumps(overrides[label].get(k, missing), sort_keys=True,
                                  default=str) for label in order}) > 1]
    if len(varying) != 1:
        return None
    key = varying[0]
    xs = [capacity_x(overrides[label].get(key)) for label in order]
    if any(x is None for x in xs):
        return None
    cap: dict[str, Any] = {"key": key, "labels": list(order), "x": xs}
    if any(isinstance(overrides[label].get(key), list) and len(overrides[label][key]) > 1
           for label in order):
        cap["sum"] = True
    return cap


def _load(s: Session, parent: Job, metric: str
          ) -> tuple[list[tuple[Job, Result | None]], dict[str, list[tuple[int, float, float]]]]:
    """A comparison's children with their results, and each child's (step, time_s, value)
    curve of ``metric`` in step order (the only curve a report reads)."""
    kids = s.execute(sa.select(Job).where(Job.parent_id == parent.id)).scalars().all()
    results = {r.job_id: r for r in s.execute(
        sa.select(Result).where(Result.job_id.in_([k.id for k in kids]))).scalars()}
    curves: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    rows = s.execute(sa.select(Metric.job_id, Metric.step, Metric.time_s, Metric.value)
                     .join(Job, Job.id == Metric.job_id)
                     .where(Job.parent_id == parent.id, Metric.name == metric)
                     .order_by(Metric.job_id, Metric.step)).all()
    for r in rows:
        curves[r.job_id].append((r.step, r.time_s, math.nan if r.value is None else r.value))
    return [(k, results.get(k.id)) for k in kids], curves


def _bagging_report(job: Job, res: Result | None) -> dict[str, Any]:
    """A bagging job's ensemble against its members (Goodfellow et al., §7.11).

    With ε_i member i's error on an example, v = E[ε_i²] and c = E[ε_i ε_j] (i ≠ j), the
    ensemble's expected squared error is (1/k)v + ((k−1)/k)c: it shrinks towards c as k
    grows, and to v/k when the members' errors are uncorrelated.
    """
    status = JobStatus(job.status).value
    jid = job.id
    extra = json.loads(res.extra) if res is not None else {}
    if "bagging" not in extra:
        raise UsageError(f"job {jid} is a train job without bagging; report is for "
                         "comparisons (kind: compare or data.folds) and bagging jobs")
    b = extra["bagging"]
    return {"id": jid, "kind": "bagging", "status": status, "models": b["models"],
            "members": b["members"], "ensemble": b["ensemble"], "v": b["v"], "c": b["c"],
            "predicted_error": b["predicted_error"], "observed_error": b["observed_error"],
            "mean_member_error": float(np.mean([m["test_error"] for m in b["members"]]))}


def _new_arm() -> dict[str, Any]:
    return {"values": [], "train": [], "gaps": [], "runs": [], "excluded": {},
            "reach_steps": [], "reach_time": [], "auc": [], "stacked": 0, "alone": 0}


def _search_doc(entry: dict[str, Any], low: bool) -> dict[str, Any]:
    """An arm's search as the report shows it (docs/results.md), from the parent's progress. With a
    pruner, a trial's value is its validation metric at the last rung it reached (the
    value the search decided on), so expected_best describes the search as it ran."""
    values = entry.get("values") or []
    doc = {k: entry.get(k) for k in ("space", "method", "trials", "pruned", "chosen",
                                     "budget")}
    if entry.get("metric"):
        doc["metric"] = entry["metric"]
    # a trial still alive at an undecided rung has not reported yet: pending, not failed
    alive = set() if entry.get("done", True) else set(entry.get("alive") or ())
    asked = entry.get("asked", len(values))  # tpe: the trials proposed so far
    ended = [v for t, v in enumerate(values)
             if t < asked and not (t in alive and v is None)]
    if len(ended) < len(values):
        doc["pending"] = len(values) - len(ended)
    doc["failed"] = sum(1 for v in ended if v is None or not math.isfinite(v))
    doc["expected_best"] = expected_best(ended, low)
    return doc


def build_report(parent_id: str) -> dict[str, Any]:
    """The docs/results.md report document, readable while the comparison runs (marked partial)."""
    with session_scope() as s:
        parent = resolve(s, parent_id)
        if parent.kind == "train":
            return _bagging_report(parent, s.get(Result, parent.id))
        cmp = json.loads(parent.spec).get("compare") or {}
        metric = cmp.get("metric", "test_loss")
        kids, curves = _load(s, parent, metric)
    target = cmp.get("target")
    low = lower_is_better(metric)
    train_metric = "train_" + metric[len("test_"):] if metric.startswith("test_") else None
    progress = json.loads(parent.progress or "{}")
    tuned = progress.get("tuning", {})
    searched = progress.get("search") or {}
    arms: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    by_seed: dict[str, dict[int, float]] = defaultdict(dict)
    counts: dict[str, int] = defaultdict(int)
    tune_bad: dict[str, dict[str, int]] = defaultdict(dict)
    index: dict[str, int] = {}  # the arm's place in the spec, or the fold's number
    overrides: dict[str, dict[str, Any]] = {}
    for job, res in kids:
        cspec = json.loads(job.spec)
        label = cspec.get("_arm") or cspec["optimizer"]["name"]
        index.setdefault(label, cspec.get("_arm_index", cspec.get("_fold", [0, 0])[1]))
        status = JobStatus(job.status).value
        counts[status] += 1
        if label not in arms:
            order.append(label)
            arms[label] = _new_arm()
        phase = cspec.get("_phase")
        if phase not in STATISTICS_PHASES:  # tuning runs choose a setting, trials search
            if phase == "tune" and status in _BAD_ENDS:
                tune_bad[label][status] = tune_bad[label].get(status, 0) + 1
            continue
        if "_arm_overrides" in cspec:
            overrides.setdefault(label, cspec["_arm_overrides"])
        arm = arms[label]
        if status not in FINISHED_NAMES:
            continue  # not finished yet: the report is marked partial, nothing is excluded
        if status != "succeeded" or res is None:
            arm["excluded"][status] = arm["excluded"].get(status, 0) + 1
            continue
        final = json.loads(res.final)
        value = final.get(metric)
        if value is None or not math.isfinite(value):
            arm["excluded"]["no_metric"] = arm["excluded"].get("no_metric", 0) + 1
            continue
        arm["values"].append(float(value))
        arm["runs"].append(job.id)
        train = final.get(train_metric) if train_metric else None
        if train is not None and math.isfinite(train):
            arm["train"].append(float(train))
            arm["gaps"].append(float(value) - float(train))
        stacked = (json.loads(res.timing) or {}).get("stacked")
        if stacked is not None:
            arm["stacked" if stacked > 1 else "alone"] += 1
        seed_key = cspec["_fold"][1] if cspec.get("_fold") else job.seed
        by_seed[label][seed_key] = float(value)
        curve = curves.get(job.id)
        if curve:
            steps = np.array([c[0] for c in curve], dtype=np.float64)
            vals = np.array([c[2] for c in curve], dtype=np.float64)
            if len(steps) > 1 and steps[-1] > 0:
                arm["auc"].append(trapezoid(vals, steps) / steps[-1])
            if target is not None:
                hit = [c for c in curve if (c[2] <= target if low else c[2] >= target)]
                arm["reach_steps"].append(hit[0][0] if hit else None)
                arm["reach_time"].append(hit[0][1] if hit else None)
    for label in searched:  # an arm still searching may have no child of its own listed
        if label not in arms:
            order.append(label)
            arms[label] = _new_arm()
    order.sort(key=lambda label: index.get(label, 0))
    optimizers = not cmp.get("arms")  # an optimizer comparison (or folds) keeps "optimizer"
    out_arms = []
    for label in order:
        a = arms[label]
        doc: dict[str, Any] = {"label": label}
        if optimizers:
            doc["optimizer"] = label
        doc.update({**interval(a["values"]), "runs": a["runs"]})
        if train_metric:
            gap = interval(a["gaps"])
            train = interval(a["train"])
            doc["gap"] = {"n": gap["n"], "mean": gap["mean"], "ci95": gap["ci95"]}
            doc["train"] = {"metric": train_metric, "n": train["n"], "mean": train["mean"],
                            "ci95": train["ci95"]}
        if a["stacked"] or a["alone"]:
            doc["stacked"] = {"stacked": a["stacked"], "alone": a["alone"]}
        if label in tuned:
            doc["tuning"] = tuned[label]
        if label in searched:
            doc["search"] = _search_doc(searched[label], low)
        if a["excluded"]:
            doc["excluded"] = a["excluded"]
        if a["auc"]:
            doc["auc"] = interval(a["auc"])
        if target is not None:
            reached = [s for s in a["reach_steps"] if s is not None]
            doc["target"] = {
                "value": target, "reached": len(reached), "of": len(a["reach_steps"]),
                "steps": interval(reached)["mean"],
                "time_s": interval([t for t in a["reach_time"] if t is not None])["mean"]}
        out_arms.append(doc)
    better = []
    for a in out_arms:
        for b in out_arms:
            if a is b or not a["ci95"] or not b["ci95"]:
                continue
            if (a["ci95"][1] < b["ci95"][0]) if low else (a["ci95"][0] > b["ci95"][1]):
                better.append([a["label"], b["label"]])
    pairs = []
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            common = sorted(set(by_seed[a]) & set(by_seed[b]))
            pairs.append({"a": a, "b": b, **paired([by_seed[a][s] for s in common],
                                                   [by_seed[b][s] for s in common])})
    for p, adjusted in zip(pairs, holm([p["p"] for p in pairs]), strict=True):
        p["p_holm"] = adjusted
        p["significant"] = adjusted is not None and adjusted < 0.05
    total = len(kids)
    done = sum(v for k, v in counts.items() if k in FINISHED_NAMES)
    notes = _notes(out_arms, tune_bad, train_metric)
    rep: dict[str, Any] = {
        "id": parent.id, "status": JobStatus(parent.status).value, "metric": metric,
        "lower_is_better": low, "arms": out_arms, "better": better, "pairs": pairs,
        "children": dict(counts), "notes": notes,
        "partial": (f"{total - done} of {total} runs not finished" if done < total else None),
    }
    if progress.get("seeds"):
        rep["seeds"] = {"tune": progress["seeds"].get("tune", []),
                        "eval": progress["seeds"].get("eval", [])}
    if progress.get("shapes") and len(set(progress["shapes"].values())) > 1:
        rep["shapes"] = progress["shapes"]
        shapes = progress["shapes"]
        notes.append("arms differ in shape (" + ", ".join(
            f"{k}: {shapes[k]}" for k in order if k in shapes)
            + "), so not all of them share initial parameters")
    capacity = _capacity(order, overrides)
    if capacity is not None:
        rep["capacity"] = capacity
    return rep


def _notes(arms: list[dict[str, Any]], tune_bad: dict[str, dict[str, int]],
           train_metric: str | None) -> list[str]:
    """What the statistics leave out, in words."""
    notes = []
    for a in arms:
        label = a["label"]
        if a.get("excluded"):
            ex = ", ".join(f"{v} {k}" for k, v in a["excluded"].items())
            notes.append(f"{label}: statistics over {a['n']} runs; excluded {ex}")
        if tune_bad.get(label):  # tuning runs are never pooled, but say what failed
            ex = ", ".join(f"{v} {k}" for k, v in tune_bad[label].items())
            notes.append(f"{label}: tuning runs left out of the grid: {ex}")
        if a.get("tuning") and a["tuning"].get("chosen") is None:
            notes.append(f"{label}: no grid setting finished tuning; no final runs")
        if a.get("search") and a["search"]["failed"]:
            sr = a["search"]
            notes.append(f"{label}: {sr['failed']} of {sr['trials']} search trials failed; "
                         "ranked worst in expected_best (None while k trials could all "
                         "be failures)")
        if train_metric and 0 < a["gap"]["n"] < a["n"]:
            notes.append(f"{label}: gap over {a['gap']['n']} of {a['n']} runs (the others "
                         f"stored no {train_metric})")
    return notes


def mean_curves(parent_id: str, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]]:
    """Per arm: (steps, mean, half-width of the 95% band) of a metric's curve over seeds
    (the runs that enter the statistics: no tuning runs, no search trials)."""
    with session_scope() as s:
        parent = resolve(s, parent_id)
        if parent.kind != "compare":
            raise UsageError(f"job {parent.id} is a {parent.kind} job; report is for "
                             "comparisons (kind: compare or data.folds)")
        kids, curves = _load(s, parent, metric)
    groups: dict[str, list[np.ndarray]] = defaultdict(list)
    steps_of: dict[str, np.ndarray] = {}
    for job, _ in kids:
        if JobStatus(job.status) is not JobStatus.SUCCEEDED:
            continue
        c = curves.get(job.id)
        if not c:
            continue
        cspec = json.loads(job.spec)
        if cspec.get("_phase") not in STATISTICS_PHASES:
            continue
        label = cspec.get("_arm") or job.id[:8]
        steps = np.array([p[0] for p in c])
        vals = np.array([p[2] for p in c])
        if label in steps_of and len(steps_of[label]) != len(steps):
            n = min(len(steps_of[label]), len(steps))
            steps_of[label] = steps_of[label][:n]
            groups[label] = [g[:n] for g in groups[label]]
            vals = vals[:n]
        steps_of.setdefault(label, steps)
        groups[label].append(vals[: len(steps_of[label])])
    out = {}
    for label, vs in groups.items():
        m = np.vstack(vs)
        mean = m.mean(axis=0)
        if len(vs) > 1:
            se = m.std(axis=0, ddof=1) / math.sqrt(len(vs))
            half = _t_ppf(0.975, len(vs) - 1) * se
        else:
            half = np.zeros_like(mean)
        out[label] = (steps_of[label], mean, half)
    return out
