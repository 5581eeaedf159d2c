"""SQLite as kmflow uses it for local state: WAL, durable commits, one connection per thread.

Several threads (the API's thread pool) and several processes (uvicorn workers) share a file;
WAL lets readers run beside the single writer, `synchronous=FULL` makes a committed transaction
survive power loss, and `BEGIN IMMEDIATE` takes the write lock up front so two writers queue
on the busy timeout instead of failing on a lock upgrade. Writes go through `write`, which
lets concurrent writers of one process share a transaction (`GroupCommit`): one fsync for many
uploads. Writers of every process then take turns on an `flock` (`<db>.write-lock`) before
`BEGIN IMMEDIATE`: the kernel wakes the next one the moment the lock is free, where SQLite's
busy handler sleeps in steps of up to 100 ms, which put those sleeps into the tail latency of
small uploads with two workers. SQLite's own locking still guards anything that bypasses this
(other tools).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.storage.group_commit import GroupCommit


@dataclass(eq=False)
class _Write:
    """One caller's part of a shared transaction, and how it went."""

    work: Callable[[sqlite3.Connection], object]
    error: sqlite3.Error | None = None


class SqliteDatabase:
    def __init__(self, path: Path, schema: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self._all: list[weakref.ref[_ThreadConnection]] = []
        self._lock = threading.Lock()
        self._group: GroupCommit[_Write, None] = GroupCommit(self._run_writes)
        self._writer = threading.Lock()  # this process's turn...
        self._write_lock_fd = os.open(f"{path}.write-lock", os.O_RDWR | os.O_CREAT, 0o600)
        self.connection().executescript(schema)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection. Threads come and go (anyio retires idle ones), so
        a connection is closed with its thread, not kept until `close()`."""
        held: _ThreadConnection | None = getattr(self._local, "held", None)
        if held is None:
            db = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            held = self._local.held = _ThreadConnection(db)
            with self._lock:
                self._all = [ref for ref in self._all if ref() is not None]
                self._all.append(weakref.ref(held))
        return held.db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        db = self.connection()
        with self._writer:
            fcntl.flock(self._write_lock_fd, fcntl.LOCK_EX)  # ...and every process's
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            finally:
                fcntl.flock(self._write_lock_fd, fcntl.LOCK_UN)

    def write(self, work: Callable[[sqlite3.Connection], object]) -> None:
        """Run `work` in a durable transaction, shared with concurrent writers. Each caller's
        work stands alone (a savepoint each): its SQLite error is raised to it only."""
        write = _Write(work)
        self._group.submit(write)
        if write.error is not None:
            raise write.error

    def _run_writes(self, writes: Sequence[_Write]) -> None:
        """All the batch's work in one transaction; if any of it fails (rare: a repeated id),
        the batch is run again with a savepoint each, so only the failing caller sees it.
        Few statements per batch matter: each one hands the GIL over and back."""
        try:
            with self.transaction() as db:
                for write in writes:
                    write.work(db)
            return
        except sqlite3.Error:
            if len(writes) == 1:
                raise
        with self.transaction() as db:
            for write in writes:
                db.execute("SAVEPOINT one_write")
                try:
                    write.work(db)
                except sqlite3.Error as error:
                    db.execute("ROLLBACK TO one_write")
                    write.error = error
                db.execute("RELEASE one_write")

    def close(self) -> None:
        with self._lock:
            for ref in self._all:
                held = ref()
                if held is not None:
                    held.db.close()
            self._all.clear()
        self._local = threading.local()
        if self._write_lock_fd >= 0:
            os.close(self._write_lock_fd)
            self._write_lock_fd = -1


class _ThreadConnection:
    """Owned by one thread's `threading.local`: dropped, and so closed, when the thread ends."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __del__(self) -> None:
        self.db.close()
