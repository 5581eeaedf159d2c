"""The local backend's durability and containment, with real files, SQLite and processes."""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.storage.errors import InvalidInput, StorageMisconfigured
from app.storage.local.backend import LocalBackend
from app.storage.staging import StagingArea, owner_is_alive


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    backend = LocalBackend(tmp_path / "evidence_store", tmp_path / "state")
    backend.startup()
    yield backend  # type: ignore[misc]
    backend.close()


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def crash_after(tmp_path: Path, steps: str) -> None:
    """Run `steps` against a LocalBackend in another process that then dies without cleanup."""
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from app.storage.local.backend import LocalBackend
        backend = LocalBackend(Path({str(tmp_path / "evidence_store")!r}),
                               Path({str(tmp_path / "state")!r}))
        {textwrap.indent(textwrap.dedent(steps), " " * 8).strip()}
        os._exit(9)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == 9, result.stderr.decode()


def test_write_streams_hashes_and_files_one_evidence_file(
    backend: LocalBackend, tmp_path: Path
) -> None:
    content = b"ledger export\n" * 100_000

    record = backend.write("E1", "ledger.csv", io.BytesIO(content), {"rows": 100_000})

    assert record.content_hash == hashlib.sha256(content).hexdigest()
    assert record.size_bytes == len(content)
    assert files_under(tmp_path / "evidence_store") == [
        tmp_path / "evidence_store" / "E1" / f"{record.id}_ledger.csv"
    ]
    with backend.open(record) as stored:
        assert stored.read() == content
    assert backend.list("E1").items == [record]


def test_the_store_holds_exactly_the_evidence_files(backend: LocalBackend, tmp_path: Path) -> None:
    for n in range(5):
        backend.write(f"E{n % 2}", f"{n}.txt", io.BytesIO(b"x" * n + b"!"))
    staged = backend.stage()
    staged.write(b"in flight")

    assert len(files_under(tmp_path / "evidence_store")) == 5
    staged.discard()


def test_interrupted_upload_leftovers_are_removed_at_startup(tmp_path: Path) -> None:
    crash_after(
        tmp_path,
        """
        staged = backend.stage()
        staged.write(b"half of an upload")
    """,
    )
    staging = tmp_path / "state" / "staging"
    assert len(list(staging.rglob("*.part"))) == 1

    restarted = LocalBackend(tmp_path / "evidence_store", tmp_path / "state")
    restarted.startup()

    assert list(staging.rglob("*.part")) == []
    assert files_under(staging) == [staging / f"{restarted._staging.owner}.lock"]
    restarted.close()


def test_a_file_moved_in_but_never_indexed_is_removed_at_startup(tmp_path: Path) -> None:
    crash_after(  # the real commit, killed where the record would be inserted
        tmp_path,
        """
        import io
        backend.index.insert = lambda record: os._exit(9)
        backend.write("E1", "orphan.bin", io.BytesIO(b"renamed, then the process died"))
    """,
    )
    [orphan] = files_under(tmp_path / "evidence_store")
    assert orphan.read_bytes() == b"renamed, then the process died"

    restarted = LocalBackend(tmp_path / "evidence_store", tmp_path / "state")
    restarted.startup()

    assert files_under(tmp_path / "evidence_store") == []
    assert list((tmp_path / "state" / "intents").iterdir()) == []
    restarted.close()


def test_startup_leaves_a_live_neighbours_upload_alone(tmp_path: Path) -> None:
    first = LocalBackend(tmp_path / "evidence_store", tmp_path / "state")
    staged = first.stage()
    staged.write(b"a live upload in another worker")

    second = LocalBackend(tmp_path / "evidence_store", tmp_path / "state")
    second.startup()

    assert staged.path.exists()
    record = first.commit(staged, "E1", "kept.txt")
    assert second.get("E1", record.id) == record
    second.close()
    first.close()


def test_invalid_names_fail_before_anything_is_read(backend: LocalBackend) -> None:
    stream = io.BytesIO(b"never read")
    with pytest.raises(InvalidInput):
        backend.write("../escape", "a.txt", stream)
    with pytest.raises(InvalidInput):
        backend.write("E1", "a\x00b", stream)
    assert stream.tell() == 0


def test_a_record_pointing_outside_the_store_is_not_opened(backend: LocalBackend) -> None:
    record = backend.write("E1", "a.txt", io.BytesIO(b"x"))
    forged = record.model_copy(update={"volume_path": "../state/index.sqlite3"})
    with pytest.raises(StorageMisconfigured):
        backend.open(forged)


def test_state_inside_the_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageMisconfigured, match="must not contain each other"):
        LocalBackend(tmp_path / "evidence_store", tmp_path / "evidence_store" / "state")


def test_state_on_another_filesystem_is_refused(tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem here")
    with pytest.raises(StorageMisconfigured, match="same filesystem"):
        LocalBackend(tmp_path / "evidence_store", other / f"kmflow-test-{tmp_path.name}")


def test_a_lock_file_unlinked_before_it_was_locked_is_taken_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweeper may find a new owner's lock file unlocked (created, not yet locked), take it
    for a dead owner's and unlink it; the owner must then lock a file that is really there."""
    real_flock = fcntl.flock
    raced: list[int] = []

    def flock_after_a_sweeper_won(fd: int, operation: int) -> None:
        if not raced and operation == fcntl.LOCK_EX:
            raced.append(fd)
            os.unlink(os.readlink(f"/proc/self/fd/{fd}"))
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_sweeper_won)
    area = StagingArea(tmp_path / "staging")
    monkeypatch.setattr(fcntl, "flock", real_flock)

    assert raced
    assert owner_is_alive(tmp_path / "staging", area.owner)
    area.close()
