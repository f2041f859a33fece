"""Read-side queries for the CLI: job listings, status and result documents (docs/results.md)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from gradq.service.errors import AmbiguousJob, BadArgument, JobNotFound, NotFound
from gradq.service.settings import redact
from gradq.service.status import FINISHED, JobStatus
from gradq.service.store import downsample
from gradq.service.store.db import session_scope
from gradq.service.store.encoding import to_utc
from gradq.service.store.models import Artifact, Job, Metric, Result


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


SORTS = {"created": (Job.created_at, True), "-created": (Job.created_at, False),
         "name": (Job.name, False), "-name": (Job.name, True),
         "status": (Job.status, False), "kind": (Job.kind, False)}
"""``sort`` keys of :func:`list_jobs`: column and whether it runs descending (a leading
``-`` flips it; ``created`` is newest first)."""

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since WHEN``: an ISO date or time (UTC unless it says otherwise), or an age such as
    ``30m``, ``2h``, ``7d``; ValueError with one line otherwise."""
    t = text.strip()
    m = _RELATIVE.match(t.lower())
    now = now or datetime.now(timezone.utc)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])
    try:
        when = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise BadArgument(f"{text!r} is neither an ISO date/time (2026-01-31, "
                         "2026-01-31T12:00) nor an age (30m, 2h, 7d)") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _job_filter(s: sa.orm.Session, q: sa.Select, status: str | None, kind: str | None,
                parent: str | None, name: str | None, since: datetime | None,
                id_prefix: str | None) -> sa.Select:
    """The WHERE clause shared by :func:`list_jobs` and :func:`count_jobs`."""
    if status:
        if status not in {st.value for st in JobStatus}:
            raise BadArgument(f"status: {status!r} is not one of "
                              f"{', '.join(st.value for st in JobStatus)}")
        q = q.where(Job.status == JobStatus(status))
    if kind:
        q = q.where(Job.kind == kind)
    if parent:
        q = q.where(Job.parent_id == resolve(s, parent).id)
    if name:
        pattern = "%" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        q = q.where(Job.name.ilike(pattern, escape="\\"))
    if since is not None:
        q = q.where(Job.created_at >= since.astimezone(timezone.utc))
    if id_prefix:
        prefix = id_prefix.strip().lower()
        if not all(c in "0123456789abcdef" for c in prefix):
            raise BadArgument(f"id {id_prefix!r}: a job id is hexadecimal")
        q = q.where(Job.id.like(prefix + "%"))
    return q


def list_jobs(status: str | None = None, kind: str | None = None, limit: int = 50,
              parent: str | None = None, url: str | None = None, *, offset: int = 0,
              name: str | None = None, since: datetime | None = None,
              sort: str = "created", id_prefix: str | None = None) -> list[dict[str, Any]]:
    """``{id, kind, status, name, parent, created_at}``, newest first unless ``sort`` (a key
    of :data:`SORTS`) says otherwise; ``name`` matches a substring, case-insensitively."""
    if sort not in SORTS:
        raise BadArgument(f"sort: {sort!r} is not one of {', '.join(SORTS)}")
    column, desc = SORTS[sort]
    with session_scope(url) as s:
        q = sa.select(Job.id, Job.kind, Job.status, Job.name, Job.parent_id, Job.created_at)
        q = _job_filter(s, q, status, kind, parent, name, since, id_prefix)
        order = [column.desc() if desc else column.asc()]
        if column is not Job.created_at:
            order.append(Job.created_at.desc())
        rows = s.execute(q.order_by(*order, Job.id).offset(offset).limit(limit)).all()
    return [{"id": r.id, "kind": r.kind, "status": JobStatus(r.status).value, "name": r.name,
             "parent": r.parent_id, "created_at": _iso(r.created_at)} for r in rows]


def count_jobs(status: str | None = None, kind: str | None = None,
               parent: str | None = None, url: str | None = None, *,
               name: str | None = None, since: datetime | None = None,
               id_prefix: str | None = None) -> int:
    """How many jobs :func:`list_jobs` pages through with the same filters."""
    with session_scope(url) as s:
        q = _job_filter(s, sa.select(sa.func.count()).select_from(Job), status, kind,
                        parent, name, since, id_prefix)
        return int(s.execute(q).scalar_one())


def progress_of(job_ids: list[str], url: str | None = None) -> dict[str, float | None]:
    """Fraction done (0–1) of each running or queued job among ``job_ids``: a train job
    by steps (or epochs), a comparison by finished children. Finished jobs are left out."""
    out: dict[str, float | None] = {}
    if not job_ids:
        return out
    live = (JobStatus.RUNNING, JobStatus.QUEUED)
    with session_scope(url) as s:
        rows = s.execute(sa.select(Job.id, Job.kind, Job.progress)
                         .where(Job.id.in_(job_ids), Job.status.in_(live))).all()
        parents = [r.id for r in rows if r.kind == "compare"]
        suites = [r.id for r in rows if r.kind == "suite"]
        for sid in suites:  # a suite by the finished runs of its comparisons
            kids = sa.select(Job.id).where(Job.parent_id == sid).scalar_subquery()
            total, finished = s.execute(
                sa.select(sa.func.count(),
                          sa.func.sum(sa.case((Job.status.in_(FINISHED), 1), else_=0)))
                .where(Job.parent_id.in_(kids))).one()
            out[sid] = int(finished or 0) / total if total else None
        counts: dict[str, list[int]] = {p: [0, 0] for p in parents}
        if parents:
            done = sa.func.sum(sa.case((Job.status.in_(FINISHED), 1), else_=0))
            for pid, total, finished in s.execute(
                    sa.select(Job.parent_id, sa.func.count(), done)
                    .where(Job.parent_id.in_(parents)).group_by(Job.parent_id)).all():
                counts[pid] = [int(total), int(finished or 0)]
    for r in rows:
        if r.kind == "suite":
            continue
        if r.kind == "compare":
            total, finished = counts[r.id]
            out[r.id] = finished / total if total else None
            continue
        p = json.loads(r.progress or "{}")
        if p.get("steps"):
            out[r.id] = min(1.0, p.get("step", 0) / p["steps"])
        elif p.get("epochs"):
            out[r.id] = min(1.0, p.get("epoch", 0) / p["epochs"])
        else:
            out[r.id] = None
    return out


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
        "error": redact(job.error) if job.error else job.error,  # a URL's password never shows
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
    """The docs/results.md result document."""
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
    if job.kind == "suite":  # comparisons (workloads) and their runs, counted by status
        kids = sa.select(Job.id).where(Job.parent_id == job.id).scalar_subquery()
        progress = {"workloads": progress.get("workloads", [])}
        for key, where in (("comparisons", Job.parent_id == job.id),
                           ("children", Job.parent_id.in_(kids))):
            counts = {st.value: 0 for st in JobStatus}
            counts.update({JobStatus(k).value: v for k, v in s.execute(
                sa.select(Job.status, sa.func.count()).where(where)
                .group_by(Job.status)).all()})
            progress[key] = counts
        progress["total"] = sum(progress["children"].values())
    doc["progress"] = progress
    doc["traceback"] = redact(job.traceback) if job.traceback else job.traceback
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


def curves(job_id: str, metrics: list[str] | tuple[str, ...] = (), url: str | None = None,
           *, after_step: int | None = None, max_points: int | None = None
           ) -> dict[str, Any]:
    """``{id, metrics: {name: {step, epoch, time_s, value}}}`` in step order.

    ``after_step`` keeps only later points (a live page asks for what is new).
    ``max_points`` caps each series: a longer one is cut into ``max_points // 4`` buckets of
    consecutive steps, and each bucket keeps its first, last, lowest and highest point, so
    spikes and the ends survive. The buckets are reduced in SQL; only the kept rows are read.
    """
    with session_scope(url) as s:
        job = resolve(s, job_id)
        where = [Metric.job_id == job.id]
        if metrics:
            where.append(Metric.name.in_(list(metrics)))
        if after_step is not None:
            where.append(Metric.step > after_step)
        cols = (Metric.name, Metric.step, Metric.epoch, Metric.time_s, Metric.value,
                Metric.special)
        if max_points is None:
            rows = s.execute(sa.select(*cols).where(*where)
                             .order_by(Metric.name, Metric.step)).all()
        else:
            if max_points < 4:
                raise BadArgument(f"max_points: {max_points} is below the minimum 4")
            rows = []
            for name in downsample.metric_names(s, job.id, metrics):
                named = [*where, Metric.name == name]
                capped = sa.select(sa.literal(1)).where(*named).limit(max_points + 1).subquery()
                if s.execute(sa.select(sa.func.count()).select_from(capped)).scalar_one() \
                        <= max_points:
                    rows += s.execute(sa.select(*cols).where(*named)
                                      .order_by(Metric.step)).all()
                    continue
                first = s.execute(sa.select(sa.func.min(Metric.step)).where(*named)).scalar()
                last = s.execute(sa.select(sa.func.max(Metric.step)).where(*named)).scalar()
                if s.get_bind().dialect.name == "sqlite":
                    rows += downsample.sqlite_buckets(s, job.id, name, first, last, max_points // 4)
                    continue
                named.append(Metric.step.in_(
                    downsample.kept_steps(s, named, first, last, max_points // 4)))
                rows += s.execute(sa.select(*cols).where(*named).order_by(Metric.step)).all()
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


def spec(job_id: str, url: str | None = None) -> dict[str, Any]:
    """The normalised spec a job was stored with (labels such as ``_arm`` included)."""
    with session_scope(url) as s:
        return json.loads(resolve(s, job_id).spec)


def artifact_names(job_id: str, url: str | None = None) -> list[str]:
    """Names of a job's stored artifacts (``model``, ``initial``), without reading them."""
    with session_scope(url) as s:
        job = resolve(s, job_id)
        return list(s.execute(sa.select(Artifact.name).where(Artifact.job_id == job.id)
                              .order_by(Artifact.name)).scalars())


def label(name: str | None, job_id: str, arm: str | None, seed: int | None) -> str:
    """How a job is named in overlaid curves: ``name · arm · seed N`` (the id if unnamed)."""
    parts = [name or job_id[:8]]
    if arm:
        parts.append(str(arm))
    if seed is not None:
        parts.append(f"seed {seed}")
    return " · ".join(parts)


def labels(job_ids: list[str] | tuple[str, ...], url: str | None = None) -> dict[str, str]:
    """:func:`label` of each job (full ids or unique prefixes), keyed by full id; two jobs
    that would read the same get their short ids appended."""
    out: dict[str, str] = {}
    with session_scope(url) as s:
        for jid in job_ids:
            job = resolve(s, jid)
            arm = json.loads(job.spec).get("_arm")
            out[job.id] = label(job.name, job.id, arm, job.seed)
    seen: dict[str, int] = {}
    for v in out.values():
        seen[v] = seen.get(v, 0) + 1
    return {k: (f"{v} ({k[:8]})" if seen[v] > 1 else v) for k, v in out.items()}
