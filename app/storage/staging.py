"""Local files that uploads stream into before a backend commits them, and their cleanup.

Each process (every uvicorn worker, every script) owns one directory under the staging root
and holds an exclusive `flock` on `<owner>.lock` for as long as it lives. The kernel drops the
lock when the process dies, however it dies, so a sweeper can tell a crashed owner's leftovers
from a live neighbour's in-flight uploads without clocks or pid files: it removes only what
belongs to owners whose lock it can take. Other state kept per owner (write intents,
Idempotency-Key claims) uses the same test, `owner_is_alive`.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import mmap
import os
import shutil
import threading
import uuid
from pathlib import Path

from app.sizes import CHUNK_BYTES

# The staging buffer: one chunk, aligned for direct I/O (see `app.sizes`).
BLOCK_BYTES = CHUNK_BYTES

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
DIRECT_IO: int = getattr(os, "O_DIRECT", 0)  # Linux; elsewhere plain buffered writes


class StagedFile:
    """A write-once local file that computes its SHA-256 and size while it is written.

    Whole blocks go to disk with `O_DIRECT` where the filesystem allows it: a large upload
    then does not pass through the page cache (whose writeback, not the disk, limited
    throughput), and the final fsync has nothing left to flush; `python -m benchmarks`
    measures large uploads against `dd conv=fsync`. Direct I/O needs aligned memory, sizes
    and offsets, so bytes are gathered in one page-aligned
    block; the last partial block is written through the page cache at `seal()`.

    `write`, `seal` and `discard` may run on different worker threads (the upload path writes
    one block while it receives the next); a lock makes `discard` wait for a write in flight,
    so a descriptor is never closed under a writer.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = _open_exclusive(path)
        self._block = mmap.mmap(-1, BLOCK_BYTES)
        self._filled = 0
        self._hash = hashlib.sha256()
        self._lock = threading.Lock()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        with self._lock:
            fd = self._require_open()
            self._hash.update(data)
            view = memoryview(data)
            while view:
                taken = min(BLOCK_BYTES - self._filled, len(view))
                self._block[self._filled : self._filled + taken] = view[:taken]
                self._filled += taken
                view = view[taken:]
                if self._filled == BLOCK_BYTES:
                    _write_all(fd, memoryview(self._block))
                    self._filled = 0
            self.size += len(data)

    @property
    def content_hash(self) -> str:
        return self._hash.hexdigest()

    def seal(self) -> None:
        """Flush the bytes to stable storage; no more writes after this."""
        with self._lock:
            if self._fd is None:
                return
            if self._filled:
                _buffered(self._fd)  # the tail is not a whole block
                _write_all(self._fd, memoryview(self._block)[: self._filled])
                self._filled = 0
            os.fdatasync(self._fd)  # the data and what reading it needs (size, blocks)
            self._close()

    def discard(self) -> None:
        """Close and remove the file if it is still here (idempotent)."""
        with self._lock:
            self._close()
            self.path.unlink(missing_ok=True)

    def _require_open(self) -> int:
        if self._fd is None:
            raise ValueError("staged file is closed")
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self._block.closed:
            self._block.close()


def _open_exclusive(path: Path) -> int:
    """A new file, opened for direct I/O when the filesystem supports it (tmpfs does not)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    if DIRECT_IO:
        try:
            return os.open(path, flags | DIRECT_IO, 0o600)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            path.unlink(missing_ok=True)
    return os.open(path, flags, 0o600)


def _buffered(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~DIRECT_IO)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        try:
            written = os.write(fd, view)
        except OSError as error:
            # Some filesystems accept O_DIRECT at open and refuse it at write: go buffered.
            if error.errno != errno.EINVAL or not DIRECT_IO or not _is_direct(fd):
                raise
            _buffered(fd)
            continue
        view = view[written:]


def _is_direct(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & DIRECT_IO)


class StagingArea:
    """One process's staging directory under a shared root. See the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        # Lock first, directory second: a sweeper never sees a directory whose owner has
        # not taken its lock yet.
        self._lock_fd: int | None = _take_lock(root / f"{self.owner}{LOCK_SUFFIX}")
        self.directory = root / self.owner
        self.directory.mkdir()

    def new_file(self) -> StagedFile:
        return StagedFile(self.directory / f"{uuid.uuid4().hex}.part")

    def sweep_stale(self) -> int:
        """Remove the directories of dead owners; returns how many files were removed."""
        removed = 0
        for entry in self.root.iterdir():
            owner = entry.name.removesuffix(LOCK_SUFFIX)
            if owner == self.owner or not entry.is_dir():
                continue
            if owner_is_alive(self.root, owner):
                continue
            removed += sum(1 for child in entry.rglob("*") if child.is_file())
            shutil.rmtree(entry, ignore_errors=True)
            (self.root / f"{owner}{LOCK_SUFFIX}").unlink(missing_ok=True)
        for lock in self.root.glob(f"*{LOCK_SUFFIX}"):
            owner = lock.name.removesuffix(LOCK_SUFFIX)
            if not (self.root / owner).exists() and not owner_is_alive(self.root, owner):
                lock.unlink(missing_ok=True)
        if removed:
            logger.info("removed %d leftover file(s) of interrupted uploads", removed)
        return removed

    def close(self) -> None:
        if self._lock_fd is None:
            return
        shutil.rmtree(self.directory, ignore_errors=True)
        (self.root / f"{self.owner}{LOCK_SUFFIX}").unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = None


def _take_lock(path: Path) -> int:
    """Create and lock `path`, making sure the locked file is still the one at `path`.

    Between our create and our flock a sweeper may find the file unlocked, take it for a dead
    owner's and unlink it; the lock would then be on a nameless file. So check, and redo.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def owner_is_alive(root: Path, owner: str) -> bool:
    """True while the process that created `owner` still holds its lock.

    The probe takes a shared lock: only the owner's exclusive one refuses it. An exclusive
    probe was refused by another thread's probe of the same dead owner, which then looked
    alive (two retries taking over one abandoned Idempotency-Key: one got a 409).
    """
    try:
        fd = os.open(root / f"{owner}{LOCK_SUFFIX}", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
