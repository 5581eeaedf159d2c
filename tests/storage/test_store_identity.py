"""A local store and its index know each other: a server or migration never serves one store
through another store's index, and refuses before it changes anything on disk."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app.storage.local import store_identity
from app.storage.local.backend import LocalBackend
from app.storage.local.store_identity import ForeignIndex

REPO = Path(__file__).resolve().parents[2]


def new_store(tmp_path: Path, name: str, files: int = 3) -> tuple[Path, Path]:
    """A store as the service leaves it (started once, so marked and bound), with files."""
    store, state = tmp_path / name, tmp_path / f"{name}.state"
    backend = LocalBackend(store, state)
    backend.startup()
    for n in range(files):
        backend.write("ENG-1", f"{name}-{n}.txt", io.BytesIO(b"%s %d" % (name.encode(), n)))
    backend.close()
    return store, state


def disk_state(root: Path) -> dict[str, object]:
    """Every entry under `root`: links by target, files by content and mtime."""
    seen: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            seen[relative] = ("link", os.readlink(path))
        elif path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            seen[relative] = ("file", digest, path.stat().st_mtime_ns)
        else:
            seen[relative] = ("dir",)
    return seen


def test_a_started_store_is_marked_by_a_link_and_its_index_names_the_same_identity(
    tmp_path: Path,
) -> None:
    store, state = new_store(tmp_path, "evidence_store")

    marker = store_identity.read_marker(store)
    with sqlite3.connect(state / "index.sqlite3") as db:
        (identity, store_path), *_ = db.execute("SELECT identity, store_path FROM store_identity")

    assert marker is not None and identity == marker and store_path == str(store)
    assert os.readlink(store / ".kmflow-store") == f"kmflow-store:{marker}"
    # `find <store> -type f` (the runbook's inventory) still lists only the evidence files.
    assert sorted(p.name.split("_", 1)[1] for p in store.rglob("*") if p.is_file()) == [
        "evidence_store-0.txt",
        "evidence_store-1.txt",
        "evidence_store-2.txt",
    ]


def test_an_index_is_refused_for_a_new_directory_and_nothing_is_created(tmp_path: Path) -> None:
    store, state = new_store(tmp_path, "evidence_store")
    before = disk_state(tmp_path)

    with pytest.raises(ForeignIndex) as refused:
        LocalBackend(tmp_path / "elsewhere", state)

    message = str(refused.value)
    assert f"the index at {state} lists 3 records (of the store at {store})" in message
    assert str(tmp_path / "elsewhere") in message and "STATE_PATH" in message
    assert "\n" not in message
    assert disk_state(tmp_path) == before


def test_two_marked_stores_refuse_each_others_index(tmp_path: Path) -> None:
    first, first_state = new_store(tmp_path, "first")
    second, second_state = new_store(tmp_path, "second")
    before = disk_state(tmp_path)

    with pytest.raises(ForeignIndex, match=f"belongs to the store at {second}, not to {first}"):
        LocalBackend(first, second_state)
    with pytest.raises(ForeignIndex, match=f"belongs to the store at {first}, not to {second}"):
        LocalBackend(second, first_state)
    assert disk_state(tmp_path) == before


def test_a_store_with_files_is_refused_an_empty_index(tmp_path: Path) -> None:
    store, _ = new_store(tmp_path, "evidence_store")
    before = disk_state(tmp_path)

    with pytest.raises(ForeignIndex, match="holds kmflow evidence files but the index at"):
        LocalBackend(store, tmp_path / "fresh_state")
    assert disk_state(tmp_path) == before


def test_a_store_and_index_from_before_identities_are_adopted(tmp_path: Path) -> None:
    store, state = new_store(tmp_path, "evidence_store")
    (store / ".kmflow-store").unlink()
    with sqlite3.connect(state / "index.sqlite3") as db:
        db.execute("DROP TABLE store_identity")

    backend = LocalBackend(store, state)
    backend.startup()
    try:
        assert len(backend.list("ENG-1").items) == 3
        marker = store_identity.read_marker(store)
        assert marker is not None
        assert backend.index.bind("another", "/elsewhere").identity == marker
    finally:
        backend.close()


def test_a_marker_lost_from_a_bound_store_is_put_back_with_the_index_identity(
    tmp_path: Path,
) -> None:
    store, state = new_store(tmp_path, "evidence_store")
    identity = store_identity.read_marker(store)
    (store / ".kmflow-store").unlink()  # e.g. a copy that skipped links

    backend = LocalBackend(store, state)
    backend.startup()
    backend.close()

    assert store_identity.read_marker(store) == identity


def test_the_first_marker_wins_a_race_between_workers(tmp_path: Path) -> None:
    assert store_identity.mark(tmp_path, "first") == "first"
    assert store_identity.mark(tmp_path, "second") == "first"


def test_a_plain_file_in_the_markers_place_is_refused_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / ".kmflow-store").write_text("someone else's")

    with pytest.raises(store_identity.StorageMisconfigured, match="not kmflow's store marker"):
        LocalBackend(tmp_path / "store", tmp_path / "state")
    assert (tmp_path / "store" / ".kmflow-store").read_text() == "someone else's"


def test_serve_with_another_stores_index_exits_with_one_line_and_changes_nothing(
    tmp_path: Path,
) -> None:
    store, state = new_store(tmp_path, "evidence_store")
    before = disk_state(tmp_path)
    env = {
        **os.environ,
        "STORAGE_BACKEND": "local",
        "LOCAL_STORAGE_PATH": str(tmp_path / "rollback_store"),
        "STATE_PATH": str(state),
    }

    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "1"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"kmflow: the index at {state} lists 3 records")
    assert str(store) in line and str(tmp_path / "rollback_store") in line
    assert disk_state(tmp_path) == before
