"""Downsampling a long curve for a chart: per bucket of consecutive steps, its first and
last point and its lowest and highest value (a spike and the ends survive). The buckets are
reduced in SQL, and only the kept rows are read (``queries.curves`` calls these)."""

from __future__ import annotations

from typing import Any, NamedTuple

import sqlalchemy as sa
from gradq.service.store.models import Metric


def metric_names(s: sa.orm.Session, job_id: str, only: list[str] | tuple[str, ...]
                  ) -> list[str]:
    """A job's metric names, one index seek each (a loose index scan, not a pass over its
    points)."""
    names: list[str] = []
    while True:
        q = sa.select(sa.func.min(Metric.name)).where(Metric.job_id == job_id)
        if names:
            q = q.where(Metric.name > names[-1])
        name = s.execute(q).scalar()
        if name is None:
            return [n for n in names if not only or n in only]
        names.append(name)


class Point(NamedTuple):
    """A metric row as ``curves`` reads it."""

    name: str
    step: int
    epoch: float
    time_s: float
    value: float | None
    special: str | None


def sqlite_buckets(s: sa.orm.Session, job_id: str, name: str, first: int, last: int,
                       buckets: int) -> list[Point]:
    """SQLite's fast path of :func:`curves`: per bucket of steps, the steps of its first and
    last row and of its lowest and highest value (SQLite returns the step of a lone
    min()/max() from the row that holds it), found in the covering index
    ``(job_id, name, step, value)`` without reading the table; then the kept rows, by
    their steps. No sort, two passes over the index. A bucket keeps its first non-finite
    value (stored as NULL) too, so a divergence stays visible, beside its lowest finite one:
    the lowest-value pass finds the NULL row first, and only a bucket that holds one is
    read a third time for its finite minimum."""
    width = (last - first) // buckets + 1
    cur = s.connection().connection.driver_connection.cursor()
    where = "FROM metrics WHERE job_id = ? AND name = ? AND step BETWEEN ? AND ?"
    lowest = f"SELECT step, value IS NULL, MIN(COALESCE(value, -1e308)) {where}"
    queries = (f"SELECT step, MAX(value) {where}",
               f"SELECT MIN(step) {where}",
               f"SELECT MAX(step) {where}")
    finite_min = f"SELECT step, MIN(value) {where}"
    steps: set[int] = set()
    kept: list[Point] = []
    try:
        for lo in range(first, last + 1, width):
            args = (job_id, name, lo, lo + width - 1)
            low = cur.execute(lowest, args).fetchone()
            found = [low]
            if low is not None and low[1]:  # a NULL took the lowest slot
                found.append(cur.execute(finite_min, args).fetchone())
            found += (cur.execute(q, args).fetchone() for q in queries)
            steps.update(row[0] for row in found if row is not None and row[0] is not None)
        ordered = sorted(steps)
        for i in range(0, len(ordered), 500):  # under SQLite's limit on bound parameters
            chunk = ordered[i:i + 500]
            marks = ", ".join("?" * len(chunk))
            kept += (Point(name, *row) for row in cur.execute(
                "SELECT step, epoch, time_s, value, special FROM metrics"
                f" WHERE job_id = ? AND name = ? AND step IN ({marks}) ORDER BY step",
                (job_id, name, *chunk)))
    finally:
        cur.close()
    return kept


def kept_steps(s: sa.orm.Session, where: list[Any], first: int, last: int,
                buckets: int) -> list[int]:
    """The steps a downsampled series keeps: per bucket of steps, its first and last step
    and the first step of its lowest and highest value (two aggregate passes in SQL)."""
    width = (last - first) // buckets + 1  # steps per bucket, so at most `buckets` of them
    # integer division of integers on SQLite and PostgreSQL alike (steps >= first); the
    # numbers are ours, inlined so the GROUP BY expression is the selected one
    bucket = sa.literal_column(f"(metrics.step - {int(first)}) / {int(width)}",
                               sa.Integer).label("b")
    agg = s.execute(sa.select(bucket, sa.func.min(Metric.step), sa.func.max(Metric.step),
                              sa.func.min(Metric.value), sa.func.max(Metric.value))
                    .where(*where).group_by(bucket)).all()
    keep: set[int] = set()
    extremes: dict[int, tuple[float | None, float | None]] = {}
    for b, lo, hi, vmin, vmax in agg:
        keep.update((lo, hi))
        extremes[b] = (vmin, vmax)
    values = {v for pair in extremes.values() for v in pair if v is not None}
    if values:
        # the first step of each (bucket, value) among the extreme values: bounded by
        # buckets × distinct extremes, however often a value repeats
        for b, value, step in s.execute(
                sa.select(bucket, Metric.value, sa.func.min(Metric.step))
                .where(*where, Metric.value.in_(values)).group_by(bucket, Metric.value)):
            if value in extremes.get(b, ()):
                keep.add(step)
    # nan and ±inf are stored as NULL with `special`: keep the first of each bucket too
    for (step,) in s.execute(sa.select(sa.func.min(Metric.step))
                             .where(*where, Metric.special.is_not(None)).group_by(bucket)):
        keep.add(step)
    return sorted(keep)
