"""The file part of an upload on its way to a staged file: written behind the network.

Disk work runs on worker threads, and every trip to one costs the event loop a hand-off, so
this keeps them few: the staged file is created by the first write (on the worker thread), one
write is in flight while the next buffer is received (disk and network busy at once), and the
last partial buffer stays in memory until `finish()`, which the caller runs on the thread that
commits. A small upload thus does all its disk work in one trip. Memory: two write buffers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from app.api.threads import in_thread
from app.sizes import CHUNK_BYTES
from app.storage.staging import StagedFile


class FileBody:
    def __init__(self, stage: Callable[[], StagedFile]) -> None:
        self._stage = stage
        self._staged: StagedFile | None = None
        self._discarded = False
        self._lock = threading.Lock()  # staging vs discard, across worker threads
        self._buffer = bytearray()
        self._pending: asyncio.Future[None] | None = None
        self.size = 0  # bytes received so far

    async def receive(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= CHUNK_BYTES:
            chunk, self._buffer = self._buffer, bytearray()  # handed over, not copied
            await self.settle()
            self._pending = in_thread(self._write, chunk)

    async def settle(self) -> None:
        """Until the write in flight is done; raises its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending

    def finish(self) -> StagedFile:
        """(worker thread, after `settle`) Write what is still buffered; the staged file then
        holds every byte received. The caller owns it from here (commit or discard it)."""
        self._write(bytes(self._buffer))
        self._buffer.clear()
        assert self._staged is not None
        return self._staged

    def discard(self) -> None:
        """(worker thread) Remove whatever was staged; later writes fail. Idempotent."""
        with self._lock:
            self._discarded = True
            staged = self._staged
        if staged is not None:
            staged.discard()  # waits for a write in flight (the staged file's own lock)

    def abandon(self) -> None:
        """(event loop, on failure, before `discard`) Stop waiting for the write in flight;
        it finishes on its own and its outcome no longer matters."""
        if self._pending is not None:
            self._pending.add_done_callback(_ignore_outcome)
            self._pending = None

    def _write(self, chunk: bytes | bytearray) -> None:
        with self._lock:
            if self._discarded:
                raise ValueError("the upload was discarded")
            if self._staged is None:
                self._staged = self._stage()
            staged = self._staged
        staged.write(chunk)


def _ignore_outcome(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
