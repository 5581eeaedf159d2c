"""The Databricks backend against a real SDK peer: MiniLake on 127.0.0.1 by default, or the
workspace named by DATABRICKS_HOST / DATABRICKS_TOKEN (the runbook's staging check:
`pytest tests/datalake/test_databricks_backend.py -v`).

Tests that need to break the peer (stop the warehouse, deny a privilege) run on MiniLake only.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from databricks.sdk.errors import NotFound
from fastapi.testclient import TestClient

from app.main import create_app
from app.storage.databricks.backend import DatabricksBackend
from app.storage.databricks.backfill import backfill_metadata
from app.storage.databricks.sql import (
    FIELD_SEPARATOR,
    StatementFailed,
    StatementRunner,
    WarehouseUnavailable,
    create_table_statement,
    quote_name,
)
from app.storage.databricks.volume import UPLOAD_PARALLELISM, UPLOAD_PART_BYTES
from app.storage.registry import create_backend
from tests.conftest import AUTH, settings_from_env, stored_record
from tests.datalake.inspect import table_rows
from tests.datalake.minilake_bridge import METADATA_MERGE, MiniLakeBridge
from tests.datalake.workspace import DatabricksWorkspace
from tests.live_server import LiveServer
from tests.multipart import multipart_body
from tests.transfer import round_trip

MIB = 1024 * 1024


def upload(client: TestClient | httpx.Client, engagement: str, name: str, content: bytes,
           metadata: dict[str, object] | None = None) -> httpx.Response:  # fmt: skip
    fields = {"engagement_id": engagement}
    if metadata is not None:
        fields["metadata"] = json.dumps(metadata)
    body, content_type = multipart_body(fields, name, content)
    return client.post(
        "/api/v1/evidence/upload", content=body, headers={"Content-Type": content_type}
    )


def test_upload_lands_in_the_volume_and_the_table(
    api: TestClient, env: dict[str, str], databricks_workspace: DatabricksWorkspace
) -> None:
    content = b"general ledger extract\n" * 5000
    record = upload(api, "ENG-DBX", "gl.csv", content, {"system": "SAP"}).json()

    volume = f"/Volumes/{env['DATABRICKS_CATALOG']}/{env['DATABRICKS_SCHEMA']}/raw_evidence"
    assert record["volume_path"] == f"{volume}/evidence_store/ENG-DBX/{record['id']}_gl.csv"
    client = databricks_workspace.client()
    assert client.files.get_metadata(record["volume_path"]).content_length == len(content)
    rows = table_rows(databricks_workspace, env, "ENG-DBX")
    assert [[row[0], row[1], int(str(row[2])), row[3]] for row in rows] == [
        [record["id"], hashlib.sha256(content).hexdigest(), len(content), '{"system":"SAP"}']
    ]
    assert api.get("/api/v1/evidence/ENG-DBX").json()["items"] == [stored_record(record)]
    assert api.get(f"/api/v1/evidence/ENG-DBX/{record['id']}/content").content == content
    health = api.get("/api/v1/health").json()
    assert health["storage"] == "databricks"
    assert health["details"]["volume_reachable"] is True
    assert health["details"]["warehouse_reachable"] is True
    assert health["details"]["pending_metadata_rows"] == 0


def test_missing_volume_is_named_with_the_sql_to_create_it_and_nothing_is_written(
    env: dict[str, str], databricks_workspace: DatabricksWorkspace
) -> None:
    missing = {**env, "DATABRICKS_VOLUME": "no_such_volume"}
    volume = f"{env['DATABRICKS_CATALOG']}.{env['DATABRICKS_SCHEMA']}.no_such_volume"

    with TestClient(create_app(settings_from_env(missing))) as client:
        client.headers.update(AUTH)
        response = upload(client, "ENG-MISSING", "a.txt", b"evidence")
        health = client.get("/api/v1/health")

    assert response.status_code == 503
    assert response.json()["error"] == "storage_misconfigured"
    assert volume in response.json()["detail"]
    assert f"CREATE VOLUME IF NOT EXISTS {volume}" in response.json()["detail"]
    assert health.status_code == 503
    assert health.json()["details"]["volume_reachable"] is False
    assert health.json()["details"]["pending_metadata_rows"] == 0
    assert table_rows(databricks_workspace, env, "ENG-MISSING") == []


def test_missing_write_privilege_names_the_grant(
    api: TestClient, env: dict[str, str], minilake: DatabricksWorkspace
) -> None:
    volume = f"{env['DATABRICKS_CATALOG']}.{env['DATABRICKS_SCHEMA']}.raw_evidence"
    assert minilake.bridge is not None
    minilake.bridge.deny_writes.add(volume)
    try:
        response = upload(api, "ENG-DENIED", "a.txt", b"evidence")
    finally:
        minilake.bridge.deny_writes.discard(volume)

    assert response.status_code == 503
    assert f"GRANT WRITE VOLUME ON VOLUME {volume}" in response.json()["detail"]
    assert api.get("/api/v1/evidence/ENG-DENIED").json()["items"] == []


def test_rows_queued_while_the_warehouse_is_stopped_arrive_once_after_a_restart(
    env: dict[str, str], minilake: DatabricksWorkspace, tmp_path: Path
) -> None:
    client = minilake.client()
    uploads = {f"memo-{n}.txt": f"memo {n}".encode() for n in range(3)}
    table = quote_name(env["DATABRICKS_CATALOG"], env["DATABRICKS_SCHEMA"], "evidence_metadata")
    StatementRunner(client, minilake.warehouse_id, 30).run(create_table_statement(table))
    client.warehouses.stop(minilake.warehouse_id).result()
    try:
        server = LiveServer(env, cwd=tmp_path)
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
            records = [
                upload(http, "ENG-QUEUE", name, content, {"n": name}).json()
                for name, content in uploads.items()
            ]
            health = http.get("/api/v1/health").json()
            listing = http.get("/api/v1/evidence/ENG-QUEUE")
            queued = [http.get(f"/api/v1/evidence/ENG-QUEUE/{r['id']}") for r in records]
        server.stop()
    finally:
        client.warehouses.start(minilake.warehouse_id).result()

    assert all("id" in record for record in records), records
    assert health["status"] == "ok"  # the Volume is fine; only metadata waits
    assert health["details"]["pending_metadata_rows"] == 3
    assert health["details"]["warehouse_reachable"] is False
    # The table cannot be read, so a listing would be incomplete: it says so instead.
    assert listing.status_code == 503
    assert listing.json()["error"] == "storage_unavailable"
    assert [response.json() for response in queued] == [stored_record(r) for r in records]
    # Stored, but earlier copies could not be looked up with the warehouse down: null, not [].
    assert [record["duplicate_of"] for record in records] == [None, None, None]

    restarted = LiveServer(env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        pending = -1
        while time.monotonic() < deadline:
            health = httpx.get(f"{restarted.url}/api/v1/health").json()
            pending = health["details"]["pending_metadata_rows"]
            if pending == 0:
                break
            time.sleep(0.2)
        log = restarted.log() + server.log()
    finally:
        restarted.stop()

    assert pending == 0
    rows = table_rows(minilake, env, "ENG-QUEUE")
    assert sorted(row[0] for row in rows) == sorted(record["id"] for record in records)
    assert sorted(json.loads(str(row[3]))["n"] for row in rows) == sorted(uploads)
    assert minilake.token not in log


def test_statement_failed_with_http_200_is_an_error(
    databricks_workspace: DatabricksWorkspace,
) -> None:
    runner = StatementRunner(databricks_workspace.client(), databricks_workspace.warehouse_id, 10)
    with pytest.raises(StatementFailed, match="FAILED"):
        runner.run("SELECT no_such_column FROM no_such_table_for_kmflow")


def test_a_statement_still_pending_is_polled_then_given_up_and_cancelled(
    minilake: DatabricksWorkspace,
) -> None:
    client = minilake.client()
    runner = StatementRunner(client, minilake.warehouse_id, timeout=1.5)
    client.warehouses.stop(minilake.warehouse_id).result()
    started = time.monotonic()
    try:
        with pytest.raises(WarehouseUnavailable, match="still PENDING"):
            runner.run("SELECT 1")
    finally:
        client.warehouses.start(minilake.warehouse_id).result()
    assert 1.0 < time.monotonic() - started < 10
    assert runner.run("SELECT 1") in ([[1]], [["1"]])  # native (MiniLake) or text (Databricks)


def test_user_values_travel_as_parameters_never_in_sql_text(
    api: TestClient, minilake: DatabricksWorkspace
) -> None:
    assert minilake.bridge is not None
    marker = "x'); DROP TABLE evidence_metadata; --"
    before = len(minilake.bridge.statements)

    record = upload(api, "ENG-SQL", f"{marker}.txt", b"data", {"note": marker}).json()
    api.get("/api/v1/evidence/ENG-SQL")
    api.get(f"/api/v1/evidence/ENG-SQL/{record['id']}")

    sent = minilake.bridge.statements[before:]
    assert len(sent) >= 3
    for statement in sent:
        assert marker not in statement["statement"]
        assert "ENG-SQL" not in statement["statement"]
    assert any(marker in json.dumps(s.get("parameters")) for s in sent)
    assert api.get(f"/api/v1/evidence/ENG-SQL/{record['id']}").json()["file_name"] == (
        f"{marker}.txt"
    )


def test_throttling_and_unavailability_are_retried_by_the_sdk(
    api: TestClient, minilake: DatabricksWorkspace
) -> None:
    assert minilake.bridge is not None
    minilake.bridge.add_fault(r"^/api/2\.0/fs/files/Volumes/", 429, method="PUT", times=1)
    minilake.bridge.add_fault(r"^/api/2\.0/sql/statements$", 503, method="POST", times=2)

    response = upload(api, "ENG-RETRY", "a.txt", b"retried")

    assert response.status_code == 201, response.text
    assert api.get("/api/v1/health").json()["details"]["pending_metadata_rows"] == 0
    assert all(fault.times == 0 for fault in minilake.bridge.faults)
    minilake.bridge.faults.clear()


@pytest.mark.slow
def test_100_mib_upload_and_download_keep_server_memory_bounded(
    env: dict[str, str], tmp_path: Path
) -> None:
    server = LiveServer(env, cwd=tmp_path)
    try:
        transfer = round_trip(server, "ENG-BIG", 100 * MIB)
        log = server.log()
    finally:
        server.stop()

    assert transfer.record["size_bytes"] == 100 * MIB == transfer.downloaded_bytes
    assert transfer.record["content_hash"] == transfer.expected_hash == transfer.downloaded_hash
    # Idle, the SDK makes the server ~110 MiB; a buffered body would add the file's 100 MiB. A
    # multipart upload may hold its parts in flight (older SDKs do: 2 x 16 MiB), plus slack.
    parts_mib = UPLOAD_PART_BYTES * UPLOAD_PARALLELISM / MIB
    assert transfer.peak_mib - transfer.idle_peak_mib < parts_mib + 16, transfer
    assert env["DATABRICKS_TOKEN"] not in log


def merged_ids(bridge: MiniLakeBridge, since: int) -> list[str]:
    """Every evidence id sent in a MERGE statement after statement number `since`."""
    ids = []
    for statement in bridge.statements[since:]:
        if re.match(METADATA_MERGE, statement["statement"]):
            ids += [
                p["value"].split(FIELD_SEPARATOR)[0]
                for p in statement.get("parameters") or []
                if p["name"].startswith("row_")
            ]
    return ids


def test_no_row_is_merged_by_two_callers_at_once(
    env: dict[str, str], minilake: DatabricksWorkspace
) -> None:
    assert minilake.bridge is not None
    since = len(minilake.bridge.statements)
    backend = create_backend(settings_from_env({**env, "DATABRICKS_OUTBOX_RETRY_SECONDS": "0.01"}))
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            records = list(pool.map(
                lambda n: backend.write("ENG-RACE", f"{n}.txt", io.BytesIO(b"%d" % n)),
                range(80),
            ))  # fmt: skip
    finally:
        backend.close()

    sent = merged_ids(minilake.bridge, since)
    assert sorted(sent) == sorted(record.id for record in records)  # each exactly once


def test_the_delivery_thread_survives_an_unexpected_error(
    env: dict[str, str], minilake: DatabricksWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = minilake.client()
    backend = create_backend(settings_from_env({**env, "DATABRICKS_OUTBOX_RETRY_SECONDS": "0.1"}))
    try:
        client.warehouses.stop(minilake.warehouse_id).result()
        try:
            record = backend.write("ENG-SURVIVE", "a.txt", io.BytesIO(b"queued"))
        finally:
            client.warehouses.start(minilake.warehouse_id).result()
        real_deliver = backend.rows.deliver_outbox
        failures = iter([sqlite3.OperationalError("database is locked")])

        def deliver_failing_once() -> int:
            if (error := next(failures, None)) is not None:
                raise error
            return real_deliver()

        monkeypatch.setattr(backend.rows, "deliver_outbox", deliver_failing_once)
        backend._wake.set()  # now, not after the back-off the stopped warehouse caused
        deadline = time.monotonic() + 60
        while backend.pending.count(backend.client) and time.monotonic() < deadline:
            time.sleep(0.1)
        pending = backend.pending.count(backend.client)
    finally:
        backend.close()

    assert next(failures, None) is None  # the injected failure happened
    assert pending == 0
    assert [row[0] for row in table_rows(minilake, env, "ENG-SURVIVE")] == [record.id]


def test_an_upload_killed_before_its_201_leaves_nothing_after_restart(
    env: dict[str, str], databricks_workspace: DatabricksWorkspace, tmp_path: Path
) -> None:
    script = textwrap.dedent("""
        import io, os
        from app.settings import load_settings
        from app.storage.registry import create_backend
        backend = create_backend(load_settings())
        backend.outbox.queue = lambda *args, **kwargs: os._exit(9)  # dies mid-commit
        record = backend.write("ENG-KILLED", "a.txt", io.BytesIO(b"never acknowledged"))
    """)
    killed = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, cwd=tmp_path,
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert killed.returncode == 9, killed.stderr.decode()
    client = databricks_workspace.client()
    volume = f"/Volumes/{env['DATABRICKS_CATALOG']}/{env['DATABRICKS_SCHEMA']}/raw_evidence"
    [left] = client.files.list_directory_contents(f"{volume}/evidence_store/ENG-KILLED")

    restarted = create_backend(settings_from_env(env))
    try:
        intents = list(restarted._intents.directory.iterdir())
    finally:
        restarted.close()

    assert intents == []
    with pytest.raises(NotFound):
        client.files.get_metadata(str(left.path))


@pytest.mark.slow
def test_health_answers_while_every_request_thread_waits_on_the_warehouse(
    env: dict[str, str], minilake: DatabricksWorkspace, tmp_path: Path
) -> None:
    client = minilake.client()
    server = LiveServer(env, cwd=tmp_path)  # started with the warehouse running

    async def wave() -> tuple[int, int, list[int]]:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=120) as http:
            uploads = [
                asyncio.create_task(
                    http.post("/api/v1/evidence/upload", data={"engagement_id": "ENG-WAVE"},
                              files={"file": (f"{n}.txt", b"%d" % n)})
                )
                for n in range(45)  # more than the 40 request threads
            ]  # fmt: skip
            await asyncio.sleep(0.5)
            health = await http.get("/api/v1/health")
            finished_first = sum(upload.done() for upload in uploads)
            statuses = [(await upload).status_code for upload in uploads]
            return health.status_code, finished_first, statuses

    client.warehouses.stop(minilake.warehouse_id).result()
    try:
        health_status, finished_before_health, statuses = asyncio.run(wave())
    finally:
        client.warehouses.start(minilake.warehouse_id).result()
        server.stop()

    assert health_status == 200
    assert finished_before_health == 0  # health did not queue behind the waiting uploads
    assert statuses == [201] * 45


def test_a_backfill_leaves_pending_rows_to_their_delivery_and_their_metadata(
    env: dict[str, str], minilake: DatabricksWorkspace
) -> None:
    """A file whose record waits in the Volume's pending directory is not missing a row: a
    backfill indexing it would store it without the client's metadata, for good."""
    client = minilake.client()
    # No delivery pass during the test: the backfill runs while the row is pending.
    backend = create_backend(settings_from_env({**env, "DATABRICKS_OUTBOX_RETRY_SECONDS": "3600"}))
    assert isinstance(backend, DatabricksBackend)
    try:
        backend.write("ENG-BACKFILL", "warm-up.txt", io.BytesIO(b"table exists"))
        client.warehouses.stop(minilake.warehouse_id).result()
        try:
            record = backend.write(
                "ENG-BACKFILL", "memo.txt", io.BytesIO(b"pending"), {"author": "lead"}
            )
        finally:
            client.warehouses.start(minilake.warehouse_id).result()
        report = backfill_metadata(backend, dry_run=False, progress_stream=None)
        backend.pending.deliver()
    finally:
        backend.close()

    assert (report.scanned, report.indexed) == (2, 0), report.summary()
    rows = {str(row[0]): row[3] for row in table_rows(minilake, env, "ENG-BACKFILL")}
    assert json.loads(str(rows[record.id])) == {"author": "lead"}


def test_a_deployment_from_before_the_lifecycle_is_read_without_creating_anything(
    databricks_env: dict[str, str], databricks_workspace: DatabricksWorkspace, tmp_path: Path
) -> None:
    """Only the runbook's `evidence_metadata` (an earlier kmflow's deployment), read by a
    backend that never started (a dry run): its rows list, and no table is made."""
    catalog, schema = databricks_env["DATABRICKS_CATALOG"], databricks_env["DATABRICKS_SCHEMA"]
    client = databricks_workspace.client()
    runner = StatementRunner(client, databricks_workspace.warehouse_id, timeout=30)
    table = quote_name(catalog, schema, "evidence_metadata")
    runner.run(create_table_statement(table))
    runner.run(
        f"INSERT INTO {table} VALUES (:id, 'E1', 'a.txt', :path, :hash, 1, :at, NULL)",  # noqa: S608
        {"id": "a" * 32, "path": f"/Volumes/{catalog}/{schema}/raw_evidence/evidence_store/E1/a",
         "hash": "0" * 64, "at": "2026-01-01T00:00:00.000000Z"},
    )  # fmt: skip
    env = {**databricks_env, "STATE_PATH": str(tmp_path / "state")}
    backend = DatabricksBackend.from_settings(settings_from_env(env))
    try:
        listed = backend.list("E1", include_withdrawn=True).items
        got = backend.get("E1", "a" * 32)
    finally:
        backend.close()

    assert [record.id for record in listed] == ["a" * 32] and got.id == "a" * 32
    for name in ("evidence_withdrawals", "engagement_holds", "evidence_audit"):
        assert not client.tables.exists(f"{catalog}.{schema}.{name}").table_exists
