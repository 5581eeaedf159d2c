"""Rounds: jobs submitted concurrently are carried out together, one round at a time.

On a Databricks SQL warehouse every statement costs hundreds of milliseconds and every write is
a Delta commit of a second or more, with commits to one table taking turns. One statement per
upload caps a table at about one upload per second, however many uploads wait. So jobs are
queued here and one thread takes everything queued (up to `max_jobs`) into the next round:
while a round runs, the next one fills up, and under load each round carries the load.

Rounds can still fall into step with their clients: the uploads answered by one round come
back together a moment after the next round has started, miss it, and from then on the clients
split into groups that take turns, each upload waiting for two rounds. So before a round starts
the thread may linger, like PostgreSQL's `commit_delay` with `commit_siblings`: only while
fewer jobs are queued than were in flight around the last round (its own jobs and those that
arrived while it ran), or callers have said a job is on its way (`expecting`); only right
after a round (not after idling); and never longer than a quarter of the last round's duration
(at most `MAX_LINGER_SECONDS`). Under no load nothing waits; at a warehouse's speed a round
waits at most a fraction of what a missed round would cost; at an emulator's speed the wait
shrinks with the round.

`group_commit.GroupCommit` batches too, but its leader is always a caller that waits for its
own commit; here callers may hand over a job and not wait (a migration's rows), give up
waiting after a while (an upload whose row is durable anyway), and a round needs a thread of
its own to run on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Job = TypeVar("Job")

LINGER_FRACTION = 0.25
MAX_LINGER_SECONDS = 0.5


class BatcherClosed(RuntimeError):
    """A job was submitted after `close()`."""


@dataclass(eq=False)
class Ticket(Generic[Job]):
    """A submitted job; `done` is set once its round has ended (whatever the outcome)."""

    job: Job
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)


class RoundBatcher(Generic[Job]):
    """Run `run_round(jobs)` on one thread for the jobs queued so far; see the module docstring.

    `run_round` records each job's outcome on the job itself; an exception it raises is logged
    and ends that round only (its jobs are marked done with whatever they hold).
    """

    def __init__(
        self,
        run_round: Callable[[Sequence[Job]], None],
        *,
        max_jobs: int,
        name: str,
        linger_fraction: float = LINGER_FRACTION,
        max_linger_seconds: float = MAX_LINGER_SECONDS,
    ) -> None:
        self._run_round = run_round
        self._max_jobs = max_jobs
        self._linger_fraction = linger_fraction
        self._max_linger_seconds = max_linger_seconds
        self._queue: list[Ticket[Job]] = []
        self._expected = 0  # callers inside `expecting()` that have not submitted yet
        self._running = False
        self._closing = False
        self._load = 0  # jobs in flight around the last round: its own and those that came
        self._last_round_seconds = 0.0
        self._last_round_ended = 0.0
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Ticket[Job]:
        return self.submit_all([job])[0]

    def submit_all(self, jobs: Sequence[Job]) -> list[Ticket[Job]]:
        """Queue jobs at once, so no round starts with only the first of them."""
        with self._changed:
            return [self._enqueue(job) for job in jobs]

    @contextmanager
    def expecting(self) -> Iterator[Callable[[Job], Ticket[Job]]]:
        """Say a job is on its way (the caller is still uploading its file, say), so a round
        about to start may wait for it; yields the `submit` to use for it (at most once)."""
        submitted = False

        def submit(job: Job) -> Ticket[Job]:
            nonlocal submitted
            with self._changed:
                if not submitted:
                    submitted = True
                    self._expected -= 1
                return self._enqueue(job)

        with self._changed:
            self._expected += 1
        try:
            yield submit
        finally:
            with self._changed:
                if not submitted:
                    self._expected -= 1
                    self._changed.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once nothing is queued or running (every job submitted so far is done)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._queue or self._running:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def close(self) -> None:
        """Stop after the round in progress; jobs still queued are ended without a round (a
        caller keeps them somewhere durable if they matter)."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()

    def _enqueue(self, job: Job) -> Ticket[Job]:
        if self._closing:
            raise BatcherClosed("no more rounds: the batcher is closed (or its thread died)")
        ticket = Ticket(job)
        self._queue.append(ticket)
        self._changed.notify_all()
        return ticket

    def _run_forever(self) -> None:
        try:
            self._run_rounds()
        finally:  # closed, or this thread is dying: nothing may wait for a round again
            with self._changed:
                self._closing = True
                dropped, self._queue = self._queue, []
                self._changed.notify_all()
            for ticket in dropped:
                ticket.done.set()

    def _run_rounds(self) -> None:
        while batch := self._next_round():
            started = time.monotonic()
            try:
                self._run_round([ticket.job for ticket in batch])
            except Exception:  # one bad round must not stop every later one: log, go on
                logger.exception("a round of %d job(s) failed unexpectedly", len(batch))
            finally:
                with self._changed:
                    self._running = False
                    self._load = len(batch) + len(self._queue)
                    self._last_round_ended = time.monotonic()
                    self._last_round_seconds = self._last_round_ended - started
                    self._changed.notify_all()
                for ticket in batch:
                    ticket.done.set()

    def _next_round(self) -> list[Ticket[Job]]:
        """Wait for jobs, linger if that is worth it, and take the next round's (empty: stop)."""
        with self._changed:
            while not self._queue and not self._closing:
                self._changed.wait()
            if self._closing:
                return []
            last = self._last_round_seconds
            linger = min(self._max_linger_seconds, self._linger_fraction * last)
            if time.monotonic() - self._last_round_ended > last:
                linger = 0.0  # idle for a while: the last round says nothing about now
            deadline = time.monotonic() + linger
            while self._worth_waiting() and (remaining := deadline - time.monotonic()) > 0:
                self._changed.wait(remaining)
            batch = self._queue[: self._max_jobs]
            del self._queue[: self._max_jobs]
            self._running = True
            return batch

    def _worth_waiting(self) -> bool:
        queued = len(self._queue)
        if self._closing or queued >= self._max_jobs:
            return False
        return self._expected > 0 or queued < self._load
