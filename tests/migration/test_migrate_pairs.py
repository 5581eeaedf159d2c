"""`kmflow migrate` between the backends that need no workspace: local -> delta -> local."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from app.cli import main
from app.storage.audit import audit_event
from app.storage.local.backend import LocalBackend
from app.storage.registry import create_backend
from app.storage.walk import all_events
from tests.conftest import settings_from_env


def test_local_to_delta_and_back_keeps_every_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = LocalBackend(tmp_path / "store", tmp_path / "state")
    written = {
        record.id: record
        for record in (
            source.write(f"E{n % 3}", f"f{n}.bin", io.BytesIO(b"%d" % n * 100), {"n": n})
            for n in range(25)
        )
    }
    source.close()
    monkeypatch.setenv("LOCAL_STORAGE_PATH", str(tmp_path / "store"))
    monkeypatch.setenv("STATE_PATH", str(tmp_path / "state"))
    monkeypatch.setenv("DELTA_BASE_PATH", str(tmp_path / "delta"))

    assert main(["migrate", "--from", "local", "--to", "delta"]) == 0
    assert main(["migrate", "--from", "local", "--to", "delta"]) == 0  # copies nothing
    back = ["migrate", "--from", "delta", "--to", "local", "--target-dir", str(tmp_path / "back"),
            "--state-dir", str(tmp_path / "back_state")]  # fmt: skip
    assert main(back) == 0
    output = capsys.readouterr().out

    assert "copied: 25 " in output and "skipped (already there): 25" in output
    delta = create_backend(settings_from_env({
        "STORAGE_BACKEND": "delta", "DELTA_BASE_PATH": str(tmp_path / "delta"),
        "STATE_PATH": str(tmp_path / "state"),
    }))  # fmt: skip
    restored = LocalBackend(tmp_path / "back", tmp_path / "back_state")
    try:
        for backend in (delta, restored):
            records = [r for e in backend.engagements() for r in backend.list(e).items]
            assert {r.id: r.model_dump(exclude={"volume_path"}) for r in records} == {
                i: r.model_dump(exclude={"volume_path"}) for i, r in written.items()
            }
        for record in restored.list("E1").items:
            with restored.open(record) as stream:
                assert stream.read() == b"%d" % json.loads(record.metadata_json or "{}")["n"] * 100
    finally:
        delta.close()
        restored.close()


def test_the_same_backend_on_both_sides_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--from", "local", "--to", "local"]) == 2
    assert "same backend" in capsys.readouterr().err


def kmflow_named_tree(root: Path) -> str:
    """A bare tree whose files are named like a kmflow store's, one id appearing twice."""
    evidence_id = "0123456789abcdef0123456789abcdef"
    (root / "E1" / "sub").mkdir(parents=True)
    (root / "E1" / f"{evidence_id}_report.pdf").write_bytes(b"first")
    (root / "E1" / "sub" / f"{evidence_id}_report.pdf").write_bytes(b"second, different")
    return evidence_id


def test_a_store_without_its_index_is_not_guessed_to_be_a_bare_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kmflow_named_tree(tmp_path / "store")
    monkeypatch.setenv("LOCAL_STORAGE_PATH", str(tmp_path / "store"))
    monkeypatch.setenv("STATE_PATH", str(tmp_path / "wrong_state"))
    monkeypatch.setenv("DELTA_BASE_PATH", str(tmp_path / "delta"))

    assert main(["migrate", "--from", "local", "--to", "delta"]) == 2
    assert "--state-dir" in capsys.readouterr().err
    assert not (tmp_path / "delta").exists()


def test_an_id_repeated_with_other_bytes_is_refused_and_the_first_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    evidence_id = kmflow_named_tree(tmp_path / "store")
    monkeypatch.setenv("LOCAL_STORAGE_PATH", str(tmp_path / "store"))
    monkeypatch.setenv("STATE_PATH", str(tmp_path / "state"))
    monkeypatch.setenv("DELTA_BASE_PATH", str(tmp_path / "delta"))

    code = main(["migrate", "--from", "local", "--to", "delta", "--bare", "--workers", "1"])

    output = capsys.readouterr().out
    assert code == 1
    assert "copied: 1 " in output and "failed: 1" in output
    delta = create_backend(settings_from_env({
        "STORAGE_BACKEND": "delta", "DELTA_BASE_PATH": str(tmp_path / "delta"),
        "STATE_PATH": str(tmp_path / "state"),
    }))  # fmt: skip
    try:
        [record] = delta.list("E1").items
        assert record.id == evidence_id
        with delta.open(record) as stream:
            assert stream.read() == b"first"
    finally:
        delta.close()


def test_a_dry_run_creates_nothing_in_a_new_local_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = LocalBackend(tmp_path / "store", tmp_path / "state")
    source.write("E1", "a.txt", io.BytesIO(b"x"))
    source.close()
    monkeypatch.setenv("LOCAL_STORAGE_PATH", str(tmp_path / "store"))
    monkeypatch.setenv("STATE_PATH", str(tmp_path / "state"))
    monkeypatch.setenv("DELTA_BASE_PATH", str(tmp_path / "delta"))
    assert main(["migrate", "--from", "local", "--to", "delta"]) == 0

    new_store, new_state = str(tmp_path / "new"), str(tmp_path / "new_state")
    back = ["migrate", "--from", "delta", "--to", "local", "--dry-run",
            "--target-dir", new_store, "--state-dir", new_state]  # fmt: skip
    assert main(back) == 0

    assert "plan: copy 1 file(s)" in capsys.readouterr().out
    assert not (tmp_path / "new").exists() and not (tmp_path / "new_state").exists()


def test_files_deleted_behind_the_index_are_put_back_and_damaged_ones_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = LocalBackend(tmp_path / "store", tmp_path / "state")
    store.startup()
    records = [store.write("E1", f"f{n}.bin", io.BytesIO(b"%d" % n * 50)) for n in range(10)]
    store.close()
    monkeypatch.setenv("LOCAL_STORAGE_PATH", str(tmp_path / "store"))
    monkeypatch.setenv("STATE_PATH", str(tmp_path / "state"))
    monkeypatch.setenv("DELTA_BASE_PATH", str(tmp_path / "delta"))
    assert main(["migrate", "--from", "local", "--to", "delta"]) == 0
    files = [tmp_path / "store" / record.volume_path for record in records]
    for path in files[:3]:
        path.unlink()  # behind the index's back
    files[3].write_bytes(b"shorter")  # damaged: another size
    files[4].write_bytes(b"x" * records[4].size_bytes)  # damaged: same size, other bytes
    capsys.readouterr()

    assert main(["migrate", "--from", "delta", "--to", "local"]) == 1
    output = capsys.readouterr().out

    assert "copied: 0 " in output and "put back (file was missing): 3 " in output
    assert "skipped (already there): 6" in output and "failed: 1" in output
    assert f"{records[3].id} has 7 bytes, its record {records[3].size_bytes}" in output
    assert "in the target: 9 of the source's 10 records" in output
    for n, path in enumerate(files[:3]):
        assert path.read_bytes() == b"%d" % n * 50
    assert files[3].read_bytes() == b"shorter"  # never overwritten

    assert main(["migrate", "--from", "delta", "--to", "local", "--verify"]) == 1
    verified = capsys.readouterr().out

    assert "skipped (already there): 8" in verified and "failed: 2" in verified
    assert f"the target's file of {records[4].id} does not hash to its record" in verified
    assert files[4].read_bytes() == b"x" * records[4].size_bytes


def test_a_rollback_into_a_new_directory_through_another_stores_index_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The mistake that used to report every record "skipped" and copy nothing."""
    store = LocalBackend(tmp_path / "store", tmp_path / "state")
    store.startup()
    store.write("E1", "a.txt", io.BytesIO(b"a"))
    store.close()
    monkeypatch.setenv("LOCAL_STORAGE_PATH", str(tmp_path / "store"))
    monkeypatch.setenv("STATE_PATH", str(tmp_path / "state"))  # set, so used as it is
    monkeypatch.setenv("DELTA_BASE_PATH", str(tmp_path / "delta"))
    assert main(["migrate", "--from", "local", "--to", "delta"]) == 0
    capsys.readouterr()

    code = main(
        ["migrate", "--from", "delta", "--to", "local", "--target-dir", str(tmp_path / "new")]
    )

    error = capsys.readouterr().err
    assert code == 2
    assert f"the index at {tmp_path / 'state'} lists 1 records" in error
    assert str(tmp_path / "new") in error and "--state-dir" in error
    assert not (tmp_path / "new").exists()


def test_tombstones_holds_and_the_audit_trail_move_with_the_evidence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = LocalBackend(tmp_path / "store", tmp_path / "state")
    records = [source.write("E1", f"f{n}.txt", io.BytesIO(b"%d" % n)) for n in range(3)]
    held = source.write("E2", "held.txt", io.BytesIO(b"held"))
    for record in [*records, held]:
        source.audit.record(audit_event("analyst", "upload", record.engagement_id,
                                        evidence_id=record.id))  # fmt: skip
    first = source.withdraw("E1", records[0].id, "privileged", "analyst")
    hold = source.place_hold("E2", "dispute", "lead")
    source.close()
    monkeypatch.setenv("LOCAL_STORAGE_PATH", str(tmp_path / "store"))
    monkeypatch.setenv("STATE_PATH", str(tmp_path / "state"))
    monkeypatch.setenv("DELTA_BASE_PATH", str(tmp_path / "delta"))
    delta_env = {"STORAGE_BACKEND": "delta", "DELTA_BASE_PATH": str(tmp_path / "delta"),
                 "STATE_PATH": str(tmp_path / "state")}  # fmt: skip

    assert main(["migrate", "--from", "local", "--to", "delta"]) == 0
    assert "withdrawn: 1 of the source's 1 tombstones" in capsys.readouterr().out
    source = LocalBackend(tmp_path / "store", tmp_path / "state")
    second = source.withdraw("E1", records[1].id, "wrong engagement", "analyst")  # after it
    trail = {e: list(all_events(source, e)) for e in ("E1", "E2")}
    source.close()
    assert main(["migrate", "--from", "local", "--to", "delta"]) == 0  # the rerun carries it
    output = capsys.readouterr().out
    assert "withdrawn: 2 of the source's 2 tombstones" in output
    assert "audit events copied: 0; legal holds copied: 0" in output  # nothing twice
    back = ["migrate", "--from", "delta", "--to", "local", "--target-dir", str(tmp_path / "back"),
            "--state-dir", str(tmp_path / "back_state")]  # fmt: skip
    assert main(back) == 0

    delta = create_backend(settings_from_env(delta_env))
    restored = LocalBackend(tmp_path / "back", tmp_path / "back_state")
    try:
        for target in (delta, restored):
            for tombstone in (first, second):
                got = target.get("E1", tombstone.id, include_withdrawn=True)
                assert got.model_dump(exclude={"volume_path"}) == tombstone.model_dump(
                    exclude={"volume_path"}
                )
                assert target.stored_sizes([got])[got.id] is None  # no bytes came along
            assert [r.id for r in target.list("E1").items] == [records[2].id]
            assert target.hold("E2") == hold
            assert {e: list(all_events(target, e)) for e in ("E1", "E2")} == trail
    finally:
        delta.close()
        restored.close()
