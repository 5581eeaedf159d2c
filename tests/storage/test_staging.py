"""Staged files: every byte lands, hashed, whatever the block boundaries and the filesystem."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from app.storage import fsync
from app.storage.sqlite_db import SqliteDatabase
from app.storage.staging import BLOCK_BYTES, DIRECT_IO, StagedFile, StagingArea

SIZES = [1, 4095, BLOCK_BYTES - 1, BLOCK_BYTES, BLOCK_BYTES + 1, 3 * BLOCK_BYTES + 17]
SHM = Path("/dev/shm")


def _write_in_pieces(staged: StagedFile, data: bytes, piece: int) -> None:
    for start in range(0, len(data), piece):
        staged.write(data[start : start + piece])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("piece", [65_536, 1_000_003])
def test_sealed_file_holds_exactly_the_bytes_written(tmp_path: Path, size: int, piece: int) -> None:
    data = os.urandom(size)
    staged = StagedFile(tmp_path / "upload.part")
    _write_in_pieces(staged, data, piece)
    staged.seal()
    assert staged.size == size
    assert staged.content_hash == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "upload.part").read_bytes() == data


@pytest.mark.skipif(not DIRECT_IO, reason="no O_DIRECT on this platform")
def test_whole_blocks_bypass_the_page_cache_where_the_filesystem_allows(tmp_path: Path) -> None:
    staged = StagedFile(tmp_path / "upload.part")
    try:
        import fcntl

        flags = fcntl.fcntl(staged._require_open(), fcntl.F_GETFL)
        assert flags & DIRECT_IO, "a local disk directory should take direct I/O"
    finally:
        staged.discard()


@pytest.mark.skipif(not SHM.is_dir(), reason="no tmpfs at /dev/shm")
def test_a_filesystem_without_direct_io_gets_buffered_writes(tmp_path: Path) -> None:
    directory = SHM / f"kmflow-test-{os.getpid()}-{tmp_path.name}"
    directory.mkdir()
    try:
        data = os.urandom(2 * BLOCK_BYTES + 5)
        staged = StagedFile(directory / "upload.part")
        staged.write(data)
        staged.seal()
        assert (directory / "upload.part").read_bytes() == data
    finally:
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()


def test_discard_waits_for_a_write_in_flight_and_later_writes_fail(tmp_path: Path) -> None:
    area = StagingArea(tmp_path / "staging")
    staged = area.new_file()
    writer = threading.Thread(target=staged.write, args=(os.urandom(8 * BLOCK_BYTES),))
    writer.start()
    staged.discard()
    writer.join()
    assert not staged.path.exists()
    with pytest.raises(ValueError, match="closed"):
        staged.write(b"more")
    area.close()


def test_concurrent_writers_share_transactions_and_fail_alone(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "db.sqlite3", "CREATE TABLE t (id TEXT PRIMARY KEY);")
    ids = [f"row-{n % 40}" for n in range(48)]  # eight ids come twice: eight must fail
    errors: list[str] = []

    def insert(row_id: str) -> None:
        try:
            db.write(lambda conn: conn.execute("INSERT INTO t (id) VALUES (?)", (row_id,)))
        except sqlite3.IntegrityError:
            errors.append(row_id)

    threads = [threading.Thread(target=insert, args=(row_id,)) for row_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = {row[0] for row in db.connection().execute("SELECT id FROM t")}
    assert stored == set(ids)
    assert len(errors) == 8
    db.close()


def test_callers_waiting_for_a_directory_flush_share_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushes: list[Path] = []
    first_started, release_first = threading.Event(), threading.Event()

    def slow_flush(directory: Path) -> None:
        flushes.append(directory)
        if len(flushes) == 1:
            first_started.set()
            release_first.wait()

    monkeypatch.setattr(fsync, "fsync_directory", slow_flush)
    sync = fsync.SharedDirectorySync()
    first = threading.Thread(target=sync.sync, args=(tmp_path,))
    first.start()
    first_started.wait()
    waiting = [threading.Thread(target=sync.sync, args=(tmp_path,)) for _ in range(15)]
    for thread in waiting:
        thread.start()
    while len(sync._groups[tmp_path]._queue) < 15:  # all queued behind the first flush
        threading.Event().wait(0.001)
    release_first.set()
    for thread in [first, *waiting]:
        thread.join()
    assert flushes == [tmp_path, tmp_path]  # 16 callers, 2 flushes
