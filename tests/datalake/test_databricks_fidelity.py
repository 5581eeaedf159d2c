"""What passes on a bare MiniLake but would break or misbehave on a real workspace: each case
with the workspace behaviour it needs added to the test bridge (`minilake_bridge.py`), so the
test fails without kmflow's handling of it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
from pathlib import Path

import pytest
import requests
from databricks.sdk.service.sql import Disposition, Format
from fastapi.testclient import TestClient

from app.migration import backend_items, plan_migration, run_migration
from app.storage.databricks.backend import DatabricksBackend
from app.storage.databricks.backfill import backfill_metadata
from app.storage.databricks.sql import StatementFailed, StatementRunner
from app.storage.local.backend import LocalBackend
from app.storage.records import EvidenceRecord, utc_timestamp
from app.storage.registry import create_backend
from tests.conftest import settings_from_env
from tests.datalake.inspect import table_rows, volume_files
from tests.datalake.minilake_bridge import FAILED, METADATA_MERGE, MiniLakeBridge
from tests.datalake.workspace import DatabricksWorkspace
from tests.multipart import multipart_body

UPLOAD = "/api/v1/evidence/upload"
FILES = r"^/api/2\.0/fs/files/Volumes/"
STATEMENTS = r"^/api/2\.0/sql/statements$"


def upload(api: TestClient, engagement: str, name: str, content: bytes) -> dict[str, object]:
    body, content_type = multipart_body({"engagement_id": engagement}, name, content)
    answer = api.post(UPLOAD, content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 201, answer.text
    uploaded: dict[str, object] = answer.json()
    return uploaded


def test_a_put_whose_answer_was_lost_is_found_to_be_ours(
    api: TestClient,
    bridge: MiniLakeBridge,
    databricks_workspace: DatabricksWorkspace,
    databricks_env: dict[str, str],
) -> None:
    """The file lands, the answer is a 503; the SDK retries the PUT (overwrite=False), which
    finds the file there. Without checking its bytes kmflow would answer 409 and leave a file
    without a row."""
    bridge.add_fault(FILES, 503, method="PUT", landed=True)

    record = upload(api, "ENG-LOST", "memo.txt", b"the memo")

    assert bridge.faults[0].times == 0  # the lost answer happened
    assert [row[0] for row in table_rows(databricks_workspace, databricks_env, "ENG-LOST")] == [
        record["id"]
    ]
    assert volume_files(databricks_workspace, databricks_env) == [record["volume_path"]]
    assert api.get(f"/api/v1/evidence/ENG-LOST/{record['id']}/content").content == b"the memo"


def test_a_result_fetched_by_link_outlasts_hundreds_of_later_statements(
    databricks_workspace: DatabricksWorkspace,
) -> None:
    """A listing page comes as EXTERNAL_LINKS, its chunks fetched after the statement answers;
    a warehouse keeps the result meanwhile, however busy it is (MiniLake kept its last 500
    statements and emptied older results: a page read as empty in a long session)."""
    runner = StatementRunner(databricks_workspace.client(), databricks_workspace.warehouse_id, 30)
    first = runner.client.statement_execution.execute_statement(
        statement="SELECT 'kept' AS word",
        warehouse_id=databricks_workspace.warehouse_id,
        wait_timeout="30s",
        disposition=Disposition.EXTERNAL_LINKS,
        format=Format.JSON_ARRAY,
    )
    for n in range(600):
        assert str(runner.run("SELECT :n AS n", {"n": n})[0][0]) == str(n)

    assert first.result is not None and first.result.external_links
    link = first.result.external_links[0].external_link
    assert link is not None
    assert requests.get(link, timeout=30).json() == [["kept"]]


def test_a_file_already_there_with_other_bytes_is_still_refused(
    env: dict[str, str], databricks_workspace: DatabricksWorkspace
) -> None:
    backend = create_backend(settings_from_env(env))
    try:
        stored = backend.write("ENG-OTHER", "a.txt", io.BytesIO(b"first bytes"))
        rival = stored.model_copy(update={"content_hash": sha256(b"other"), "size_bytes": 5})
        with pytest.raises(Exception, match="already"):
            backend.restore(rival, io.BytesIO(b"other"))
        with backend.open(stored) as stream:
            assert stream.read() == b"first bytes"
    finally:
        backend.close()


def test_an_empty_file_can_be_migrated_in(
    env: dict[str, str], databricks_workspace: DatabricksWorkspace
) -> None:
    """Uploads refuse empty files, but a migration copies whatever a store holds; the SDK's
    parallel upload of empty content works from databricks-sdk 0.72 (the declared floor)."""
    empty = EvidenceRecord(
        id="e" * 32, engagement_id="ENG-EMPTY", file_name="empty.txt", volume_path="",
        content_hash=sha256(b""), size_bytes=0, stored_at=utc_timestamp(), metadata_json=None,
    )  # fmt: skip
    backend = create_backend(settings_from_env(env))
    try:
        stored = backend.restore(empty, io.BytesIO(b""))
        with backend.open(stored) as stream:
            assert stream.read() == b""
    finally:
        backend.close()
    assert len(table_rows(databricks_workspace, env, "ENG-EMPTY")) == 1


def test_an_upload_does_not_wait_out_the_sdks_own_retries(
    api: TestClient,
    bridge: MiniLakeBridge,
    databricks_workspace: DatabricksWorkspace,
    databricks_env: dict[str, str],
) -> None:
    """A warehouse answering 503 with Retry-After: the SDK waits and retries on its own, for up
    to DATABRICKS_RETRY_TIMEOUT_SECONDS. The upload answers after at most its own short wait
    (the row is durable in the outbox), and the row arrives once the retries get through."""
    api.get("/api/v1/health")
    bridge.add_fault(STATEMENTS, 503, statement=METADATA_MERGE, times=4, retry_after=2)  # 8 s

    record = upload(api, "ENG-RETRY-AFTER", "a.txt", b"retried")
    in_table_at_201 = table_rows(databricks_workspace, databricks_env, "ENG-RETRY-AFTER")
    storage: DatabricksBackend = api.app_state["storage"]
    assert storage.wait_until_delivered(timeout=60)

    assert in_table_at_201 == []  # answered while the SDK was still retrying the MERGE
    assert bridge.faults[0].times == 0
    stored = table_rows(databricks_workspace, databricks_env, "ENG-RETRY-AFTER")
    assert [row[0] for row in stored] == [record["id"]]


def test_a_merge_that_loses_to_a_concurrent_commit_is_run_again_at_once(
    api: TestClient,
    bridge: MiniLakeBridge,
    databricks_workspace: DatabricksWorkspace,
    databricks_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without row-level concurrency two MERGEs into one table conflict and one fails with
    DELTA_CONCURRENT_APPEND (nothing committed). That is not an outage: the MERGE runs again."""
    api.get("/api/v1/health")
    since = len(bridge.statements)
    bridge.add_fault(
        STATEMENTS, FAILED, statement=METADATA_MERGE, times=2, sql_state="2D521",
        message="[DELTA_CONCURRENT_APPEND] Transaction conflict detected. A concurrent MERGE "
        "added data to table evidence_metadata committed at version 7.",
    )  # fmt: skip

    record = upload(api, "ENG-CONFLICT", "a.txt", b"conflicted")
    in_table_at_201 = table_rows(databricks_workspace, databricks_env, "ENG-CONFLICT")

    merges = [s for s in bridge.statements[since:] if is_metadata_merge(s["statement"])]
    assert len(merges) == 3  # two conflicts, then the commit
    assert [row[0] for row in in_table_at_201] == [record["id"]]
    assert "warehouse not answering" not in caplog.text
    storage: DatabricksBackend = api.app_state["storage"]
    assert storage.rows.answering


def test_rows_the_warehouse_refuses_wait_longer_and_longer_then_land_once(
    env: dict[str, str],
    bridge: MiniLakeBridge,
    databricks_workspace: DatabricksWorkspace,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A revoked MODIFY privilege is not an outage that passes by itself: retrying every few
    seconds repeats the refusal. The rows stay queued, the delivery thread backs off, the log
    says once what to fix; once fixed, the rows land once."""
    backend = create_backend(settings_from_env({**env, "DATABRICKS_OUTBOX_RETRY_SECONDS": "0.2"}))
    assert isinstance(backend, DatabricksBackend)
    since = len(bridge.statements)
    bridge.add_fault(
        STATEMENTS, FAILED, statement=METADATA_MERGE, times=1000, sql_state="42501",
        message="[INSUFFICIENT_PERMISSIONS] Insufficient privileges: User does not have MODIFY "
        "on Table 'kmflow.evidence.evidence_metadata'.",
    )  # fmt: skip
    try:
        written = [backend.write("ENG-REFUSED", f"{n}.txt", io.BytesIO(b"%d" % n)) for n in (1, 2)]
        threading.Event().wait(3.0)  # at a fixed 0.2 s, some 15 more tries
        merges = [s for s in bridge.statements[since:] if is_metadata_merge(s["statement"])]
        pending = backend.rows_waiting()
        refused = backend.rows.refused
        said = next(p for p in backend.probes() if p.name == "metadata delivered").check()
        reported = backend.check().details
        bridge.faults.clear()  # an operator grants MODIFY again
        assert backend.wait_until_delivered(timeout=30)
    finally:
        backend.close()

    assert pending == 2
    assert 1 <= len(merges) <= 6  # tries at about 0.4, 0.8, 1.6 s: backing off
    assert refused is not None and "INSUFFICIENT_PERMISSIONS" in refused
    assert caplog.text.count("refuses them until someone acts") == 1
    assert not said.ok
    assert "refuses them until fixed" in (said.detail or "")
    assert "INSUFFICIENT_PERMISSIONS" in (said.detail or "")
    assert "INSUFFICIENT_PERMISSIONS" in str(reported["metadata_refused"])
    rows = table_rows(databricks_workspace, env, "ENG-REFUSED")
    assert sorted(row[0] for row in rows) == sorted(r.id for r in written)


@pytest.mark.slow
def test_a_migration_of_2000_records_stays_within_the_parameter_limit(
    env: dict[str, str],
    bridge: MiniLakeBridge,
    databricks_workspace: DatabricksWorkspace,
    tmp_path: Path,
) -> None:
    """Every statement stays within the limit the bridge enforces as a warehouse does (more
    than 255 parameters are refused), whatever the backlog."""
    source = LocalBackend(tmp_path / "source" / "evidence_store", tmp_path / "source" / "state")
    source.startup()
    target = create_backend(settings_from_env(env))
    since = len(bridge.statements)
    try:
        for n in range(2000):
            meta = {"n": n, "note": "é" * (n % 50)}
            source.write(f"ENG-M{n % 4}", f"f{n}.txt", io.BytesIO(os.urandom(16)), meta)
        plan = plan_migration(backend_items(source), target)
        report = run_migration(plan, target, workers=8, progress_stream=None)
    finally:
        target.close()
        source.close()

    assert report.summary().startswith("copied: 2000 "), report.summary()
    sent = bridge.statements[since:]
    assert max(len(s.get("parameters") or []) for s in sent) <= 255
    rows = table_rows(databricks_workspace, env)
    assert len(rows) == len({row[0] for row in rows}) == 2000
    assert sorted(json.loads(str(row[3]))["n"] for row in rows) == list(range(2000))


def is_metadata_merge(statement: str) -> bool:
    return re.match(METADATA_MERGE, statement) is not None


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@pytest.mark.slow
def test_every_id_is_read_though_the_table_holds_more_than_one_inline_result(
    env: dict[str, str],
    bridge: MiniLakeBridge,
    databricks_workspace: DatabricksWorkspace,
) -> None:
    """700,000 ids are ~28 MB of result: one `SELECT id` would fail on a workspace (INLINE
    results stop at 25 MiB), so backfill reads them page by page."""
    backend = create_backend(settings_from_env(env))
    assert isinstance(backend, DatabricksBackend)
    try:
        fill_table(backend, 700_000, "'{}'")
        with pytest.raises(StatementFailed, match="INLINE"):
            backend.sql.run(f"SELECT id FROM {backend.table}")  # noqa: S608 - the test's table
        # A file whose row is gone: what backfill is for.
        orphan = backend.write("ENG-ORPHAN", "orphan.txt", io.BytesIO(b"row lost"))
        backend.sql.run(
            f"DELETE FROM {backend.table} WHERE id = :id",  # noqa: S608 - the test's table
            {"id": orphan.id},
        )
        report = backfill_metadata(backend, dry_run=False, progress_stream=None)
        known = backend.known_ids()
    finally:
        backend.close()
    assert report.ok and (report.scanned, report.indexed) == (1, 1), report.summary()
    assert len(known) == 700_001 and orphan.id in known


@pytest.mark.slow
def test_a_page_of_1000_records_with_large_metadata_is_listed_and_migrated_into(
    env: dict[str, str], bridge: MiniLakeBridge, tmp_path: Path
) -> None:
    """1,001 rows with ~60 KiB of metadata each (a migration's page) are ~60 MiB: more than an
    INLINE result may hold, so such a page comes as EXTERNAL_LINKS."""
    backend = create_backend(settings_from_env(env))
    assert isinstance(backend, DatabricksBackend)
    source = LocalBackend(tmp_path / "source" / "evidence_store", tmp_path / "source" / "state")
    source.startup()
    try:
        fill_table(backend, 1001, "'{\"notes\":\"' || repeat('x', 60000) || '\"}'")
        page = backend.list("ENG-FILL", limit=1000)
        small = backend.list("ENG-FILL", limit=10)  # far below the limit: INLINE, as before
        # A migration into that engagement reads what the target holds in such pages.
        source.write("ENG-FILL", "new.txt", io.BytesIO(b"migrated in"))
        copied = run_migration(
            plan_migration(backend_items(source), backend), backend, workers=2, progress_stream=None
        )
        again = plan_migration(backend_items(source), backend)
    finally:
        backend.close()
        source.close()
    assert len(page.items) == 1000 and page.next_cursor is not None
    assert len(page.items[0].metadata_json or "") > 60_000
    assert [r.id for r in small.items] == [r.id for r in page.items[:10]]
    assert copied.summary().startswith("copied: 1 "), copied.summary()
    assert (len(again.to_copy), len(again.skipped)) == (0, 1)


def fill_table(backend: DatabricksBackend, count: int, metadata_sql: str) -> None:
    """`count` rows of engagement ENG-FILL straight into the table, generated by the warehouse
    (MiniLake's DuckDB SQL: test setup only)."""
    backend.sql.run(
        f"INSERT INTO {backend.table} SELECT printf('%032x', i), 'ENG-FILL', "  # noqa: S608
        f"printf('f%d.txt', i), printf('/Volumes/x/f%d.txt', i), repeat('0', 64), 1, "
        f"printf('2026-01-01T00:00:00.%06dZ', i % 1000000), {metadata_sql} FROM range({count}) "
        "AS r(i)"
    )
