"""The delta backend's storage: a local directory, or an object store through obstore.

It holds the evidence bytes, answers the table's cheap "is there a newer log entry?" probe,
and grants the maintenance lease. Both kinds keep one promise: when `place` returns, the
bytes are durable under their final name. Locally that is the local backend's recipe (rename
the fsynced staging file, fsync the directory; copy and fsync when the base is on another
filesystem); on an object store it is a completed PUT, streamed from the staging file in
parts so memory stays bounded for any size.

The lease exists because deltalake 1.6.6 does not detect two concurrent compactions of the
same files: both commit, and every row they rewrote is then in the table twice (reproduced
in docs/backends.md, "Delta Lake backend"). Maintenance therefore runs only while holding this
lease: an `flock` on a local base (released by the kernel when its holder dies), a
conditionally created object with an expiry on an object store (taken over, with a
conditional update, once expired).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import posixpath
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, cast

import obstore
from obstore.exceptions import AlreadyExistsError, PreconditionError
from obstore.store import ObjectStore, from_url

from app.sizes import CHUNK_BYTES
from app.storage.errors import EvidenceExists, StorageMisconfigured, StorageUnavailable
from app.storage.fsync import fsync_directory, link_into_place, remove_tree
from app.storage.staging import StagedFile

# Multipart upload: parts of 8 MiB, at most 4 in flight: at most 32 MiB buffered per upload.
UPLOAD_PART_BYTES = 8 * 1024 * 1024
UPLOAD_CONCURRENCY = 4


class EvidenceFiles(ABC):
    """Files addressed by a `/`-separated path relative to the base."""

    @abstractmethod
    def place(self, staged: StagedFile, relative: str) -> None:
        """Move or upload a sealed staging file to `relative`; durable on return."""

    @abstractmethod
    def remove(self, relative: str) -> None:
        """Delete the file if it exists; durably gone on return."""

    @abstractmethod
    def remove_tree(self, relative: str) -> list[str]:
        """Delete every file under the directory `relative`, and the directory; returns the
        paths (relative to the base) of the files deleted."""

    @abstractmethod
    def open(self, relative: str) -> BinaryIO:
        """A readable stream of the file; raises `StorageUnavailable` if it is missing."""

    @abstractmethod
    def size(self, relative: str) -> int | None:
        """The file's size in bytes; None if it is missing."""

    def exists(self, relative: str) -> bool:
        return self.size(relative) is not None

    @abstractmethod
    def names_under(self, prefix: str) -> list[str]:
        """The paths (relative to the base) of the files directly in directory `prefix`."""

    def sizes(self, paths: Sequence[str]) -> dict[str, int | None]:
        """`size` of many files (a migration's final check); an object store lists instead."""
        return {relative: self.size(relative) for relative in paths}

    @abstractmethod
    def lease(self, relative: str, seconds: float) -> contextlib.AbstractContextManager[bool]:
        """Try to hold an exclusive lease named `relative`; yields whether it was granted.

        `seconds` bounds how long a holder that vanished blocks the others (object stores
        only; a local lease ends with its holder's process).
        """


class LocalFiles(EvidenceFiles):
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):
            raise StorageMisconfigured(f"{relative!r} points outside DELTA_BASE_PATH")
        return path

    def place(self, staged: StagedFile, relative: str) -> None:
        target = self.path(relative)
        _make_directories(target.parent, self.root)
        try:
            link_into_place(staged.path, target)  # never over an existing file
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            _copy_durably(staged.path, target)
        fsync_directory(target.parent)

    def remove(self, relative: str) -> None:
        target = self.path(relative)
        if target.exists():
            target.unlink(missing_ok=True)
            fsync_directory(target.parent)

    def names_under(self, prefix: str) -> list[str]:
        directory = self.path(prefix)
        if not directory.is_dir():
            return []
        return [
            path.relative_to(self.root).as_posix() for path in directory.iterdir() if path.is_file()
        ]

    def remove_tree(self, relative: str) -> list[str]:
        return remove_tree(self.path(relative), self.root)

    def open(self, relative: str) -> BinaryIO:
        try:
            return self.path(relative).open("rb")
        except FileNotFoundError as error:
            raise StorageUnavailable(f"evidence file {relative} is missing") from error

    def size(self, relative: str) -> int | None:
        try:
            return self.path(relative).stat().st_size
        except FileNotFoundError:
            return None

    @contextmanager
    def lease(self, relative: str, seconds: float) -> Iterator[bool]:
        del seconds  # the kernel drops an flock when its holder dies
        path = self.path(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)


class ObjectStoreFiles(EvidenceFiles):
    """An `s3://bucket/prefix` base; endpoint, region and keys come from `AWS_*` variables.

    obstore raises the built-in `FileNotFoundError` for a missing object and its own
    `obstore.exceptions.BaseError` subclasses for everything else.
    """

    def __init__(self, url: str, conditional_put: str | None = None) -> None:
        if conditional_put is None:  # the environment (AWS_CONDITIONAL_PUT) decides
            self._store = from_url(url)
        else:
            self._store = from_url(url, conditional_put=conditional_put)

    @property
    def store(self) -> ObjectStore:
        """The obstore store at the base, for what else lives there (idempotency claims)."""
        return self._store

    def place(self, staged: StagedFile, relative: str) -> None:
        # Never over an existing object. A check, not an atomic guard (a multipart put cannot
        # be conditional): it stops a migration restoring an id the target already holds.
        if self.exists(relative):
            raise EvidenceExists(f"{relative} is already stored; nothing was replaced")
        obstore.put(
            self._store,
            relative,
            staged.path,
            chunk_size=UPLOAD_PART_BYTES,
            max_concurrency=UPLOAD_CONCURRENCY,
        )

    def remove(self, relative: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            obstore.delete(self._store, relative)

    def names_under(self, prefix: str) -> list[str]:
        listed = obstore.list_with_delimiter(self._store, prefix=f"{prefix.rstrip('/')}/")
        return [str(meta["path"]) for meta in listed["objects"]]

    def remove_tree(self, relative: str) -> list[str]:
        """Objects have no directories: every object under the prefix goes."""
        prefix = f"{relative.rstrip('/')}/"
        removed = [
            str(meta["path"])
            for batch in obstore.list(self._store, prefix=prefix)
            for meta in batch
        ]  # listed whole first: no deletes under a listing's feet
        for path in removed:
            self.remove(path)
        return removed

    def open(self, relative: str) -> BinaryIO:
        try:
            result = obstore.get(self._store, relative)
        except FileNotFoundError as error:
            raise StorageUnavailable(f"evidence file {relative} is missing") from error
        chunks = (bytes(chunk) for chunk in result.stream(min_chunk_size=CHUNK_BYTES))
        return cast(BinaryIO, io.BufferedReader(_ChunkReader(chunks), CHUNK_BYTES))

    def size(self, relative: str) -> int | None:
        try:
            return int(obstore.head(self._store, relative)["size"])
        except FileNotFoundError:
            return None

    def sizes(self, paths: Sequence[str]) -> dict[str, int | None]:
        """One listing per directory, not one HEAD per file: thousands of files checked in a
        few requests."""
        found: dict[str, int] = {}
        for directory in sorted({posixpath.dirname(relative) for relative in paths}):
            for batch in obstore.list(self._store, prefix=f"{directory}/"):
                found.update((str(meta["path"]), int(meta["size"])) for meta in batch)
        return {relative: found.get(relative) for relative in paths}

    @contextmanager
    def lease(self, relative: str, seconds: float) -> Iterator[bool]:
        owner = uuid.uuid4().hex
        body = json.dumps({"owner": owner, "expires": time.time() + seconds}).encode()
        held = self._take(relative, body)
        try:
            yield held
        finally:
            if held:
                self._give_back(relative, owner)

    def _take(self, relative: str, body: bytes) -> bool:
        try:
            obstore.put(self._store, relative, body, mode="create")
            return True
        except AlreadyExistsError:
            pass
        try:
            current = obstore.get(self._store, relative)
        except FileNotFoundError:
            return False  # released meanwhile; the next round takes it
        etag = current.meta["e_tag"]
        if etag is None or json.loads(bytes(current.bytes()))["expires"] > time.time():
            return False
        try:  # expired: take it over unless someone else just did
            obstore.put(self._store, relative, body, mode={"e_tag": etag})
        except (PreconditionError, FileNotFoundError):
            return False
        return True

    def _give_back(self, relative: str, owner: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            current = json.loads(bytes(obstore.get(self._store, relative).bytes()))
            if current["owner"] == owner:
                obstore.delete(self._store, relative)


class _ChunkReader(io.RawIOBase):
    """A raw stream over an iterator of byte chunks, so a download is never held whole."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _make_directories(directory: Path, root: Path) -> None:
    """mkdir -p, fsyncing each parent that gained an entry."""
    if directory.is_dir():
        return
    _make_directories(directory.parent, root)
    directory.mkdir(exist_ok=True)
    fsync_directory(directory.parent)


def _copy_durably(source: Path, target: Path) -> None:
    """Copy across filesystems under a temporary name, fsync, then rename into place."""
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        with source.open("rb") as reader, partial.open("xb") as writer:
            while chunk := reader.read(CHUNK_BYTES):
                writer.write(chunk)
            writer.flush()
            os.fsync(writer.fileno())
        link_into_place(partial, target)  # never over an existing file
    finally:
        partial.unlink(missing_ok=True)
