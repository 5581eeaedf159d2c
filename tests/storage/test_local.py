"""The local backend's durability and containment, with real files, SQLite and processes."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.storage.errors import InvalidInput, StorageMisconfigured
from app.storage.local import LocalBackend


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
        from app.storage.local import LocalBackend
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
    crash_after(
        tmp_path,
        """
        staged = backend.stage()
        staged.write(b"renamed, then the process died")
        staged.seal()
        os.makedirs(backend.store / "E1", exist_ok=True)
        backend.index.add_intent("f" * 32, "E1/orphan.bin", backend._staging.owner)
        os.rename(staged.path, backend.store / "E1" / "orphan.bin")
    """,
    )
    assert (tmp_path / "evidence_store" / "E1" / "orphan.bin").exists()

    restarted = LocalBackend(tmp_path / "evidence_store", tmp_path / "state")
    restarted.startup()

    assert files_under(tmp_path / "evidence_store") == []
    assert restarted.index.intents() == []
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


def test_state_on_another_filesystem_is_refused(tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem here")
    with pytest.raises(StorageMisconfigured, match="same filesystem"):
        LocalBackend(tmp_path / "evidence_store", other / f"kmflow-test-{tmp_path.name}")
