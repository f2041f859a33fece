"""A covering index for curves: (job_id, name, step, value) on metrics.

A downsampled curve (``queries.curves`` with ``max_points``) finds each bucket's first,
last, lowest and highest point. Through the unique ``(job_id, name, step)`` index alone,
every row of a bucket was read twice: once in the index, once in the table for its value.
With ``value`` in the index, the aggregates read the index only, and the table is read
for the few rows kept (docs/architecture.md, the store).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_metrics_curve", "metrics", ["job_id", "name", "step", "value"])


def downgrade() -> None:
    op.drop_index("ix_metrics_curve", table_name="metrics")
