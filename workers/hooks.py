"""The runner's side of the engine's hooks: a heartbeat thread that renews a lease, and the
hooks that turn a run's log points and checkpoints into fenced writes (one job, or every
replica of a stack in one transaction), on a ``WriteBehind`` so training never waits on the
database for more than one log interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gradq.service.store import leases, writes
from gradq.service.store.leases import Lease, LeaseLost
from gradq.train.faults import failpoint
from gradq.train.interface import CheckpointEntry, LogEntry, MetricRow
from gradq.train.loop import Snapshot
from gradq.workers.failures import TRANSIENT, with_retries
from gradq.workers.writer import WriteBehind

if TYPE_CHECKING:
    from gradq.workers.runner import _Member

log = logging.getLogger("gradq.worker")


class Heartbeat(threading.Thread):
    """Renews the lease every lease/3 seconds while the job runs."""

    def __init__(self, lease: Lease, lease_s: float) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{lease.job_id[:8]}")
        self.lease = lease
        self.interval = max(0.2, lease_s / 3)
        self.stop = threading.Event()
        self.lost = threading.Event()
        self.cancel = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                if leases.renew(self.lease):
                    self.cancel.set()
            except LeaseLost:
                self.lost.set()
                return
            except TRANSIENT as exc:  # keep trying; the sweeper decides when it has lapsed
                log.warning("heartbeat for %s failed: %s", self.lease.job_id, exc)


class DbHooks:
    """Trainer hooks that write through the lease, retrying transient database errors.

    Writes go through a ``WriteBehind`` (see ``writer``): a log interval's rows and a
    checkpoint are written, in order, while the next interval trains; what a write answers
    (cancel, a lost lease, an error) is seen at the next call. ``close`` writes what is
    left and raises what went wrong; the runner calls it before storing the run's end.
    """

    def __init__(self, lease: Lease, heartbeat: Heartbeat, lease_s: float,
                 observer: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.lease = lease
        self.observer = observer
        self.heartbeat = heartbeat
        self.deadline = 4 * lease_s
        self.writer = WriteBehind(f"writer-{lease.job_id[:8]}")
        self.cancel = False
        self.error: BaseException | None = None

    def _check(self) -> None:
        if self.error is not None:
            raise self.error
        if self.heartbeat.lost.is_set():
            raise LeaseLost(f"job {self.lease.job_id}: lease lost")

    def _write(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            if self.error is not None:
                return  # the job is ending: nothing more goes through its lease
            try:
                fn()
            except BaseException as exc:
                self.error = exc
        return run

    def log(self, rows: list[MetricRow], progress: dict[str, Any]) -> bool:
        self.writer.wait()  # at most one log interval in flight
        self._check()

        def write() -> None:
            failpoint("metrics")
            cancel = with_retries(lambda: writes.log(self.lease, rows, progress),
                                  deadline_s=self.deadline, what="writing metrics")
            failpoint("metrics_written")
            self.cancel = self.cancel or cancel

        self.writer.submit(self._write(write))
        if self.observer is not None:
            self.observer(progress)
        return self.cancel or self.heartbeat.cancel.is_set()

    def checkpoint(self, epoch: int, step: int, data: Snapshot) -> None:
        self._check()

        def write() -> None:
            failpoint("checkpoint")
            blob = bytes(data)  # np.savez, here on the writer's thread
            with_retries(lambda: writes.save_checkpoint(self.lease, epoch, step, blob),
                         deadline_s=self.deadline, what="writing a checkpoint")

        self.writer.submit(self._write(write))

    def close(self) -> None:
        """Write what is queued; raise the first error a write met."""
        self.writer.close()
        self._check()


class BatchDbHooks:
    """``ReplicaHooks`` for a batch: at each log interval (and checkpoint) the
    writes of every replica go in one transaction, each fenced by its own lease, on a
    ``WriteBehind`` as ``DbHooks`` does; a replica whose lease was lost gets ``LeaseLost``
    (at the next call) and the others carry on."""

    def __init__(self, members: list[_Member], lease_s: float,
                 observer: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.members = members
        self.observer = observer
        self.deadline = 4 * lease_s
        self.writer = WriteBehind(f"writer-batch-{members[0].lease.job_id[:8]}"
                                  if members else "writer-batch")
        self.error: BaseException | None = None  # a write that failed for the whole batch

    def _answer(self, r: int) -> bool | BaseException:
        """What is known of replica ``r``: its error, or its cancel flag."""
        m = self.members[r]
        if self.error is not None:
            return self.error
        if m.lost or m.hb.lost.is_set():
            return LeaseLost(f"job {m.lease.job_id}: lease lost")
        return m.cancel or m.hb.cancel.is_set()

    def _write(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            if self.error is not None:
                return
            try:
                fn()
            except BaseException as exc:  # transient past its retries, or a bug
                self.error = exc
        return run

    def log(self, entries: list[LogEntry]) -> list[bool | BaseException]:
        self.writer.wait()  # at most one log interval in flight
        out = [self._answer(r) for r, _, _ in entries]
        batch = [(self.members[r].lease, rows, progress)
                 for (r, rows, progress), a in zip(entries, out, strict=True)
                 if not isinstance(a, BaseException)]
        held = [self.members[r] for (r, _, _), a in zip(entries, out, strict=True)
                if not isinstance(a, BaseException)]

        def write() -> None:
            failpoint("metrics")
            answers = with_retries(lambda: writes.log_many(batch), deadline_s=self.deadline,
                                   what="writing metrics")
            failpoint("metrics_written")
            for m, answer in zip(held, answers, strict=True):
                if answer is None:
                    m.lost = True
                else:
                    m.cancel = m.cancel or answer

        if batch:
            self.writer.submit(self._write(write))
        if self.observer is not None and entries:
            self.observer(entries[0][2])
        return out

    def checkpoint(self, entries: list[CheckpointEntry]
                   ) -> list[BaseException | None]:
        answers = [self._answer(r) for r, _, _, _ in entries]
        out = [a if isinstance(a, BaseException) else None for a in answers]
        todo = [(self.members[r], epoch, step, data)
                for (r, epoch, step, data), a in zip(entries, out, strict=True) if a is None]

        def write() -> None:
            failpoint("checkpoint")
            batch = [(m.lease, epoch, step, bytes(data)) for m, epoch, step, data in todo]
            stored = with_retries(lambda: writes.save_checkpoints(batch),
                                  deadline_s=self.deadline, what="writing checkpoints")
            for (m, _, _, _), ok in zip(todo, stored, strict=True):
                if not ok:
                    m.lost = True

        if todo:
            self.writer.submit(self._write(write))
        return out

    def close(self) -> None:
        """Write what is queued (the batch's error, if any, stays in ``error``)."""
        self.writer.close()
