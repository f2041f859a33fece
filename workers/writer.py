"""A run's database writes on one background thread, in order (issue 12).

The training thread hands each log interval's metric rows and each checkpoint to a
``WriteBehind`` and goes on stepping; the writer serialises checkpoints (``np.savez``)
and writes through the job's fenced lease while the next interval trains. Before it hands
over a log interval the training thread waits until everything handed over earlier is
written, so at most one log interval of writes is ever in flight:

- a checkpoint is stored before any later metric write (and metric rows before a
  checkpoint of the same step), so after kill -9 the newest checkpoint is never behind
  the stored curve by more than one interval, and a resumed run rewrites what is missing
  with the same values (gap-free curves, as issue 6 asks);
- what a write answers (a cancel request, a lost lease, a failure) reaches the training
  thread one log interval later than a synchronous write would have.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

log = logging.getLogger("gradq.worker")


class WriteBehind:
    """Runs callables in submission order on one daemon thread, started on first use."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: deque[Callable[[], None]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, write: Callable[[], None]) -> None:
        """Queue ``write``; it must catch its own errors (it runs on another thread)."""
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name}: writer already closed")
            self._queue.append(write)
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name,
                                                daemon=True)
                self._thread.start()

    def wait(self) -> None:
        """Block until everything submitted so far has been written."""
        with self._cond:
            while self._queue or self._busy:
                self._cond.wait()

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                write = self._queue.popleft()
                self._busy = True
            try:
                write()
            except BaseException:  # a write reports its own errors; this is a bug in one
                log.exception("%s: a write raised", self.name)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
