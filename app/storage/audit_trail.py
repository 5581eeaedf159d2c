"""Audit events written behind the requests that cause them, in batches.

A content read must not wait for a warehouse statement (hundreds of milliseconds) or a Delta
commit, and one statement or commit per event would cap reads at the store's commit rate. So
`record` only queues the event; one thread per process stores everything queued in one
`AuditStore.append` (one SQLite transaction, Delta commit or INSERT), and while that runs the
next batch fills. Appends are also paced (`pace_seconds` between them, unless someone waits
for an event): the trail then costs one transaction per pace while there is traffic, whatever
the traffic (a tenth of a second locally, a warehouse statement every two seconds on
Databricks). A store that fails is retried with backoff, the batch kept in order.

What waits: actions that change evidence (a withdrawal, a hold, a purge's plan) use
`record_durably`, which returns once the event is stored, so their answer means the trail has
them. Reading the trail (`flush` first) sees every event this process recorded before.
What can be lost: events still queued when a process is killed outright (SIGKILL, power
loss), normally those of the last pace or so; a clean shutdown stores them first, and the
count of any it could not store is logged and counted (`kmflow_audit_events_total{outcome=
"lost"}`). While the store is down the queue holds up to `max_waiting` events; past that,
content reads wait (`admit`), and then are refused (503) rather than served unaudited.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
import time
from collections import deque

from app.observability.metrics import AUDIT_EVENTS, AUDIT_EVENTS_WAITING
from app.storage.audit import AuditEvent, AuditStore
from app.storage.errors import StorageError, StorageUnavailable

logger = logging.getLogger(__name__)

MAX_BATCH_EVENTS = 2000
MAX_WAITING_EVENTS = 100_000
FULL_WAIT_SECONDS = 5.0
DURABLE_WAIT_SECONDS = 30.0
# A shutdown waits this long for queued events (inside the pod's grace period; a store that
# stays down longer would hold the shutdown for nothing).
CLOSE_WAIT_SECONDS = 10.0
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 30.0


class AuditTrail:
    """Queue events for `store` and write them on a thread of their own; thread-safe."""

    def __init__(
        self,
        store: AuditStore,
        *,
        max_waiting: int = MAX_WAITING_EVENTS,
        max_batch: int = MAX_BATCH_EVENTS,
        full_wait_seconds: float = FULL_WAIT_SECONDS,
        pace_seconds: float = 0.0,
    ) -> None:
        self.store = store
        self._pace_seconds = pace_seconds
        self._waiters = 0  # callers waiting for events to be stored: no pacing then
        self._last_append = 0.0
        self._max_waiting = max_waiting
        self._max_batch = max_batch
        self._full_wait_seconds = full_wait_seconds
        self._queue: deque[AuditEvent] = deque()
        self._recorded = 0  # events queued so far (sequence numbers 1..recorded)
        self._stored = 0  # events stored so far, in order
        self._closing = False
        self._changed = threading.Condition()
        self._stopping = threading.Event()  # ends a retry's pause early
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    def record(self, event: AuditEvent) -> int:
        """Queue `event` (never waits); returns its sequence number."""
        with self._changed:
            if self._closing:
                raise StorageUnavailable("the audit trail is closed")
            self._queue.append(event)
            self._recorded += 1
            AUDIT_EVENTS_WAITING.inc()
            self._start()
            self._changed.notify_all()
            return self._recorded

    def admit(self) -> None:
        """Before serving what will be recorded (a content read): waits while the queue is
        full, and raises `StorageUnavailable` if it stays full, rather than serve evidence
        whose reading the trail cannot take."""
        deadline = time.monotonic() + self._full_wait_seconds
        with self._changed:
            while len(self._queue) >= self._max_waiting and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StorageUnavailable(
                        f"{len(self._queue)} audit events wait to be stored "
                        f"({self.last_error or 'the store is slow'}); reads are refused "
                        "until the audit trail can take theirs"
                    )
                self._changed.wait(remaining)

    def record_durably(self, event: AuditEvent, timeout: float = DURABLE_WAIT_SECONDS) -> None:
        """Queue `event` and return once it is stored; `StorageUnavailable` if it is not
        stored within `timeout` (it stays queued and is stored when the store answers)."""
        if not self._wait_stored(self.record(event), timeout):
            raise StorageUnavailable(
                f"the audit event was not stored within {timeout:g} s ({self.last_error}); "
                "it is kept and retried"
            )

    def flush(self, timeout: float = DURABLE_WAIT_SECONDS) -> bool:
        """True once every event recorded before the call is stored."""
        with self._changed:
            upto = self._recorded
        return self._wait_stored(upto, timeout)

    def close(self, timeout: float = CLOSE_WAIT_SECONDS) -> None:
        """Store what is queued (waiting at most `timeout`), then stop the thread."""
        stored = self.flush(timeout)
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=None if stored else 1.0)
        with self._changed:
            lost, self._queue = len(self._queue), deque()
        if lost:
            AUDIT_EVENTS.labels("lost").inc(lost)
            AUDIT_EVENTS_WAITING.dec(lost)
            logger.error(
                "%d audit event(s) could not be stored before shutdown: %s", lost, self.last_error
            )

    @property
    def waiting(self) -> int:
        with self._changed:
            return len(self._queue)

    def _wait_stored(self, upto: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            self._waiters += 1
            self._changed.notify_all()  # a paced writer goes at once
            try:
                while self._stored < upto:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or (self._closing and self._thread is None):
                        return False
                    self._changed.wait(remaining)
                return True
            finally:
                self._waiters -= 1

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._write_forever, name="kmflow-audit", daemon=True
            )
            self._thread.start()

    def _write_forever(self) -> None:
        pause = FIRST_RETRY_SECONDS
        while True:
            with self._changed:
                while not self._queue and not self._closing:
                    self._changed.wait()
                if not self._queue:
                    return
                due = self._last_append + self._pace_seconds
                while (
                    not self._closing
                    and not self._waiters
                    and len(self._queue) < self._max_batch
                    and (remaining := due - time.monotonic()) > 0
                ):
                    self._changed.wait(remaining)
                batch = list(itertools.islice(self._queue, self._max_batch))
            failure: str | None
            try:
                self.store.append(batch)
            except (StorageError, sqlite3.Error, OSError) as error:
                failure = str(error) or type(error).__name__
            except Exception as error:  # this thread must outlive any one failure: log, retry
                logger.exception("unexpected error storing %d audit event(s)", len(batch))
                failure = type(error).__name__
            else:
                failure = None
            if failure is not None:
                logger.warning("audit events not stored yet (retry in %.1f s): %s", pause, failure)
                with self._changed:
                    self.last_error = failure
                    self._changed.notify_all()
                if self._stopping.wait(pause):
                    return  # closing: what is left is counted as lost
                pause = min(pause * 2, MAX_RETRY_SECONDS)
                continue
            pause = FIRST_RETRY_SECONDS
            self._last_append = time.monotonic()
            with self._changed:
                for _ in batch:
                    self._queue.popleft()
                self._stored += len(batch)
                self.last_error = None
                self._changed.notify_all()
            AUDIT_EVENTS.labels("stored").inc(len(batch))
            AUDIT_EVENTS_WAITING.dec(len(batch))
