"""The HTML pages, the CSV of curves and the trained parameters, over the service's queries.

Templates are rendered by Jinja2 with autoescaping on: every string a user wrote (job
names, spec values, dataset names, error text) reaches the page as text. Charts are drawn
in the browser by ``static/app.js`` from the JSON API; the pages carry no inline script.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import yaml
from gradq.service.errors import UsageError
from gradq.service.present import fmt, interval
from gradq.service.settings import get_settings, redact
from gradq.service.status import LIVE as LIVE_STATUSES
from gradq.service.status import NAMES
from gradq.service.store import queries
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .api import BadQuery, error_status, int_param, since_param, str_param

PAGE_SIZE = 50
STATUSES = NAMES
LIVE = tuple(st.value for st in LIVE_STATUSES)

env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=True, undefined=jinja2.StrictUndefined,
                         trim_blocks=True, lstrip_blocks=True)


env.filters["fmt"] = fmt
env.filters["interval"] = interval
env.filters["redact"] = lambda s: redact(str(s)) if s is not None else ""
env.globals["database"] = lambda: redact(get_settings().database_url)
env.globals["live_statuses"] = " ".join(LIVE)  # app.js polls while a job is in one


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(env.get_template(name).render(**context), status,
                        headers={"cache-control": "no-store"})


def error_page(exc: Exception) -> HTMLResponse:
    status = error_status(exc)
    if status is None:
        raise exc
    message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return render("error.html", status, title="error", message=redact(message))


def jobs_page(request: Request) -> HTMLResponse:
    """``/``: jobs with filters, sorting, id-prefix lookup and server-side pages."""
    try:
        f = {k: str_param(request, k) for k in ("status", "kind", "name", "parent", "id",
                                                  "since")}
        sort = str_param(request, "sort") or "created"
        page = int_param(request, "page", 1, 1) or 1
        since = since_param(request)
        filters = dict(status=f["status"], kind=f["kind"], parent=f["parent"], name=f["name"],
                       since=since, id_prefix=f["id"])
        total = queries.count_jobs(**filters)
        rows = queries.list_jobs(limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, sort=sort,
                                 **filters)
        progress = queries.progress_of([r["id"] for r in rows if r["status"] in LIVE])
    except Exception as exc:  # noqa: BLE001 - a bad filter is a 400 page
        return error_page(exc)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    kept = {k: v for k, v in {**f, "sort": sort if sort != "created" else None}.items() if v}

    def link(**changes: Any) -> str:
        q = {**kept, **{k: v for k, v in changes.items()}}
        return "/?" + urlencode({k: v for k, v in q.items() if v not in (None, "", 1)})

    return render("jobs.html", title="jobs", rows=rows, progress=progress, total=total,
                  page=page, pages=pages, f=f, sort=sort, sorts=list(queries.SORTS),
                  statuses=STATUSES, link=link,
                  live=any(r["status"] in LIVE for r in rows))


def job_page(request: Request) -> HTMLResponse:
    """``/jobs/<id>``: a job, its curves; a comparison's whole report and its children."""
    try:
        doc = queries.status(request.path_params["job"])
        spec = queries.spec(doc["id"])
        report = children = None
        report_error = None
        bagging = (doc.get("extra") or {}).get("bagging")
        if doc["kind"] == "compare" or bagging:
            from gradq.service.experiments.report import build_report

            try:
                report = build_report(doc["id"])
            except UsageError as exc:  # not a report's job; a bug is a 500
                report_error = str(exc)
        if doc["kind"] == "compare":
            children = queries.children(doc["id"])
        if doc["kind"] == "suite":  # docs/suites.md: each workload links to its comparison
            from gradq.service.experiments.suite_report import build_suite_report

            report = build_suite_report(doc["id"])
        artifacts = queries.artifact_names(doc["id"])
    except Exception as exc:  # noqa: BLE001
        return error_page(exc)
    spec_yaml = redact(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100))
    live = doc["status"] in LIVE
    return render("job.html", title=doc["name"] or doc["id"][:8], job=doc, spec=spec,
                  spec_yaml=spec_yaml, report=report, report_error=report_error,
                  children=children, has_model="model" in artifacts, live=live,
                  pairs=_pairs(report) if report and doc["kind"] != "suite" else [])


def _pairs(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's pairwise differences (``pairs``: diff, p, p_holm), every key present
    for the template (a pair over one seed has no interval or p). A pair that survives
    Holm names its better arm, from the sign of a − b and the metric's direction (the
    report's pairs carry no such key)."""
    low = report.get("lower_is_better", True)
    out = []
    for p in report.get("pairs") or []:
        diff = p.get("diff")
        better = None
        if p.get("significant") and diff:
            better = p.get("a") if (diff < 0) == low else p.get("b")
        out.append({"a": p.get("a"), "b": p.get("b"), "n": p.get("n"),
                    "diff": diff, "ci95": p.get("ci95"),
                    "p": p.get("p"), "p_holm": p.get("p_holm"),
                    "significant": p.get("significant"), "better": better})
    return out


def overlay_page(request: Request) -> HTMLResponse:
    """``/overlay?job=A&job=B``: the curves of several jobs, labelled by name, arm and seed."""
    ids = [j for j in request.query_params.getlist("job") if j]
    try:
        if not ids:
            raise BadQuery("pick at least one job to overlay (job=ID, repeatable)")
        labels = queries.labels(ids)
    except Exception as exc:  # noqa: BLE001
        return error_page(exc)
    return render("overlay.html", title="overlay", labels=labels)


def neutralise(cell: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (= + - @, tab, CR) gets a
    leading apostrophe; numbers stay numbers."""
    if isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + cell
    return cell


def curves_csv(request: Request) -> Response:
    """Every point of the curves of one job (``/jobs/<id>/curves.csv``) or of several
    (``/overlay.csv?job=A&job=B``), with each job's name."""
    ids = ([request.path_params["job"]] if "job" in request.path_params
           else request.query_params.getlist("job"))
    try:
        if not ids:
            raise BadQuery("job: give at least one")
        labels = queries.labels(ids)
        docs = [queries.curves(j) for j in ids]
        names = {j: queries.result(j)["name"] for j in labels}
    except Exception as exc:  # noqa: BLE001
        return error_page(exc)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["job", "name", "label", "metric", "step", "epoch", "time_s", "value"])
    for d in docs:
        for metric, m in sorted(d["metrics"].items()):
            for row in zip(m["step"], m["epoch"], m["time_s"], m["value"], strict=True):
                w.writerow([neutralise(c) for c in (d["id"], names[d["id"]], labels[d["id"]],
                                                    metric, *row)])
    filename = f"gradq-{docs[0]['id'][:8]}-curves.csv" if len(docs) == 1 else "gradq-overlay.csv"
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{filename}"'})


def params_npz(request: Request) -> Response:
    """The trained parameters of a job, by id (``gradq export``'s file)."""
    try:
        job_id = queries.resolve_id(request.path_params["job"])
        data = queries.artifact(job_id, "model")
    except Exception as exc:  # noqa: BLE001
        return error_page(exc)
    return Response(data, media_type="application/octet-stream",
                    headers={"content-disposition":
                             f'attachment; filename="gradq-{job_id[:8]}-model.npz"'})


ROUTES = [
    Route("/", jobs_page),
    Route("/jobs/{job}", job_page),
    Route("/jobs/{job}/curves.csv", curves_csv),
    Route("/jobs/{job}/model.npz", params_npz),
    Route("/overlay", overlay_page),
    Route("/overlay.csv", curves_csv),
]
