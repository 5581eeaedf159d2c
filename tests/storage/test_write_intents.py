"""The write-intent journal every commit runs in: shared flushes, bounded size, and settling
a dead process's intents, with real files, flushes and staging locks."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from app.storage import write_intents
from app.storage.errors import StorageUnavailable
from app.storage.records import EvidenceRecord
from app.storage.staging import StagingArea
from app.storage.write_intents import (
    EMPTY_AT_BYTES,
    JOURNAL_SUFFIX,
    WriteIntents,
    open_intents,
)


def record(n: int) -> EvidenceRecord:
    return EvidenceRecord(
        id=f"{n:032x}",
        engagement_id="ENG",
        file_name=f"{n}.bin",
        volume_path=f"ENG/{n:032x}_{n}.bin",
        content_hash="0" * 64,
        size_bytes=1,
        stored_at="2026-11-29T00:00:00.000000Z",
        metadata_json=None,
    )


def intents_of(staging: StagingArea, state: Path) -> WriteIntents:
    return WriteIntents(state / "intents", staging.root, staging.owner)


def test_concurrent_intents_share_one_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = StagingArea(tmp_path / "staging")
    intents = intents_of(staging, tmp_path)
    flushes = 0
    real_fdatasync = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        nonlocal flushes
        flushes += 1
        time.sleep(0.02)  # a disk's flush: intents made meanwhile wait for the next one
        real_fdatasync(fd)

    monkeypatch.setattr(write_intents.os, "fdatasync", slow_fdatasync)
    threads = [threading.Thread(target=intents.add, args=(record(n),)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(open_intents(tmp_path)) == 32
    assert flushes < 8  # one per intent would be 32
    intents.close()
    staging.close()


def test_the_journal_stays_short_and_goes_when_nothing_is_open(tmp_path: Path) -> None:
    staging = StagingArea(tmp_path / "staging")
    intents = intents_of(staging, tmp_path)
    journal = tmp_path / "intents" / f"{staging.owner}{JOURNAL_SUFFIX}"
    longest = 0
    for n in range(3000):
        intents.add(record(n))
        intents.drop(record(n).id)
        longest = max(longest, journal.stat().st_size)
    kept = record(9999)
    intents.add(kept)
    intents.close()  # one intent still open: the journal stays for the next startup

    assert longest < EMPTY_AT_BYTES + 1024  # 3000 intents would take ~450 KiB
    assert [i.evidence_id for i in open_intents(tmp_path)] == [kept.id]
    staging.close()


def test_under_load_that_always_keeps_an_intent_open_the_journal_stays_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write_intents, "COMPACT_AT_BYTES", 16 * 1024)  # 1 MiB in service
    staging = StagingArea(tmp_path / "staging")
    intents = intents_of(staging, tmp_path)
    journal = tmp_path / "intents" / f"{staging.owner}{JOURNAL_SUFFIX}"
    held = record(99_999)
    intents.add(held)  # never dropped: the journal is never empty
    longest = 0
    for n in range(3000):
        intents.add(record(n))
        intents.drop(record(n).id)
        longest = max(longest, journal.stat().st_size)
    intents.add(record(5000))

    assert longest < 16 * 1024 + 1024  # 3000 intents would take ~450 KiB
    assert {i.evidence_id for i in open_intents(tmp_path)} == {held.id, record(5000).id}
    intents.close()
    staging.close()


def test_a_closed_journal_with_nothing_open_is_removed(tmp_path: Path) -> None:
    staging = StagingArea(tmp_path / "staging")
    intents = intents_of(staging, tmp_path)
    intents.add(record(1))
    intents.drop(record(1).id)
    intents.close()
    staging.close()

    assert list((tmp_path / "intents").iterdir()) == []


def test_settling_keeps_what_it_cannot_settle_for_the_next_try(tmp_path: Path) -> None:
    dead = StagingArea(tmp_path / "staging")
    left = intents_of(dead, tmp_path)
    for n in (1, 2, 3):
        left.add(record(n))
    left.close()
    dead.close()  # the owner is gone; its three intents stay open
    with (tmp_path / "intents" / f"{dead.owner}{JOURNAL_SUFFIX}").open("ab") as journal:
        journal.write(b'{"op":"+","id":"cut sh')  # the crash cut its last line short

    staging = StagingArea(tmp_path / "staging")
    intents = intents_of(staging, tmp_path)
    removed: list[str] = []

    def remove_unless_2(path: str) -> None:
        if path == record(2).volume_path:
            raise StorageUnavailable("the store does not answer")
        removed.append(path)

    indexed = {record(3).id}
    intents.settle(lambda e, i: record(3) if i in indexed else None, remove_unless_2)
    first = open_intents(tmp_path)
    intents.settle(lambda e, i: None, removed.append)

    assert removed == [record(1).volume_path, record(2).volume_path]  # 3 was indexed: kept
    assert [i.evidence_id for i in first] == [record(2).id]
    assert open_intents(tmp_path) == []
    assert list((tmp_path / "intents").iterdir()) == []
    intents.close()
    staging.close()
