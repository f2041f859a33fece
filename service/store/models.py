"""SQLAlchemy models: the schema of docs/guarantees.md (the migrations in ``migrations/`` create
it).

Conventions after Optuna's RDB storage: plural table names, indexed foreign keys, unique
constraints on natural keys, an enum status column, UTC timestamps, and non-finite metric
values stored explicitly (SQLite turns NaN into NULL, so ``metrics.special`` says which).
"""

from __future__ import annotations

from datetime import datetime, timezone

from gradq.service.status import JobStatus
from sqlalchemy import (
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


_status = Enum(JobStatus, name="job_status", values_callable=lambda e: [m.value for m in e],
               native_enum=False, length=16, validate_strings=True)


class Dataset(Base):
    __tablename__ = "datasets"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the bytes
    format: Mapped[str] = mapped_column(String(8))  # npz (canonical)
    source: Mapped[str] = mapped_column(String(512))  # built-in name or the file's base name
    n_bytes: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DatasetName(Base):
    """A name registered by ``gradq datasets add NAME FILE``."""

    __tablename__ = "dataset_names"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    hash: Mapped[str] = mapped_column(ForeignKey("datasets.hash"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # train | compare
    name: Mapped[str | None] = mapped_column(String(256))
    status: Mapped[JobStatus] = mapped_column(_status, default=JobStatus.QUEUED, index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                                  index=True)
    spec: Mapped[str] = mapped_column(Text)  # canonical JSON of the normalised spec
    dataset_hash: Mapped[str | None] = mapped_column(ForeignKey("datasets.hash"), index=True)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    optimizer: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    queue: Mapped[str] = mapped_column(String(16), default="auto")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_token: Mapped[int] = mapped_column(Integer, default=0)  # fencing token
    worker: Mapped[str | None] = mapped_column(String(256))
    device: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 index=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("job_id", "name", "step", name="uq_metrics_job_name_step"),
                      # covers a downsampled curve's aggregates (migration 0003)
                      Index("ix_metrics_curve", "job_id", "name", "step", "value"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float] = mapped_column(Float)
    time_s: Mapped[float] = mapped_column(Float)
    value: Mapped[float | None] = mapped_column(Float)
    special: Mapped[str | None] = mapped_column(String(8))  # nan | inf | -inf, else NULL


class Result(Base):
    __tablename__ = "results"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    final: Mapped[str] = mapped_column(Text)  # JSON
    timing: Mapped[str] = mapped_column(Text)  # JSON
    params: Mapped[int] = mapped_column(Integer)
    extra: Mapped[str] = mapped_column(Text, default="{}")  # JSON: bagging members, svm, ...
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_checkpoints_job_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)  # npz: params, optimizer state, ...
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))  # model | initial
    data: Mapped[bytes] = mapped_column(LargeBinary)  # npz of named arrays
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


Index("ix_jobs_status_queue", Job.status, Job.queue)


class Worker(Base):
    """One worker process of a pool (``gradq workers``): registered when it starts, its
    heartbeat renewed while it lives; all its times come from the database's clock.

    ``current_job`` is a plain id, not a foreign key: a job may be deleted (``gradq rm``)
    while a worker still names it, and a heartbeat must never fail on that.
    """

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)  # as in jobs.worker
    host: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[str] = mapped_column(String(256))  # comma-separated
    device: Mapped[str] = mapped_column(String(128))
    current_job: Mapped[str | None] = mapped_column(String(32))
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
