"""Migration 0003, the covering index of curves (issue 22): up and down on SQLite and
PostgreSQL, the same downsampled document either way, and SQLite's aggregates reading the
index alone."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from gradq.service.store import db, queries
from gradq.service.store.db import session_scope
from gradq.service.store.models import Metric
from test_storage import fresh_backend, make_job  # noqa: F401, F811  (a fixture, a helper)

POINTS = 3_000


def _curve(job_id: str) -> None:
    """A train_loss curve of POINTS steps with spikes and an infinite point."""
    with session_scope() as s:
        s.add_all(Metric(job_id=job_id, name="train_loss", step=k, epoch=k / 100,
                         time_s=k / 10, value=None if k == 1234 else 1 / (k + 1) + (k % 97 == 0),
                         special="inf" if k == 1234 else None) for k in range(POINTS))


def _indexes() -> set[str]:
    return {i["name"] for i in sa.inspect(db.get_engine()).get_indexes("metrics")}


def test_migration_0003_adds_and_drops_the_covering_index(fresh_backend: str) -> None:  # noqa: F811
    # Given a job whose curve is longer than the page asks for, at the head revision
    [job] = make_job()
    _curve(job)
    head = db.head_revision()
    assert head == "0003" and "ix_metrics_curve" in _indexes()
    at_head = queries.curves(job, max_points=400)
    series = at_head["metrics"]["train_loss"]
    assert 4 < len(series["step"]) <= 400 and float("inf") in series["value"]
    # When the migration is undone, the index goes and the points stay
    assert db.downgrade(revision="-1") != head
    assert "ix_metrics_curve" not in _indexes()
    with db.get_engine().connect() as conn:  # raw: a session would ask for the head schema
        assert conn.execute(sa.text("SELECT COUNT(*) FROM metrics")).scalar_one() == POINTS
    # Then upgrading again brings it back, and the curve reads as it did
    assert db.upgrade() == head
    assert "ix_metrics_curve" in _indexes()
    assert queries.curves(job, max_points=400) == at_head


def test_sqlite_finds_a_buckets_extremes_in_the_index_alone() -> None:
    # Given the SQLite database at head
    [job] = make_job()
    _curve(job)
    with session_scope() as s:
        plan = s.execute(sa.text(
            "EXPLAIN QUERY PLAN SELECT step, MIN(COALESCE(value, -1e308)) FROM metrics"
            " WHERE job_id = :j AND name = 'train_loss' AND step BETWEEN 0 AND 99"),
            {"j": job}).all()
    # Then the aggregate reads the covering index, not the table
    assert any("COVERING INDEX ix_metrics_curve" in str(r[-1]) for r in plan), plan


@pytest.mark.parametrize("max_points", [8, 400, 2_000, 5_000])
def test_downsampled_rows_are_rows_of_the_curve(max_points: int) -> None:
    # Given a curve, downsampled at several sizes
    [job] = make_job()
    _curve(job)
    full = queries.curves(job)["metrics"]["train_loss"]
    got = queries.curves(job, max_points=max_points)["metrics"]["train_loss"]
    # Then every kept point is the stored point of its step, in step order, ends included
    at = {s: i for i, s in enumerate(full["step"])}
    assert got["step"] == sorted(got["step"]) and len(got["step"]) <= max(max_points, 4)
    assert got["step"][0] == 0 and got["step"][-1] == POINTS - 1
    for k in ("epoch", "time_s", "value"):
        assert got[k] == [full[k][at[s]] for s in got["step"]]
