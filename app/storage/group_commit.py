"""Group commit: writes that arrive while a commit is in flight share the next one.

Commits to one table are serial and each costs a flush to stable storage (a Delta table
version and its file; a SQLite transaction and its WAL fsync), so one commit per upload caps
throughput at one upload per commit latency. Here the first caller becomes the leader and
commits every row queued by then at once; callers arriving meanwhile wait, and when the leader
is done it hands the lead to the oldest waiter, which commits everything queued since. Under
no load a batch is one row and nothing waits; under load the batch grows with the load. No
thread is owned here: the leader is always a caller, so nothing runs when nobody writes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Row = TypeVar("Row")
Outcome = TypeVar("Outcome")

MAX_BATCH_ROWS = 512


@dataclass(eq=False)
class _Waiter(Generic[Row, Outcome]):
    row: Row
    wake: threading.Event = field(default_factory=threading.Event)
    leads: bool = False
    done: bool = False
    outcome: Outcome | None = None
    error: BaseException | None = None


class GroupCommit(Generic[Row, Outcome]):
    """Run `flush(rows)` for batches of concurrently submitted rows; see the module docstring."""

    def __init__(
        self, flush: Callable[[Sequence[Row]], Outcome], max_batch: int = MAX_BATCH_ROWS
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Waiter[Row, Outcome]] = []
        self._busy = False

    def submit(self, row: Row) -> Outcome:
        """Block until `row` is committed; returns its batch's outcome or raises its error."""
        waiter: _Waiter[Row, Outcome] = _Waiter(row)
        with self._lock:
            self._queue.append(waiter)
            if not self._busy:
                self._busy = True
                waiter.leads = True
        while not waiter.leads and not waiter.done:
            waiter.wake.wait()
            waiter.wake.clear()
        if not waiter.done:
            self._lead()
        if waiter.error is not None:
            raise waiter.error
        return waiter.outcome  # type: ignore[return-value]

    def _lead(self) -> None:
        """Commit the oldest queued rows, then pass the lead on; raises the flush's error."""
        with self._lock:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
        try:
            outcome = self._flush([waiter.row for waiter in batch])
        except BaseException as error:
            self._finish(batch, None, error)
            raise
        self._finish(batch, outcome, None)

    def _finish(
        self,
        batch: list[_Waiter[Row, Outcome]],
        outcome: Outcome | None,
        error: BaseException | None,
    ) -> None:
        with self._lock:
            if self._queue:
                successor = self._queue[0]
                successor.leads = True
                successor.wake.set()
            else:
                self._busy = False
        for waiter in batch:
            waiter.outcome, waiter.error, waiter.done = outcome, error, True
            waiter.wake.set()
