"""A suite's report (docs/suites.md): time to target, performance profiles, win probability.

Everything is recomputed from what the suite's comparisons stored — their runs' results,
their curves of each workload's metric, and their searches' trial values — so the report
is the same whenever it is read, and a test recomputes it independently.

**Time to target** of a run: the first logged point of the workload's metric at or past
the target, in optimizer steps, in samples (steps × batch size, each epoch's last batch
counted at its true size: ``⌊s/spe⌋·n + (s mod spe)·b`` with ``spe = ⌈n/b⌉`` steps per epoch
of n training rows), and in training seconds (the curve's ``time_s``; a stacked run shares
its wall clock with its stack). A run that never reaches it — or failed, or diverged —
counts as infinite. Per arm, the median over its evaluation seeds (infinite when at least
half never reach it) and how many reached it.

**Performance profiles** (Dolan & Moré 2002): with t(a, w) an arm's median in the suite's
``budget`` unit, r(a, w) = t(a, w) / min over arms of t(·, w) (∞ where a never reached the
target; where the best time is 0 — the target met before training — r is 1 for the arms at
0 and ∞ for the others), and ρ_a(τ) = the fraction of the scored workloads with r ≤ τ,
on τ = 1, 1.05, …, r_max. **Score** (AlgoPerf): ∫₁^r_max ρ_a(τ) dτ / (r_max − 1), computed
exactly for the step function ρ_a: the mean over workloads of (r_max − r)/(r_max − 1) for
r ≤ r_max, else 0. A workload is scored when its comparison succeeded and its target is
known; a failed one is listed under ``failed`` and left out (it loses no other).

**Win probability** (Sivaprasad et al. 2020): for k = 1 … trials, the probability that an
arm's best of k trials, drawn without replacement from the trials its search ran on a
workload (their validation metric), beats the best of k of every other arm, averaged over
the workloads. Exact (``win_probability``): the best of k of n sorted values is the i-th
worst with probability C(i−1, k−1)/C(n, k); arms draw independently; ties split the win
evenly; a failed trial ranks last, and a draw of failures only never wins. Without a
search each arm has one setting: its mean final metric is its single trial (k = 1).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from gradq.service.errors import UsageError
from gradq.service.experiments.report import interval
from gradq.service.spec import lower_is_better
from gradq.service.store.db import session_scope
from gradq.service.store.encoding import json_safe
from gradq.service.store.models import Job, JobStatus, Metric, Result
from gradq.service.store.queries import resolve

INF = math.inf
TAU_STEP = 0.05
EVAL_PHASES = (None, "final")


# --------------------------------------------------------------------- measures
def reached(curve: Sequence[tuple[int, float, float]], target: float, low: bool
            ) -> tuple[int, float] | None:
    """(step, time_s) of the first point of ``curve`` [(step, time_s, value)] at or past
    ``target``, or None."""
    for step, time_s, value in curve:
        if value == value and (value <= target if low else value >= target):
            return int(step), float(time_s)
    return None


def samples_at(step: int, batch: int | str, n_train: int | None) -> int | None:
    """Training samples seen after ``step`` optimizer steps (None without n_train)."""
    if n_train is None:
        return None
    b = n_train if batch == "full" else min(int(batch), n_train)
    per_epoch = math.ceil(n_train / b)
    return (step // per_epoch) * n_train + (step % per_epoch) * b


def median(values: Sequence[float]) -> float:
    """The median, infinities included (None counts as ∞)."""
    x = sorted(INF if v is None else float(v) for v in values)
    if not x:
        return INF
    m = len(x) // 2
    return x[m] if len(x) % 2 else (x[m - 1] + x[m]) / 2


def ratios(times: dict[str, float]) -> dict[str, float]:
    """r(a) = t(a) / min t over the arms of one workload (∞ for an arm that never got
    there; with a best time of 0, 1 for the arms at 0 and ∞ for the others)."""
    finite = [t for t in times.values() if math.isfinite(t)]
    if not finite:
        return {a: INF for a in times}
    best = min(finite)
    if best <= 0:
        return {a: 1.0 if t <= 0 else INF for a, t in times.items()}
    return {a: t / best if math.isfinite(t) else INF for a, t in times.items()}


def tau_grid(r_max: float) -> list[float]:
    """τ = 1, 1.05, …, r_max."""
    n = int(round((r_max - 1) / TAU_STEP)) + 1
    return [float(round(t, 10)) for t in np.linspace(1.0, r_max, max(2, n))]


def profiles(r: dict[str, dict[str, float]], r_max: float
             ) -> tuple[list[float], dict[str, list[float]], dict[str, float]]:
    """ρ_a(τ) on the τ grid and the integrated score per arm, from r[workload][arm]."""
    taus = tau_grid(r_max)
    arms = list(dict.fromkeys(a for per in r.values() for a in per))
    w = len(r)
    rho: dict[str, list[float]] = {}
    score: dict[str, float] = {}
    for a in arms:
        ra = [per.get(a, INF) for per in r.values()]
        rho[a] = [sum(1 for x in ra if x <= t + 1e-12) / w if w else 0.0 for t in taus]
        score[a] = (sum((r_max - max(1.0, x)) / (r_max - 1) for x in ra if x <= r_max) / w
                    if w else 0.0)
    return taus, rho, score


def _best_of_k(scores: Sequence[float], k: int) -> dict[float, float]:
    """{level: probability} of the best (highest) of k drawn without replacement (of all
    of them where k exceeds their number: an arm with one fixed setting needs no budget)."""
    x = sorted(scores)
    k = min(k, len(x))
    total = math.comb(len(x), k)
    out: dict[float, float] = defaultdict(float)
    for i, v in enumerate(x, start=1):
        if i >= k:
            out[v] += math.comb(i - 1, k - 1) / total
    return out


def win_probability(values: dict[str, Sequence[float | None]], k: int, low: bool
                    ) -> dict[str, float]:
    """P(arm's best of k trials is the best of all arms' best of k) on one workload."""
    def score(v: float | None) -> float:
        if v is None or not math.isfinite(v):
            return -INF
        return -v if low else v

    dists = {a: _best_of_k([score(v) for v in vs], k) for a, vs in values.items()}
    out = {}
    for a, da in dists.items():
        p = 0.0
        for level, pa in da.items():
            if level == -INF:
                continue  # a draw of failures only never wins
            poly = np.array([1.0])  # P(T = t ties) with every other arm at or below level
            for b, db in dists.items():
                if b == a:
                    continue
                below = sum(q for lv, q in db.items() if lv < level)
                equal = db.get(level, 0.0)
                poly = np.convolve(poly, [below, equal])
            p += pa * float(sum(c / (1 + t) for t, c in enumerate(poly)))
        out[a] = p
    return out


# ----------------------------------------------------------------- from storage
def _load(s: Any, suite: Job) -> tuple[list[Job], list[Job], dict[str, Result],
                                         dict[tuple[str, str], list[tuple[int, float, float]]]]:
    comps = list(s.execute(sa.select(Job).where(Job.parent_id == suite.id)
                           .order_by(Job.created_at, Job.id)).scalars())
    ids = [c.id for c in comps]
    runs = list(s.execute(sa.select(Job).where(Job.parent_id.in_(ids))
                          .order_by(Job.created_at, Job.id)).scalars()) if ids else []
    results = {r.job_id: r for r in s.execute(
        sa.select(Result).join(Job, Job.id == Result.job_id)
        .where(Job.parent_id.in_(ids))).scalars()} if ids else {}
    curves: dict[tuple[str, str], list[tuple[int, float, float]]] = defaultdict(list)
    if ids:
        rows = s.execute(sa.select(Metric.job_id, Metric.name, Metric.step, Metric.time_s,
                                   Metric.value)
                         .join(Job, Job.id == Metric.job_id)
                         .where(Job.parent_id.in_(ids),
                                Metric.name.in_(["val_loss", "val_accuracy", "test_loss",
                                                 "test_accuracy"]))
                         .order_by(Metric.job_id, Metric.name, Metric.step)).all()
        for r in rows:
            curves[(r.job_id, r.name)].append(
                (r.step, r.time_s, math.nan if r.value is None else r.value))
    return comps, runs, results, curves


def _arm_order(spec: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, int] = {}
    for r in runs:
        seen.setdefault(r["arm"], r["index"])
    from gradq.service.experiments.compare import plan_arms

    for arm in plan_arms(spec):
        seen.setdefault(arm.label, arm.index)
    return sorted(seen, key=lambda a: seen[a])


def _final_values(runs: list[dict[str, Any]], metric: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        v = (r["final"] or {}).get(metric)
        if r["status"] == "succeeded" and v is not None and math.isfinite(v):
            out[r["arm"]].append(float(v))
    return out


def _auto_target(runs: list[dict[str, Any]], metric: str) -> tuple[float | None, str | None]:
    """The reference comparison's best arm (by mean final metric) and its median final
    metric over seeds (AlgoPerf's way of setting targets)."""
    low = lower_is_better(metric)
    finals = _final_values(runs, metric)
    if not finals:
        return None, None
    best = (min if low else max)(finals, key=lambda a: float(np.mean(finals[a])))
    return float(np.median(finals[best])), best


def build_suite_report(suite_id: str) -> dict[str, Any]:
    """The docs/suites.md report of a suite, recomputed from its comparisons' stored runs."""
    with session_scope() as s:
        suite = resolve(s, suite_id)
        if suite.kind != "suite":
            raise UsageError(f"job {suite.id} is a {suite.kind} job, not a suite")
        spec = json.loads(suite.spec)
        comps, runs, results, curves = _load(s, suite)
        status = JobStatus(suite.status).value
        comp_docs = [(c.id, JobStatus(c.status).value, json.loads(c.spec),
                      json.loads(c.progress or "{}")) for c in comps]
        run_docs = []
        for r in runs:
            rs = json.loads(r.spec)
            res = results.get(r.id)
            run_docs.append({"id": r.id, "parent": r.parent_id, "seed": r.seed,
                             "status": JobStatus(r.status).value, "spec": rs,
                             "arm": rs.get("_arm") or rs["optimizer"]["name"],
                             "index": rs.get("_arm_index", 0), "phase": rs.get("_phase"),
                             "final": json.loads(res.final) if res else None})
    return json_safe(_report(suite.id, status, spec, comp_docs, run_docs, curves))


def _report(suite_id: str, status: str, spec: dict[str, Any], comps: list[tuple],
            runs: list[dict[str, Any]], curves: dict) -> dict[str, Any]:
    cfg = spec["suite"]
    budget, r_max = cfg["budget"], float(cfg["r_max"])
    by_parent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by_parent[r["parent"]].append(r)
    roles = {(c[2].get("_workload"), c[2].get("_suite_role")): c for c in comps}
    workloads, failed, pending = [], [], []
    times: dict[str, dict[str, float]] = {}
    wins: list[tuple[dict[str, list], bool]] = []
    for w in cfg["_workloads"]:
        name, metric = w["name"], w["metric"]
        low = lower_is_better(metric)
        comp = roles.get((name, "workload"))
        doc: dict[str, Any] = {"name": name, "comparison": comp[0] if comp else None,
                               "status": comp[1] if comp else None, "metric": metric,
                               "lower_is_better": low, "target": w["target"],
                               "target_set_by": w["target_set_by"]}
        if w["target_set_by"] == "reference":
            ref = roles.get((name, "reference"))
            doc["reference"] = {"comparison": ref[0] if ref else None,
                                "status": ref[1] if ref else None, "arm": None}
            if ref is not None:
                target, arm = _auto_target(by_parent[ref[0]], metric)
                doc["target"], doc["reference"]["arm"] = target, arm
        if comp is None:
            doc["arms"] = []
            failed.append(name)
            workloads.append(doc)
            continue
        cid, cstatus, cspec, cprogress = comp
        mine = [r for r in by_parent[cid] if r["phase"] in EVAL_PHASES]
        order = _arm_order(cspec, by_parent[cid])
        finals = _final_values(mine, metric)
        target = doc["target"]
        arms_out = []
        medians: dict[str, float] = {}
        for label in order:
            seeds = []
            for r in sorted((r for r in mine if r["arm"] == label), key=lambda r: r["seed"]):
                if r["status"] in ("queued", "running", "cancelled"):
                    continue  # not a measurement (failed and diverged runs are: never)
                hit = None
                if target is not None and r["status"] == "succeeded":
                    hit = reached(curves.get((r["id"], metric), []), target, low)
                batch = r["spec"]["training"]["batch_size"]
                seeds.append({"seed": r["seed"], "run": r["id"], "status": r["status"],
                              "steps": hit[0] if hit else None,
                              "samples": samples_at(hit[0], batch, cspec.get("_n_train"))
                              if hit else None,
                              "seconds": hit[1] if hit else None})
            med = {u: median([x[u] for x in seeds]) for u in ("steps", "samples", "seconds")}
            for u in ("steps", "samples"):  # counts stay whole where the median is one
                if math.isfinite(med[u]) and float(med[u]).is_integer():
                    med[u] = int(med[u])
            iv = interval(finals.get(label, []))
            arms_out.append({"label": label, "time_to_target": med,
                             "reached": sum(1 for x in seeds if x["steps"] is not None),
                             "n": len(seeds),
                             "final": {"n": iv["n"], "mean": iv["mean"], "ci95": iv["ci95"]},
                             "seeds": seeds})
            medians[label] = med[budget]
        doc["arms"] = arms_out
        if cstatus in ("failed", "cancelled", "diverged"):
            failed.append(name)
        elif cstatus != "succeeded":
            pending.append(name)
        elif target is not None:
            times[name] = medians
        wins.append(_trials(cprogress, order, mine, metric))
        workloads.append(doc)
    r = {name: ratios(t) for name, t in times.items()}
    for doc in workloads:
        if doc["name"] in r:
            for a in doc["arms"]:
                a["ratio"] = r[doc["name"]].get(a["label"])
    taus, rho, score = profiles(r, r_max)
    arms = list(dict.fromkeys(a["label"] for d in workloads for a in d["arms"]))
    for a in arms:  # an arm of no scored workload: ρ = 0
        rho.setdefault(a, [0.0] * len(taus))
        score.setdefault(a, 0.0)
    out: dict[str, Any] = {
        "id": suite_id, "kind": "suite", "status": status, "name": spec.get("name"),
        "budget": budget, "r_max": r_max, "workloads": workloads,
        "scored": list(times), "failed": failed,
        "profiles": {"tau": taus, "rho": rho}, "score": score,
        "win_probability": _win_doc(wins, arms),
    }
    if pending:
        out["partial"] = f"{len(pending)} of {len(workloads)} workloads not finished"
    return out


def _trials(progress: dict[str, Any], order: list[str], runs: list[dict[str, Any]],
            metric: str) -> tuple[dict[str, list], bool]:
    """Per arm, the values its search's trials reached on the tuning metric (the
    validation counterpart of ``metric``), and whether lower is better. An arm without a
    search has one setting: its mean over the evaluation seeds is its one trial."""
    from gradq.service.experiments.compare import tuning_metric

    search = progress.get("search") or {}
    tune = tuning_metric(metric)
    finals = _final_values(runs, tune)
    out = {}
    for a in order:
        if a in search:
            out[a] = list(search[a]["values"])
        else:
            out[a] = [float(np.mean(finals[a]))] if finals.get(a) else [None]
    return out, lower_is_better(tune)


def _win_doc(wins: list[tuple[dict[str, list], bool]], arms: list[str]) -> dict[str, Any]:
    """Win probability against k, averaged over the workloads that have trials."""
    wins = [(v, low) for v, low in wins if v]
    if not wins:
        return {"k": [], **{a: [] for a in arms}}
    kmax = max(len(vs) for v, _ in wins for vs in v.values())
    ks = list(range(1, kmax + 1))
    out: dict[str, Any] = {"k": ks}
    for a in arms:
        out[a] = []
    for k in ks:
        per = [win_probability(v, k, low) for v, low in wins]
        for a in arms:
            out[a].append(float(np.mean([p.get(a, 0.0) for p in per])))
    return out
