"""The runbook's (docs/databricks-upgrade-runbook.md) migration steps, run as an operator runs
them (the scripts, in subprocesses), against MiniLake on 127.0.0.1 or the workspace named by
DATABRICKS_HOST / DATABRICKS_TOKEN."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.storage.databricks.sql import StatementRunner
from app.storage.local.backend import LocalBackend
from tests.conftest import API_KEY, AUTH
from tests.datalake.inspect import table_rows, volume_files
from tests.datalake.workspace import DatabricksWorkspace
from tests.live_server import LiveServer

REPO = Path(__file__).resolve().parents[2]
FILES, ENGAGEMENTS = 300, 5


@pytest.fixture
def env(databricks_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {
        **databricks_env,
        "LOCAL_STORAGE_PATH": str(tmp_path / "evidence_store"),
        "STATE_PATH": str(tmp_path / "kmflow_state"),
        "API_KEYS": API_KEY,
    }


Seeded = dict[str, tuple[bytes, dict[str, object]]]  # id -> (content, client metadata)


def seed_local_store(env: dict[str, str], files: int = FILES, size: int = 1024) -> Seeded:
    """A local store as the service leaves it: files, index rows, client metadata."""
    backend = LocalBackend(Path(env["LOCAL_STORAGE_PATH"]), Path(env["STATE_PATH"]))
    seeded: Seeded = {}
    try:
        for n in range(files):
            content = hashlib.sha256(b"%d" % n).digest() * (size // 32)
            metadata: dict[str, object] = {"n": n, "custodian": f"person {n % 3}"}
            record = backend.write(
                f"ENG-{n % ENGAGEMENTS}", f"doc {n}.pdf", io.BytesIO(content), metadata
            )
            seeded[record.id] = (content, metadata)
    finally:
        backend.close()
    return seeded


def script(name: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / name), *args],
        env={**os.environ, **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_script(name: str, *args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    process = script(name, *args, env=env, cwd=cwd)
    out, err = process.communicate(timeout=300)
    return process.returncode, out + err


def to_databricks(env: dict[str, str], cwd: Path, *extra: str) -> tuple[int, str]:
    return run_script(
        "migrate_to_databricks.py",
        "--source-dir", env["LOCAL_STORAGE_PATH"],
        "--catalog", env["DATABRICKS_CATALOG"],
        "--schema", env["DATABRICKS_SCHEMA"],
        "--volume", env["DATABRICKS_VOLUME"],
        *extra, env=env, cwd=cwd,
    )  # fmt: skip


def assert_table_matches(
    workspace: DatabricksWorkspace, env: dict[str, str], seeded: Seeded
) -> None:
    rows = table_rows(workspace, env)
    assert [row[0] for row in rows] == sorted(seeded)  # every id, each exactly once
    for evidence_id, content_hash, size, metadata_json in rows:
        content, metadata = seeded[str(evidence_id)]
        assert content_hash == hashlib.sha256(content).hexdigest()
        assert int(str(size)) == len(content)
        assert json.loads(str(metadata_json)) == metadata


def test_local_store_to_databricks_dry_run_then_copy_then_copy_nothing(
    env: dict[str, str], databricks_workspace: DatabricksWorkspace, tmp_path: Path
) -> None:
    seeded = seed_local_store(env)

    code, dry = to_databricks(env, tmp_path, "--dry-run")
    assert code == 0, dry
    assert f"plan: copy {FILES} file(s)" in dry
    assert volume_files(databricks_workspace, env) == []
    assert table_rows(databricks_workspace, env) == []

    code, first = to_databricks(env, tmp_path)
    assert code == 0, first
    assert f"copied: {FILES} " in first and "failed: 0" in first
    assert len(volume_files(databricks_workspace, env)) == FILES
    assert_table_matches(databricks_workspace, env, seeded)

    code, second = to_databricks(env, tmp_path)
    assert code == 0, second
    assert "copied: 0 " in second and f"skipped (already there): {FILES}" in second
    assert len(volume_files(databricks_workspace, env)) == FILES
    assert_table_matches(databricks_workspace, env, seeded)


def test_volume_files_deleted_behind_the_table_are_put_back_by_a_rerun(
    env: dict[str, str], databricks_workspace: DatabricksWorkspace, tmp_path: Path
) -> None:
    seeded = seed_local_store(env, files=20)
    assert to_databricks(env, tmp_path)[0] == 0
    client = databricks_workspace.client()
    deleted = volume_files(databricks_workspace, env)[:4]
    for path in deleted:
        client.files.delete(path)

    code, output = to_databricks(env, tmp_path)

    assert code == 0, output
    assert "copied: 0 " in output and "put back (file was missing): 4 " in output
    assert "skipped (already there): 16" in output
    assert "in the target: 20 of the source's 20 records" in output
    for path in deleted:
        evidence_id = path.rsplit("/", 1)[1].split("_", 1)[0]
        downloaded = client.files.download(path).contents
        assert downloaded is not None and downloaded.read() == seeded[evidence_id][0]
    assert_table_matches(databricks_workspace, env, seeded)  # no row added twice


def test_a_migration_killed_halfway_completes_on_rerun_without_duplicates(
    env: dict[str, str], databricks_workspace: DatabricksWorkspace, tmp_path: Path
) -> None:
    seeded = seed_local_store(env, size=64 * 1024)
    if databricks_workspace.bridge is not None:  # slow MiniLake down, so the kill lands midway
        databricks_workspace.bridge.add_fault(
            r"^/api/2\.0/fs/files/Volumes/", None, method="PUT", times=FILES, delay=0.02
        )
    process = script(
        "migrate_to_databricks.py", "--source-dir", env["LOCAL_STORAGE_PATH"],
        "--workers", "2", env=env, cwd=tmp_path,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while len(volume_files(databricks_workspace, env)) < FILES // 4:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    if databricks_workspace.bridge is not None:
        databricks_workspace.bridge.faults.clear()
    copied_before_kill = len(volume_files(databricks_workspace, env))
    assert process.returncode == -signal.SIGKILL
    assert copied_before_kill < FILES

    code, output = to_databricks(env, tmp_path)

    assert code == 0, output
    files = volume_files(databricks_workspace, env)
    assert len(files) == FILES
    assert_table_matches(databricks_workspace, env, seeded)
    client = databricks_workspace.client()
    for path in files:
        evidence_id = path.rsplit("/", 1)[1].split("_", 1)[0]
        downloaded = client.files.download(path).contents
        assert downloaded is not None
        assert downloaded.read() == seeded[evidence_id][0]


def test_reverse_migration_rebuilds_an_empty_local_store_byte_for_byte(
    env: dict[str, str], databricks_workspace: DatabricksWorkspace, tmp_path: Path
) -> None:
    seeded = seed_local_store(env, files=60)
    assert to_databricks(env, tmp_path)[0] == 0
    restored_env = {
        **env,
        "LOCAL_STORAGE_PATH": str(tmp_path / "restored_store"),
        "STATE_PATH": str(tmp_path / "restored_state"),
    }

    code, output = run_script(
        "migrate_from_databricks.py",
        "--catalog", env["DATABRICKS_CATALOG"], "--schema", env["DATABRICKS_SCHEMA"],
        "--volume", env["DATABRICKS_VOLUME"],
        "--target-dir", restored_env["LOCAL_STORAGE_PATH"],
        "--state-dir", restored_env["STATE_PATH"],
        env=restored_env, cwd=tmp_path,
    )  # fmt: skip

    assert code == 0, output
    restored = LocalBackend(tmp_path / "restored_store", tmp_path / "restored_state")
    try:
        records = [
            record
            for engagement in restored.engagements()
            for record in restored.list(engagement, limit=1000).items
        ]
        assert sorted(record.id for record in records) == sorted(seeded)
        for record in records:
            with restored.open(record) as stream:
                assert stream.read() == seeded[record.id][0]
            assert json.loads(record.metadata_json or "null") == seeded[record.id][1]
    finally:
        restored.close()


def test_backfill_restores_exactly_the_deleted_rows(
    env: dict[str, str], databricks_workspace: DatabricksWorkspace, tmp_path: Path
) -> None:
    seeded = seed_local_store(env, files=40)
    assert to_databricks(env, tmp_path)[0] == 0
    deleted = sorted(seeded)[:7]
    runner = StatementRunner(databricks_workspace.client(), databricks_workspace.warehouse_id, 30)
    table = f"`{env['DATABRICKS_CATALOG']}`.`{env['DATABRICKS_SCHEMA']}`.`evidence_metadata`"
    markers = ", ".join(f":id_{n}" for n in range(len(deleted)))
    runner.run(
        f"DELETE FROM {table} WHERE id IN ({markers})",  # noqa: S608
        {f"id_{n}": evidence_id for n, evidence_id in enumerate(deleted)},
    )
    assert len(table_rows(databricks_workspace, env)) == 40 - len(deleted)

    stray = (
        f"/Volumes/{env['DATABRICKS_CATALOG']}/{env['DATABRICKS_SCHEMA']}/"
        f"{env['DATABRICKS_VOLUME']}/evidence_store/stray.txt"
    )
    databricks_workspace.client().files.upload(stray, io.BytesIO(b"not in an engagement"))

    code, output = to_databricks(env, tmp_path, "--backfill-metadata")

    assert code == 1, output  # the stray file is reported, the rest indexed
    assert "7 row(s) added" in output and f"FAILED {stray}: InvalidInput" in output
    rows = {str(row[0]): row for row in table_rows(databricks_workspace, env)}
    assert sorted(rows) == sorted(seeded)
    for evidence_id in deleted:
        content = seeded[evidence_id][0]
        assert rows[evidence_id][1] == hashlib.sha256(content).hexdigest()
        assert int(str(rows[evidence_id][2])) == len(content)
    databricks_workspace.client().files.delete(stray)
    code, again = to_databricks(env, tmp_path, "--backfill-metadata")
    assert code == 0 and "0 row(s) added" in again


def test_a_bare_directory_migrates_once(
    env: dict[str, str], databricks_workspace: DatabricksWorkspace, tmp_path: Path
) -> None:
    tree = tmp_path / "bare"
    for engagement, names in {"ACME-1": ["a.pdf", "b.xlsx"], "ACME-2": ["c.msg"]}.items():
        (tree / engagement).mkdir(parents=True)
        for name in names:
            (tree / engagement / name).write_bytes(f"{engagement}/{name}".encode())
    bare_env = {**env, "STATE_PATH": str(tmp_path / "no_index_here")}

    first = to_databricks({**bare_env, "LOCAL_STORAGE_PATH": str(tree)}, tmp_path)
    second = to_databricks({**bare_env, "LOCAL_STORAGE_PATH": str(tree)}, tmp_path)

    assert first[0] == 0 and "copied: 3 " in first[1], first[1]
    assert "bare <engagement_id>/<file> tree" in first[1]
    assert second[0] == 0 and "copied: 0 " in second[1], second[1]
    assert len(table_rows(databricks_workspace, env)) == 3


def test_rollback_is_one_variable_the_local_evidence_is_served_again(
    env: dict[str, str], tmp_path: Path
) -> None:
    seeded = seed_local_store(env, files=10)
    assert to_databricks(env, tmp_path)[0] == 0
    on_databricks = LiveServer(env, cwd=tmp_path)
    try:
        health = httpx.get(f"{on_databricks.url}/api/v1/health").json()
    finally:
        on_databricks.stop()
    assert health["storage"] == "databricks"

    rolled_back = LiveServer({**env, "STORAGE_BACKEND": "local"}, cwd=tmp_path)
    try:
        with httpx.Client(base_url=rolled_back.url, headers=AUTH) as http:
            health = http.get("/api/v1/health").json()
            listed = [
                item
                for n in range(ENGAGEMENTS)
                for item in http.get(f"/api/v1/evidence/ENG-{n}").json()["items"]
            ]
            first = listed[0]
            content = http.get(f"/api/v1/evidence/{first['engagement_id']}/{first['id']}/content")
    finally:
        rolled_back.stop()

    assert health["storage"] == "local"
    assert sorted(item["id"] for item in listed) == sorted(seeded)
    assert content.content == seeded[first["id"]][0]


def served_evidence(url: str, engagements: list[str]) -> dict[str, tuple[object, bytes]]:
    """Everything a client can read back: each record as listed and as fetched, and its bytes."""
    served: dict[str, tuple[object, bytes]] = {}
    with httpx.Client(base_url=url, headers=AUTH) as http:
        for engagement in engagements:
            listing = http.get(f"/api/v1/evidence/{engagement}", params={"limit": 1000}).json()
            assert listing["next_cursor"] is None
            for item in listing["items"]:
                path = f"/api/v1/evidence/{engagement}/{item['id']}"
                assert http.get(path).json() == item
                content = http.get(f"{path}/content")
                assert content.status_code == 200
                served[item["id"]] = (item, content.content)
    return served


def test_round_trip_to_databricks_and_back_into_a_new_directory_with_default_settings(
    databricks_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runbook as written, from a local store on defaults (./evidence_store, ./kmflow_state)
    to Databricks and rolled back into a new directory: the service then serves the same
    evidence. Rolling back into the original directory changes nothing."""
    for variable in ("LOCAL_STORAGE_PATH", "STATE_PATH", "STORAGE_BACKEND"):
        monkeypatch.delenv(variable, raising=False)
    env = {**databricks_env, "API_KEYS": API_KEY}
    coordinates = [
        "--catalog", env["DATABRICKS_CATALOG"], "--schema", env["DATABRICKS_SCHEMA"],
        "--volume", env["DATABRICKS_VOLUME"],
    ]  # fmt: skip
    engagements = ["ACME-1", "ACME-2", "GLOBEX-7"]
    original = LiveServer({**env, "STORAGE_BACKEND": "local"}, cwd=tmp_path)
    try:
        with httpx.Client(base_url=original.url, headers=AUTH) as http:
            for n in range(24):
                content = b"evidence %d " % (n % 20) * (n + 1) * 40  # a few duplicates
                response = http.post(
                    "/api/v1/evidence/upload",
                    data={
                        "engagement_id": engagements[n % 3],
                        "metadata": json.dumps({"n": n, "custodian": f"person {n % 4}"}),
                    },
                    files={"file": (f"exhibit {n} (final).pdf", content)},
                )
                assert response.status_code == 201, response.text
        before = served_evidence(original.url, engagements)
    finally:
        original.stop()
    assert len(before) == 24

    code, output = run_script(
        "migrate_to_databricks.py", "--source-dir", "./evidence_store", *coordinates,
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, output

    def rollback_into(target_dir: str) -> str:  # the runbook's command, as written
        code, output = run_script(
            "migrate_from_databricks.py", *coordinates, "--target-dir", target_dir,
            env=env, cwd=tmp_path,
        )  # fmt: skip
        assert code == 0, output
        return output

    output = rollback_into("./evidence_store_rollback")
    assert "copied: 24 " in output and "in the target: 24 of the source's 24 records" in output

    rolled_back = LiveServer(
        {**env, "STORAGE_BACKEND": "local", "LOCAL_STORAGE_PATH": "./evidence_store_rollback"},
        cwd=tmp_path,
    )
    try:
        after = served_evidence(rolled_back.url, engagements)
    finally:
        rolled_back.stop()
    assert after == before  # ids, bytes, names, times, hashes, metadata: record for record
    assert (tmp_path / "evidence_store_rollback.kmflow_state" / "index.sqlite3").is_file()

    original_store = sorted(
        (p, p.lstat().st_mtime_ns) for p in (tmp_path / "evidence_store").rglob("*")
    )
    output = rollback_into("./evidence_store")
    assert "copied: 0 " in output and "put back (file was missing): 0 " in output
    assert "skipped (already there): 24" in output
    assert (
        sorted((p, p.lstat().st_mtime_ns) for p in (tmp_path / "evidence_store").rglob("*"))
        == original_store
    )
