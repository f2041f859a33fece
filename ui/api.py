"""The JSON API under ``/api/``: the CLI's ``--json`` documents, from the same service calls.

``/api/jobs`` is ``gradq ls --json``, ``/api/jobs/<id>`` is ``status --json``,
``…/results`` is ``results --json``, ``…/curves`` is ``curves --json`` and ``…/report`` is
``report --json``; a test holds each equal to the CLI's output for the same job.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gradq.service.errors import JobNotFound, UsageError
from gradq.service.settings import redact
from gradq.service.store import queries
from gradq.service.store.db import SchemaError, ServiceUnavailable
from gradq.service.store.encoding import json_safe
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DEFAULT_MAX_POINTS = 2000  # per series; a browser draws this many without effort


class BadQuery(UsageError, ValueError):
    """A query parameter the API cannot use (HTTP 400, with the parameter's name)."""


def json_response(doc: Any, status: int = 200) -> Response:
    """The CLI's serialisation (NaN and ±inf as null, no NaN literals), compact."""
    body = json.dumps(json_safe(doc), allow_nan=False, separators=(",", ":"))
    return Response(body, status, media_type="application/json",
                    headers={"cache-control": "no-store"})


def error_status(exc: BaseException) -> int | None:
    """The HTTP status of a service error, or None for a bug (a plain KeyError or
    ValueError is one: it is raised again and answered 500, never passed off as bad input)."""
    if isinstance(exc, JobNotFound):
        return 404
    if isinstance(exc, UsageError):  # the service's own bad-input errors, and BadQuery
        return 400
    if isinstance(exc, ServiceUnavailable | SchemaError):
        return 503
    return None


def guarded(fn: Callable[[Request], Any]) -> Callable[[Request], Response]:
    """Call ``fn`` (in Starlette's thread pool: the service is synchronous) and turn a service
    error into ``{"error": "..."}`` with its status, as the CLI turns it into an exit code."""

    def endpoint(request: Request) -> Response:
        try:
            return json_response(fn(request))
        except Exception as exc:  # noqa: BLE001 - mapped below, or raised again
            status = error_status(exc)
            if status is None:
                raise
            message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            return json_response({"error": redact(message)}, status)

    endpoint.__name__ = fn.__name__
    return endpoint


def int_param(request: Request, name: str, default: int | None, minimum: int = 0
              ) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"{name}: {raw!r} is not an integer") from None
    if value < minimum:
        raise BadQuery(f"{name}: {value} is below the minimum {minimum}")
    return value


def str_param(request: Request, name: str) -> str | None:
    return request.query_params.get(name) or None


def jobs(request: Request) -> list[dict[str, Any]]:
    return queries.list_jobs(
        str_param(request, "status"), str_param(request, "kind"),
        int_param(request, "limit", 50, 1), str_param(request, "parent"),
        offset=int_param(request, "offset", 0) or 0, name=str_param(request, "name"),
        since=since_param(request), sort=str_param(request, "sort") or "created",
        id_prefix=str_param(request, "id"))


def since_param(request: Request) -> Any:
    raw = str_param(request, "since")
    try:
        return queries.parse_since(raw) if raw else None
    except ValueError as exc:
        raise BadQuery(f"since: {exc}") from None


def job_status(request: Request) -> dict[str, Any]:
    return queries.status(request.path_params["job"])


def job_results(request: Request) -> dict[str, Any]:
    return queries.result(request.path_params["job"])


def job_curves(request: Request) -> dict[str, Any]:
    """``max_points`` defaults to 2,000 per series; ``max_points=0`` sends every point."""
    max_points = int_param(request, "max_points", DEFAULT_MAX_POINTS)
    if max_points is not None and 0 < max_points < 4:
        raise BadQuery(f"max_points: {max_points} is below the minimum 4 (0 means all)")
    return queries.curves(request.path_params["job"],
                          tuple(request.query_params.getlist("metric")),
                          after_step=int_param(request, "after_step", None, -1),
                          max_points=max_points or None)


def job_report(request: Request) -> dict[str, Any]:
    from gradq.service.experiments.report import build_report

    job_id = queries.resolve_id(request.path_params["job"])
    if queries.result(job_id)["kind"] == "suite":  # `gradq report SUITE --json`
        from gradq.service.experiments.suite_report import build_suite_report

        return build_suite_report(job_id)
    return build_report(job_id)


def job_mean_curves(request: Request) -> dict[str, Any]:
    """The dashboard's own document: per arm, a metric's mean curve over seeds with its 95%
    band, ``{metric, arms: {label: {step, mean, lo, hi}}}`` (what ``report --png`` draws)."""
    from gradq.service.experiments.report import build_report, mean_curves

    job_id = queries.resolve_id(request.path_params["job"])
    metric = str_param(request, "metric") or build_report(job_id)["metric"]
    arms = {}
    for label, (steps, mean, half) in mean_curves(job_id, metric).items():
        arms[label] = {"step": steps.tolist(), "mean": mean.tolist(),
                       "lo": (mean - half).tolist(), "hi": (mean + half).tolist()}
    return {"id": job_id, "metric": metric, "arms": arms}


ROUTES = [
    Route("/api/jobs", guarded(jobs)),
    Route("/api/jobs/{job}", guarded(job_status)),
    Route("/api/jobs/{job}/results", guarded(job_results)),
    Route("/api/jobs/{job}/curves", guarded(job_curves)),
    Route("/api/jobs/{job}/report", guarded(job_report)),
    Route("/api/jobs/{job}/mean_curves", guarded(job_mean_curves)),
]
