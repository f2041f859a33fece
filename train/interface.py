"""The engine's interface: what a run reports through (``Hooks``) and what it returns
(``Outcome``). The job runtime (``gradq.workers``) implements the hooks over the database;
``NullHooks`` stores nothing (library use and tests). A stack of replicas reports through
``ReplicaHooks``: one call per log point or checkpoint for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from gradq.train.loop import Snapshot

MetricRow = tuple[str, int, float, float, float]  # name, step, epoch, time_s, value
LogEntry = tuple[int, list[MetricRow], dict[str, Any]]  # replica, rows, progress
CheckpointEntry = tuple[int, int, int, Snapshot]  # replica, epoch, step, data


class Hooks(Protocol):
    """Where the loop reports; every call may raise to stop it (e.g. a lost lease)."""

    def log(self, rows: list[MetricRow], progress: dict[str, Any]) -> bool:
        """Store one log interval; return True when cancellation was requested."""

    def checkpoint(self, epoch: int, step: int, data: Snapshot) -> None:
        """Store a checkpoint (``bytes(data)`` serialises it, on the caller's thread)."""


class NullHooks:
    """Hooks that store nothing (library use and tests)."""

    def __init__(self) -> None:
        self.rows: list[MetricRow] = []
        self.checkpoints: list[tuple[int, int, bytes]] = []

    def log(self, rows: list[MetricRow], progress: dict[str, Any]) -> bool:
        self.rows.extend(rows)
        return False

    def checkpoint(self, epoch: int, step: int, data: Snapshot) -> None:
        self.checkpoints.append((epoch, step, bytes(data)))


class ReplicaHooks(Protocol):
    """Where a batch reports: one call per log interval or checkpoint for all replicas
    (the runner writes them in one transaction). Replicas are numbered as given to
    ``ReplicaTrainer``. A replica's answer is its cancel flag (``log``) or None
    (``checkpoint``), or the exception that ends it (a lost lease): the others go on."""

    def log(self, entries: list[LogEntry]) -> list[bool | BaseException]: ...

    def checkpoint(self, entries: list[CheckpointEntry]) -> list[BaseException | None]: ...


class EachReplicaHooks:
    """``ReplicaHooks`` over one trainer ``Hooks`` per replica (library use and tests)."""

    def __init__(self, hooks: list[Hooks]) -> None:
        self.hooks = hooks

    def log(self, entries: list[LogEntry]) -> list[bool | BaseException]:
        out: list[bool | BaseException] = []
        for r, rows, progress in entries:
            try:
                out.append(bool(self.hooks[r].log(rows, progress)))
            except Exception as exc:
                out.append(exc)
        return out

    def checkpoint(self, entries: list[CheckpointEntry]) -> list[BaseException | None]:
        out: list[BaseException | None] = []
        for r, epoch, step, data in entries:
            try:
                self.hooks[r].checkpoint(epoch, step, data)
                out.append(None)
            except Exception as exc:
                out.append(exc)
        return out


@dataclass
class Outcome:
    """How a run ended, and what it leaves behind."""

    status: str  # succeeded | diverged | failed | cancelled
    final: dict[str, Any]
    params: int
    arrays: dict[str, np.ndarray]
    initial: dict[str, np.ndarray]
    run_s: float  # cumulative: a resumed run counts the seconds of the runs before it
    samples: int  # trained on in this run only
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    last_rows: list[MetricRow] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=dict)
    session_s: float | None = None  # this run's own seconds, when it resumed; else run_s


@dataclass
class ReplicaEnd:
    """How one replica left the batch: an outcome, or the exception its hooks raised."""

    outcome: Outcome | None = None
    error: BaseException | None = None
    traceback: str | None = None


class Diverged(Exception):
    """The training loss became NaN or ±inf: ``str`` of it is a diverged run's
    ``Outcome.error``. The engine records it rather than raising it, so that one run and
    a stacked replica end alike (logged, then ``diverged``); a caller may raise it."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"loss became {value} at step {step}")
        self.step = step
