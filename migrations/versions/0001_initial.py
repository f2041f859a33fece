"""The initial schema: datasets, jobs, metrics, results, checkpoints, artifacts.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = ("queued", "running", "succeeded", "failed", "diverged", "cancelled")


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("n_bytes", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        _ts("created_at", nullable=False),
    )
    op.create_table(
        "dataset_names",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("hash", sa.String(64), sa.ForeignKey("datasets.hash"), nullable=False),
        _ts("created_at", nullable=False),
    )
    op.create_index("ix_dataset_names_hash", "dataset_names", ["hash"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(256)),
        sa.Column("status", sa.Enum(*STATUSES, name="job_status", native_enum=False, length=16,
                                    create_constraint=False), nullable=False),
        sa.Column("parent_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE")),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("dataset_hash", sa.String(64), sa.ForeignKey("datasets.hash")),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("optimizer", sa.Text, nullable=False),
        sa.Column("queue", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("lease_token", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(256)),
        sa.Column("device", sa.String(64)),
        _ts("heartbeat_at"),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("progress", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("traceback", sa.Text),
        _ts("created_at", nullable=False),
        _ts("enqueued_at"),
        _ts("started_at"),
        _ts("finished_at"),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_parent_id", "jobs", ["parent_id"])
    op.create_index("ix_jobs_dataset_hash", "jobs", ["dataset_hash"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    op.create_index("ix_jobs_status_queue", "jobs", ["status", "queue"])
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("epoch", sa.Float, nullable=False),
        sa.Column("time_s", sa.Float, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("special", sa.String(8)),
        sa.UniqueConstraint("job_id", "name", "step", name="uq_metrics_job_name_step"),
    )
    op.create_table(
        "results",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("final", sa.Text, nullable=False),
        sa.Column("timing", sa.Text, nullable=False),
        sa.Column("params", sa.Integer, nullable=False),
        sa.Column("extra", sa.Text, nullable=False),
        _ts("created_at", nullable=False),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        _ts("created_at", nullable=False),
        sa.UniqueConstraint("job_id", "step", name="uq_checkpoints_job_step"),
    )
    op.create_index("ix_checkpoints_job_id", "checkpoints", ["job_id"])
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        _ts("created_at", nullable=False),
        sa.UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),
    )
    op.create_index("ix_artifacts_job_id", "artifacts", ["job_id"])


def downgrade() -> None:
    op.drop_table("artifacts")
    op.drop_table("checkpoints")
    op.drop_table("results")
    op.drop_table("metrics")
    op.drop_table("jobs")
    op.drop_table("dataset_names")
    op.drop_table("datasets")
