"""The audit trail on Databricks: content reads never wait for its INSERTs, and the events
of many requests share one statement (counted at MiniLake's bridge, which also holds an
INSERT back to show who waits for it). Counts and order only; no timings."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from app.storage.databricks.sql import StatementRunner
from tests.conftest import settings_from_env
from tests.datalake.workspace import DatabricksWorkspace
from tests.keys import API_KEY, AUDIT_KEY, NAMED_KEYS
from tests.multipart import multipart_body

AUDIT_INSERT = r"^INSERT INTO \S+`evidence_audit`"
READS = 24


def audit_rows(workspace: DatabricksWorkspace, env: dict[str, str], action: str) -> int:
    table = f"`{env['DATABRICKS_CATALOG']}`.`{env['DATABRICKS_SCHEMA']}`.`evidence_audit`"
    runner = StatementRunner(workspace.client(), workspace.warehouse_id, timeout=30)
    rows = runner.run(f"SELECT COUNT(*) FROM {table} WHERE action = :a", {"a": action})  # noqa: S608
    return int(rows[0][0])


def test_reads_are_answered_before_their_audit_insert_and_share_it(
    databricks_env: dict[str, str], minilake: DatabricksWorkspace, tmp_path: Path
) -> None:
    bridge = minilake.bridge
    assert bridge is not None
    env = {**databricks_env, "STATE_PATH": str(tmp_path / "state"), "API_KEYS": NAMED_KEYS}
    with TestClient(create_app(settings_from_env(env))) as api:
        api.headers.update({"Authorization": f"Bearer {API_KEY}"})
        body, content_type = multipart_body({"engagement_id": "ENG-READ"}, "a.txt", b"read me")
        record = api.post(
            "/api/v1/evidence/upload", content=body, headers={"Content-Type": content_type}
        ).json()
        api.app_state["storage"].audit.flush(30)
        since = len(bridge.statements)
        bridge.add_fault(r"^/api/2\.0/sql/statements$", None, statement=AUDIT_INSERT, delay=3)
        try:
            with ThreadPoolExecutor(max_workers=8) as pool:
                answers = list(pool.map(
                    lambda _: api.get(f"/api/v1/evidence/ENG-READ/{record['id']}/content"),
                    range(READS),
                ))  # fmt: skip
            stored_when_answered = audit_rows(minilake, databricks_env, "read")
            trail = api.get(
                "/api/v1/audit",
                params={"engagement_id": "ENG-READ"},
                headers={"Authorization": f"Bearer {AUDIT_KEY}"},
            ).json()
        finally:
            bridge.faults.clear()

    assert [answer.content for answer in answers] == [b"read me"] * READS
    assert stored_when_answered == 0  # every read answered while its INSERT was held back
    reads = [event for event in trail["items"] if event["action"] == "read"]
    assert len(reads) == READS and {event["principal"] for event in reads} == {"analyst"}
    inserts = [
        s for s in bridge.statements[since:] if s["statement"].startswith("INSERT INTO")
        and f"`{databricks_env['DATABRICKS_SCHEMA']}`" in s["statement"]
    ]  # fmt: skip
    assert 1 <= len(inserts) <= 2, len(inserts)  # the held one, then one for all the rest
