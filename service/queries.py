"""Read-side queries for the CLI: job listings, status and result documents (SPEC §6)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from .db import session_scope
from .errors import AmbiguousJob, JobNotFound, NotFound
from .jobs import to_utc
from .models import Artifact, Job, JobStatus, Metric, Result


def resolve(s: sa.orm.Session, job_id: str) -> Job:
    """A job by full id or by a unique prefix of at least 4 characters (like git)."""
    job = s.get(Job, job_id)
    if job is not None:
        return job
    if len(job_id) >= 4 and all(c in "0123456789abcdef" for c in job_id.lower()):
        rows = s.execute(sa.select(Job).where(Job.id.like(job_id.lower() + "%")).limit(2)
                         ).scalars().all()
        if len(rows) == 1:
            return rows[0]
        if len(rows) > 1:
            raise AmbiguousJob(f"job id prefix {job_id!r} matches several jobs")
    raise JobNotFound(job_id)


def resolve_id(job_id: str, url: str | None = None) -> str:
    with session_scope(url) as s:
        return resolve(s, job_id).id


def _iso(dt: Any) -> str | None:
    dt = to_utc(dt)
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def list_jobs(status: str | None = None, kind: str | None = None, limit: int = 50,
              parent: str | None = None, url: str | None = None) -> list[dict[str, Any]]:
    """Newest first: ``{id, kind, status, name, parent, created_at}``."""
    with session_scope(url) as s:
        q = sa.select(Job.id, Job.kind, Job.status, Job.name, Job.parent_id, Job.created_at)
        if status:
            q = q.where(Job.status == JobStatus(status))
        if kind:
            q = q.where(Job.kind == kind)
        if parent:
            q = q.where(Job.parent_id == resolve(s, parent).id)
        rows = s.execute(q.order_by(Job.created_at.desc(), Job.id).limit(limit)).all()
    return [{"id": r.id, "kind": r.kind, "status": JobStatus(r.status).value, "name": r.name,
             "parent": r.parent_id, "created_at": _iso(r.created_at)} for r in rows]


def _document(job: Job, res: Result | None) -> dict[str, Any]:
    spec = json.loads(job.spec)
    return {
        "id": job.id, "kind": job.kind, "status": JobStatus(job.status).value,
        "name": job.name, "parent": job.parent_id, "seed": job.seed,
        "optimizer": ({"name": "smo"} if spec.get("model", {}).get("kind") == "kernel_svm"
                      else _optimizer_summary(json.loads(job.optimizer))),
        "arm": spec.get("_arm"),
        "device": job.device, "worker": job.worker, "attempts": job.attempts,
        "params": res.params if res else None,
        "final": json.loads(res.final) if res else None,
        "timing": json.loads(res.timing) if res else _timing_so_far(job),
        "extra": json.loads(res.extra) if res and res.extra not in (None, "{}") else None,
        "error": job.error,
        "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
    }


def _optimizer_summary(opt: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in opt.items() if v is not None}


def _timing_so_far(job: Job) -> dict[str, Any] | None:
    created, started = to_utc(job.created_at), to_utc(job.started_at)
    if started is None:
        return None
    return {"queued_s": round((started - created).total_seconds(), 6), "run_s": None,
            "samples_per_s": None}


def _single(s: sa.orm.Session, job: Job) -> dict[str, Any]:
    """One job's document, without the keys that only some jobs have when this has none."""
    doc = _document(job, s.get(Result, job.id))
    for key in ("extra", "arm"):
        if doc[key] is None:
            doc.pop(key)
    return doc


def result(job_id: str, url: str | None = None) -> dict[str, Any]:
    """The SPEC §6 result document."""
    with session_scope(url) as s:
        return _single(s, resolve(s, job_id))


def status(job_id: str, url: str | None = None) -> dict[str, Any]:
    """The result document plus ``progress`` (a comparison: children counted by status)."""
    return statuses([job_id], url)[0]


def statuses(job_ids: Sequence[str], url: str | None = None) -> list[dict[str, Any]]:
    """:func:`status` of each id, in order, read in one transaction (one consistent view).

    An unknown or ambiguous id raises before anything is returned.
    """
    with session_scope(url) as s:
        return [_status(s, resolve(s, job_id)) for job_id in job_ids]


def _status(s: sa.orm.Session, job: Job) -> dict[str, Any]:
    doc = _single(s, job)
    progress = json.loads(job.progress or "{}")
    if job.kind == "compare":
        counts = dict(s.execute(sa.select(Job.status, sa.func.count())
                                .where(Job.parent_id == job.id)
                                .group_by(Job.status)).all())
        children = {st.value: 0 for st in JobStatus}
        children.update({JobStatus(k).value: v for k, v in counts.items()})
        kept = {k: progress[k] for k in ("seeds", "shapes") if k in progress}
        searches = _search_progress(s, job.id, progress.get("search", {}))
        progress = {"children": children, "total": sum(children.values()), **kept}
        if searches:
            progress["search"] = searches
    doc["progress"] = progress
    doc["traceback"] = job.traceback
    doc["heartbeat_at"] = _iso(job.heartbeat_at)
    return doc


def _search_progress(s: sa.orm.Session, parent_id: str, state: dict[str, Any]
                     ) -> dict[str, dict[str, Any]]:
    """Per searched arm: trials, done (ended at their last rung: pruned or at the top),
    pruned, running, queued, the rung being decided (epochs) and the chosen point."""
    if not state:
        return {}
    rows = s.execute(sa.select(Job.spec, Job.status).where(Job.parent_id == parent_id)).all()
    out: dict[str, dict[str, Any]] = {}
    for label, st in state.items():
        out[label] = {"trials": st["trials"], "done": 0, "pruned": st["pruned"], "running": 0,
                      "queued": 0, "rung_epochs": None if st["done"] else
                      st["rungs"][st["rung"]], "chosen": st["chosen"]}
    for r in rows:
        spec = json.loads(r.spec)
        label = spec.get("_arm")
        if spec.get("_phase") != "search" or label not in out:
            continue
        status = JobStatus(r.status)
        alive = not state[label]["done"] and spec["_trial"] in state[label]["alive"]
        if status is JobStatus.RUNNING:
            out[label]["running"] += 1
        elif status is JobStatus.QUEUED:
            out[label]["queued"] += 1
        elif not alive:
            out[label]["done"] += 1
    return out


def curves(job_id: str, metrics: list[str] | tuple[str, ...] = (), url: str | None = None
           ) -> dict[str, Any]:
    """``{id, metrics: {name: {step, epoch, time_s, value}}}`` in step order."""
    with session_scope(url) as s:
        job = resolve(s, job_id)
        q = sa.select(Metric.name, Metric.step, Metric.epoch, Metric.time_s, Metric.value,
                      Metric.special).where(Metric.job_id == job.id)
        if metrics:
            q = q.where(Metric.name.in_(list(metrics)))
        rows = s.execute(q.order_by(Metric.name, Metric.step)).all()
        jid = job.id
    out: dict[str, dict[str, list]] = {}
    for r in rows:
        m = out.setdefault(r.name, {"step": [], "epoch": [], "time_s": [], "value": []})
        m["step"].append(r.step)
        m["epoch"].append(r.epoch)
        m["time_s"].append(r.time_s)
        m["value"].append(_value(r.value, r.special))
    return {"id": jid, "metrics": out}


def _value(value: float | None, special: str | None) -> float | None:
    if special == "nan":
        return math.nan
    if special == "inf":
        return math.inf
    if special == "-inf":
        return -math.inf
    return value


def artifact(job_id: str, name: str = "model", url: str | None = None) -> bytes:
    with session_scope(url) as s:
        job = resolve(s, job_id)
        data = s.execute(sa.select(Artifact.data).where(Artifact.job_id == job.id,
                                                        Artifact.name == name)).scalar()
        if data is None:
            state = JobStatus(job.status).value
            raise NotFound(f"job {job.id} has no {name} parameters (it is {state})")
        return bytes(data)


def children(job_id: str, url: str | None = None) -> list[dict[str, Any]]:
    """Every child of a comparison with its result document."""
    with session_scope(url) as s:
        job = resolve(s, job_id)
        rows = s.execute(sa.select(Job, Result).outerjoin(Result, Result.job_id == Job.id)
                         .where(Job.parent_id == job.id)
                         .order_by(Job.created_at, Job.id)).all()
        return [_document(kid, res) for kid, res in rows]
