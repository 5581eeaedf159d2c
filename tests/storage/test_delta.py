"""The delta backend against the real deltalake on temporary directories.

The API suite (tests/api) covers the contract; these cover what is particular to Delta:
file layout, paging over compacted and uncompacted files, maintenance running under load,
time travel and the `kmflow delta` commands, and cleanup after failed or interrupted commits.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import ConfigError
from app.settings import load_settings
from app.storage.delta.backend import DeltaLakeBackend
from app.storage.delta.files import LocalFiles
from app.storage.delta.location import DeltaLocation
from app.storage.delta.maintenance import MaintenancePolicy
from app.storage.delta.table import CommitOutcomeUnknown, EvidenceTable
from app.storage.errors import InvalidCursor, StorageUnavailable
from app.storage.pagination import encode_cursor
from app.storage.records import EvidenceRecord
from app.storage.write_intents import open_intents


def make_backend(tmp_path: Path, compact_every: int = 10) -> DeltaLakeBackend:
    backend = DeltaLakeBackend(
        DeltaLocation.parse(str(tmp_path / "delta_store")),
        tmp_path / "state" / "staging",
        MaintenancePolicy(compact_every=compact_every, checkpoint_every=compact_every * 3),
    )
    backend.startup()
    return backend


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[DeltaLakeBackend]:
    backend = make_backend(tmp_path)
    yield backend
    backend.close()


def all_pages(backend: DeltaLakeBackend, engagement_id: str, limit: int) -> list[EvidenceRecord]:
    records: list[EvidenceRecord] = []
    cursor = None
    while True:
        page = backend.list(engagement_id, limit=limit, cursor=cursor)
        records += page.items
        cursor = page.next_cursor
        if cursor is None:
            return records


def row(engagement_id: str, stored_at: str, evidence_id: str) -> EvidenceRecord:
    return EvidenceRecord(
        id=evidence_id,
        engagement_id=engagement_id,
        file_name=f"{evidence_id}.txt",
        volume_path=f"evidence_store/{engagement_id}/{evidence_id}.txt",
        content_hash="0" * 64,
        size_bytes=1,
        stored_at=stored_at,
        metadata_json=None,
    )


def test_files_live_under_the_base_and_volume_path_is_relative_to_it(
    backend: DeltaLakeBackend, tmp_path: Path
) -> None:
    content = b"general ledger\n" * 50_000

    record = backend.write("ENG-1", "ledger.csv", io.BytesIO(content), {"rows": 50_000})

    base = tmp_path / "delta_store"
    assert record.volume_path == f"evidence_store/ENG-1/{record.id}_ledger.csv"
    assert (base / record.volume_path).read_bytes() == content
    assert record.content_hash == hashlib.sha256(content).hexdigest()
    assert (base / "evidence_metadata" / "_delta_log").is_dir()
    with backend.open(record) as stored:
        assert stored.read() == content
    assert backend.get("ENG-1", record.id) == record
    assert backend.list("ENG-1").items == [record]
    assert not list((tmp_path / "state" / "staging").rglob("*.part"))
    assert open_intents(tmp_path / "state") == []


def test_pages_follow_stored_at_then_id_across_compacted_and_fresh_files(
    tmp_path: Path,
) -> None:
    """Ties on stored_at, several files, compaction between batches: pages match a sort."""
    location = DeltaLocation.parse(str(tmp_path / "delta_store"))
    table = EvidenceTable(location, LocalFiles(tmp_path / "delta_store"))
    table.ensure_exists()
    expected: list[EvidenceRecord] = []
    for batch in range(12):
        rows = [
            row("BIG", f"2026-01-01T00:00:{batch:02d}.{n // 3:06d}Z", f"{batch:02d}{n:030x}")
            for n in range(25)
        ]
        table.append(rows)
        expected += rows
        if batch in (3, 7):
            table.compact()
    table.append([row("OTHER", "2026-01-01T00:00:30.000000Z", "f" * 32)])
    expected.sort(key=lambda record: (record.stored_at, record.id), reverse=True)

    for limit in (1, 7, 25, 100, 1000):
        seen: list[EvidenceRecord] = []
        cursor = None
        while True:
            page = table.page("BIG", limit, cursor)
            seen += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == expected, limit
    mid = expected[40]
    after_mid = table.page("BIG", 5, encode_cursor(mid.stored_at, mid.id)).items
    assert after_mid == expected[41:46]


def test_a_base_from_before_withdrawals_is_read_without_creating_anything(
    tmp_path: Path,
) -> None:
    """A base written by a kmflow without the lifecycle's tables, read as a dry run reads it
    (no startup: nothing is created): its records list, none of them withdrawn."""
    backend = make_backend(tmp_path)
    record = backend.write("E1", "a.txt", io.BytesIO(b"a"))
    backend.close()
    shutil.rmtree(tmp_path / "delta_store" / "evidence_withdrawals")  # as an older base was

    reader = DeltaLakeBackend(
        DeltaLocation.parse(str(tmp_path / "delta_store")), tmp_path / "other" / "staging"
    )
    try:
        assert reader.list("E1").items == [record]
        assert reader.list("E1", include_withdrawn=True).items == [record]
        assert reader.get("E1", record.id) == record
    finally:
        reader.close()
    assert not (tmp_path / "delta_store" / "evidence_withdrawals").exists()


def test_a_cursor_cannot_inject_sql(backend: DeltaLakeBackend) -> None:
    backend.write("E", "a.txt", io.BytesIO(b"a"))
    for stored_at, evidence_id in [("' OR 1=1 --", "x' OR 'a'='a"), ("2026\x00", "x")]:
        with pytest.raises(InvalidCursor):
            backend.list("E", cursor=encode_cursor(stored_at, evidence_id))
    assert len(backend.list("E").items) == 1


def test_rows_stay_listed_while_maintenance_runs_under_concurrent_writes(
    tmp_path: Path,
) -> None:
    backend = make_backend(tmp_path, compact_every=3)
    written: list[str] = []
    written_lock = threading.Lock()
    failures: list[str] = []
    stop = threading.Event()

    def writer(worker: int) -> None:
        for n in range(30):
            record = backend.write("LIVE", f"w{worker}-{n}.txt", io.BytesIO(b"%d" % n))
            with written_lock:
                written.append(record.id)

    def reader() -> None:
        while not stop.is_set():
            with written_lock:
                committed = set(written)
            listed = [record.id for record in all_pages(backend, "LIVE", 40)]
            if len(listed) != len(set(listed)):
                failures.append("a record was listed twice")
            if not committed <= set(listed):
                failures.append("a committed record was missing from a list")

    def compactor() -> None:
        while not stop.is_set():
            backend.maintenance.request(compact=True, checkpoint=True)
            time.sleep(0.01)

    background = [threading.Thread(target=reader), threading.Thread(target=compactor)]
    writers = [threading.Thread(target=writer, args=(worker,)) for worker in range(4)]
    for thread in background + writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in background:
        thread.join()
    backend.close()

    assert failures == []
    backend = make_backend(tmp_path)
    try:
        listed = all_pages(backend, "LIVE", 1000)
        assert sorted(record.id for record in listed) == sorted(written)
        operations = [entry["operation"] for entry in backend.table.history()]
        assert operations.count("OPTIMIZE") >= 3
        batch_sizes = [
            entry["operationMetrics"]["num_added_rows"]
            for entry in backend.table.history()
            if entry["operation"] == "WRITE"
        ]
        assert sum(batch_sizes) == 120
        assert max(batch_sizes) > 1  # concurrent uploads shared commits
    finally:
        backend.close()


def test_two_maintainers_never_compact_at_once(tmp_path: Path) -> None:
    """deltalake 1.6.6 would let both commit and duplicate every row; the lease prevents it."""
    first, second = make_backend(tmp_path, compact_every=1000), make_backend(tmp_path, 1000)
    try:
        for n in range(20):
            first.write("DUP", f"{n}.txt", io.BytesIO(b"x"))
        for _ in range(5):
            futures = [first.maintenance.request(), second.maintenance.request()]
            for future in futures:
                if future is not None:
                    future.result()
        assert len(all_pages(first, "DUP", 1000)) == 20
    finally:
        first.close()
        second.close()


def test_history_and_reading_a_record_as_of_an_earlier_version(
    backend: DeltaLakeBackend,
) -> None:
    first = backend.write("AUDIT", "before.txt", io.BytesIO(b"1"))
    version_after_first = backend.table.version()
    second = backend.write("AUDIT", "after.txt", io.BytesIO(b"2"))

    assert backend.get_as_of("AUDIT", first.id, version_after_first) == first
    assert backend.get_as_of("AUDIT", second.id, version_after_first) is None
    assert backend.get_as_of("AUDIT", second.id, backend.table.version()) == second
    history = backend.table.history()
    assert [entry["version"] for entry in history] == sorted(
        (entry["version"] for entry in history), reverse=True
    )
    assert history[-1]["operation"] == "CREATE TABLE"


def run_kmflow(args: list[str], base: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**os.environ, "DELTA_BASE_PATH": str(base)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_kmflow_delta_history_and_show(backend: DeltaLakeBackend, tmp_path: Path) -> None:
    record = backend.write("CLI", "minutes.txt", io.BytesIO(b"minutes"))
    version = backend.table.version()
    backend.write("CLI", "later.txt", io.BytesIO(b"later"))
    base = tmp_path / "delta_store"

    history = run_kmflow(["delta", "history", "--limit", "2"], base)
    shown = run_kmflow(["delta", "show", "CLI", record.id, "--version", str(version)], base)
    absent = run_kmflow(["delta", "show", "CLI", record.id, "--version", "0"], base)
    missing = run_kmflow(["delta", "history"], tmp_path / "nowhere")

    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert lines[0].split()[:2] == ["version", "timestamp"]
    assert [line.split()[0] for line in lines[1:]] == [str(version + 1), str(version)]
    assert all("WRITE" in line for line in lines[1:])
    assert shown.returncode == 0, shown.stderr
    assert EvidenceRecord.model_validate_json(shown.stdout) == record
    assert absent.returncode == 1
    assert "at version 0" in absent.stderr
    assert missing.returncode == 1
    assert "evidence_metadata" in missing.stderr


def test_a_failed_row_commit_removes_the_file(
    backend: DeltaLakeBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(records: object) -> tuple[int, int]:
        raise StorageUnavailable("the metadata table is too busy")

    monkeypatch.setattr(backend.table, "append", refuse)
    with pytest.raises(StorageUnavailable):
        backend.write("FAIL", "a.txt", io.BytesIO(b"lost"))

    assert list((tmp_path / "delta_store" / "evidence_store" / "FAIL").iterdir()) == []
    assert open_intents(tmp_path / "state") == []


def test_an_unknown_commit_outcome_keeps_the_file_for_startup_to_decide(
    backend: DeltaLakeBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unknown(records: object) -> tuple[int, int]:
        raise CommitOutcomeUnknown("the metadata table cannot be read back")

    monkeypatch.setattr(backend.table, "append", unknown)
    with pytest.raises(CommitOutcomeUnknown):
        backend.write("MAYBE", "a.txt", io.BytesIO(b"kept"))

    files = list((tmp_path / "delta_store" / "evidence_store" / "MAYBE").iterdir())
    assert len(files) == 1
    assert len(open_intents(tmp_path / "state")) == 1


def crash_during_commit(tmp_path: Path, *, after_commit: bool) -> None:
    """A process that dies in the middle of a commit, before or after the row lands."""
    script = textwrap.dedent(f"""
        import io, os
        from pathlib import Path
        from app.storage.delta.backend import DeltaLakeBackend
        from app.storage.delta.location import DeltaLocation
        backend = DeltaLakeBackend(
            DeltaLocation.parse({str(tmp_path / "delta_store")!r}),
            Path({str(tmp_path / "state" / "staging")!r}),
        )
        backend.startup()
        append = backend.table.append
        def die(records):
            if {after_commit!r}:
                append(records)
            os._exit(9)
        backend.table.append = die
        backend.write("CRASH", "a.txt", io.BytesIO(b"evidence"))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == 9, result.stderr.decode()


@pytest.mark.parametrize("after_commit", [False, True], ids=["row-lost", "row-landed"])
def test_startup_resolves_commits_interrupted_by_a_crash(
    tmp_path: Path, after_commit: bool
) -> None:
    crash_during_commit(tmp_path, after_commit=after_commit)
    files = tmp_path / "delta_store" / "evidence_store" / "CRASH"
    assert len(list(files.iterdir())) == 1

    backend = make_backend(tmp_path)
    try:
        listed = backend.list("CRASH").items
        assert len(listed) == (1 if after_commit else 0)
        assert len(list(files.iterdir())) == len(listed)
        if listed:
            with backend.open(listed[0]) as stored:
                assert stored.read() == b"evidence"
        assert open_intents(tmp_path / "state") == []
    finally:
        backend.close()


def test_health_reports_the_table_version_and_notices_a_missing_table(
    backend: DeltaLakeBackend, tmp_path: Path
) -> None:
    backend.write("H", "a.txt", io.BytesIO(b"x"))
    healthy = backend.check()
    assert healthy.reachable is True
    assert healthy.details["table_version"] == backend.table.version()

    log = tmp_path / "delta_store" / "evidence_metadata" / "_delta_log"
    for entry in log.iterdir():
        entry.unlink()
    broken = backend.check()
    assert broken.reachable is False
    assert "error" in broken.details
    assert json.dumps(broken.details)  # plain JSON, no exception objects


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("gs://bucket/x", "not supported"),
        ("s3://", "bucket"),
        ("s3://key:secret@bucket/x", "AWS_"),
        ("", "directory"),
    ],
)
def test_delta_base_path_is_validated(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(_env_file=None, delta_base_path=value)
    assert "DELTA_BASE_PATH" in str(error.value)
    assert message in str(error.value)
    assert "secret" not in str(error.value)
