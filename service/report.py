"""A comparison's statistics (Goodfellow et al. §5.4: estimators, standard error, intervals).

For each arm: n, mean, std (n − 1), standard error std/√n, and the 95% interval
mean ± t(0.975, n − 1)·se. Arm A is ``better`` than B when A's interval lies wholly on the
good side of B's (the book's rule). Seeds are paired — every arm sees the same split,
minibatch order and initial parameters for a given seed — so the report also gives, per
pair, the mean per-seed difference with its own t-interval, a sharper test. Failed or
diverged children are listed and left out of the statistics, never averaged in silently.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

import numpy as np
import sqlalchemy as sa
from scipy import stats
from sqlalchemy.orm import Session

from .db import session_scope
from .errors import UsageError
from .models import Job, JobStatus, Metric, Result
from .queries import resolve
from .spec import lower_is_better


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
    h = float(stats.t.ppf(0.975, n - 1)) * se
    return {"n": n, "mean": mean, "std": std, "se": se, "ci95": [mean - h, mean + h]}


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


def build_report(parent_id: str) -> dict[str, Any]:
    """The SPEC §6 report document, readable while the comparison runs (marked partial)."""
    with session_scope() as s:
        parent = resolve(s, parent_id)
        if parent.kind == "train":
            return _bagging_report(parent, s.get(Result, parent.id))
        cmp = json.loads(parent.spec).get("compare") or {}
        metric = cmp.get("metric", "test_loss")
        kids, curves = _load(s, parent, metric)
    target = cmp.get("target")
    low = lower_is_better(metric)
    arms: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    by_seed: dict[str, dict[int, float]] = defaultdict(dict)
    counts: dict[str, int] = defaultdict(int)
    tuned = json.loads(parent.progress or "{}").get("tuning", {})
    tune_counts: dict[str, int] = defaultdict(int)
    tune_bad: dict[str, dict[str, int]] = defaultdict(dict)
    index: dict[str, int] = {}  # the arm's place in the spec, or the fold's number
    for job, res in kids:
        cspec = json.loads(job.spec)
        label = cspec.get("_arm") or cspec["optimizer"]["name"]
        index.setdefault(label, cspec.get("_arm_index", cspec.get("_fold", [0, 0])[1]))
        status = JobStatus(job.status).value
        counts[status] += 1
        if cspec.get("_phase") == "tune":  # tuning runs choose a setting; they are not pooled
            tune_counts[label] += 1
            if status in ("failed", "diverged", "cancelled"):
                tune_bad[label][status] = tune_bad[label].get(status, 0) + 1
            continue
        if label not in arms:
            order.append(label)
            arms[label] = {"values": [], "runs": [], "excluded": {}, "reach_steps": [],
                           "reach_time": [], "auc": []}
        arm = arms[label]
        if status in ("queued", "running"):
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
        seed_key = cspec["_fold"][1] if cspec.get("_fold") else job.seed
        by_seed[label][seed_key] = float(value)
        curve = curves.get(job.id)
        if curve:
            steps = np.array([c[0] for c in curve], dtype=np.float64)
            vals = np.array([c[2] for c in curve], dtype=np.float64)
            if len(steps) > 1 and steps[-1] > 0:
                arm["auc"].append(float(np.trapezoid(vals, steps) / steps[-1]))
            if target is not None:
                hit = [c for c in curve if (c[2] <= target if low else c[2] >= target)]
                arm["reach_steps"].append(hit[0][0] if hit else None)
                arm["reach_time"].append(hit[0][1] if hit else None)
    for label in tune_counts:  # a grid arm still tuning has no final runs yet
        if label not in arms:
            order.append(label)
            arms[label] = {"values": [], "runs": [], "excluded": {}, "reach_steps": [],
                           "reach_time": [], "auc": []}
    order.sort(key=lambda label: index.get(label, 0))
    out_arms = []
    for label in order:
        a = arms[label]
        doc = {"optimizer": label, **interval(a["values"]), "runs": a["runs"]}
        if label in tuned:
            doc["tuning"] = tuned[label]
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
                better.append([a["optimizer"], b["optimizer"]])
    paired = []
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            common = sorted(set(by_seed[a]) & set(by_seed[b]))
            d = [by_seed[a][s] - by_seed[b][s] for s in common]
            iv = interval(d)
            doc = {"a": a, "b": b, **iv}
            if iv["ci95"]:
                lo, hi = iv["ci95"]
                doc["significant"] = bool(lo > 0 or hi < 0)
                if doc["significant"]:
                    a_wins = (hi < 0) if low else (lo > 0)
                    doc["better"] = a if a_wins else b
            paired.append(doc)
    total = len(kids)
    done = sum(v for k, v in counts.items() if k in ("succeeded", "failed", "diverged",
                                                     "cancelled"))
    notes = []
    for a in out_arms:
        if a.get("excluded"):
            ex = ", ".join(f"{v} {k}" for k, v in a["excluded"].items())
            notes.append(f"{a['optimizer']}: statistics over {a['n']} runs; excluded {ex}")
        if tune_bad.get(a["optimizer"]):  # tuning runs are never pooled, but say what failed
            ex = ", ".join(f"{v} {k}" for k, v in tune_bad[a["optimizer"]].items())
            notes.append(f"{a['optimizer']}: tuning runs left out of the grid: {ex}")
        if a.get("tuning") and a["tuning"].get("chosen") is None:
            notes.append(f"{a['optimizer']}: no grid setting finished tuning; no final runs")
    rep: dict[str, Any] = {
        "id": parent.id, "status": JobStatus(parent.status).value, "metric": metric,
        "lower_is_better": low, "arms": out_arms, "better": better, "paired": paired,
        "children": dict(counts), "notes": notes,
        "partial": (f"{total - done} of {total} runs not finished" if done < total else None),
    }
    return rep


def mean_curves(parent_id: str, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]]:
    """Per arm: (steps, mean, half-width of the 95% band) of a metric's curve over seeds."""
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
        if cspec.get("_phase") == "tune":
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
            half = stats.t.ppf(0.975, len(vs) - 1) * se
        else:
            half = np.zeros_like(mean)
        out[label] = (steps_of[label], mean, half)
    return out
