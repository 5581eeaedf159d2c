"""`kmflow verify` against a real `kmflow serve` process and a real SDK peer."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from databricks.sdk.service.catalog import PermissionsChange, Privilege

from app.cli import main
from app.governance.bootstrap import bootstrap
from app.governance.grants import Securable, audit_grants
from app.governance.unity_catalog import register_tables
from app.storage.databricks.sql import StatementRunner, quote_name
from tests.conftest import API_KEY, AUTH
from tests.datalake.inspect import volume_files
from tests.datalake.workspace import DatabricksWorkspace
from tests.governance.entries import entry
from tests.live_server import LiveServer

RUNBOOK_GRANTS = {
    "catalog": [Privilege.USE_CATALOG, Privilege.USE_SCHEMA, Privilege.CREATE_SCHEMA],
    "schema": [Privilege.CREATE_TABLE, Privilege.MODIFY, Privilege.SELECT],
    "volume": [Privilege.READ_VOLUME, Privilege.WRITE_VOLUME],
}
ITEMS = [
    "health",
    "upload round trip",
    "metadata row",
    "volume file count",
    "unity catalog tables",
    "service principal grants",
    "test upload withdrawn",
]
DATABRICKS_ITEMS = ITEMS[2:6]


@dataclass
class Deployment:
    server: LiveServer
    workspace: DatabricksWorkspace
    catalog: str
    schema: str
    principal: str
    inventory: Path
    entries_file: Path
    env: dict[str, str]

    def grant(self, securable_type: str, full_name: str, privileges: list[Privilege]) -> None:
        change = PermissionsChange(principal=self.principal, add=privileges)
        self.workspace.client().grants.update(securable_type, full_name, changes=[change])


def upload(url: str, engagement: str, name: str, content: bytes) -> dict[str, str]:
    response = httpx.post(
        f"{url}/api/v1/evidence/upload",
        data={"engagement_id": engagement},
        files={"file": (name, content)},
        headers=AUTH,
        timeout=30,
    )
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


@pytest.fixture
def deployment(
    databricks_env: dict[str, str],
    databricks_workspace: DatabricksWorkspace,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Deployment]:
    """A migrated Databricks deployment as the runbook leaves it: objects, tables, grants, files."""
    catalog, schema = databricks_env["DATABRICKS_CATALOG"], databricks_env["DATABRICKS_SCHEMA"]
    client = databricks_workspace.client()
    warehouse = databricks_workspace.warehouse_id
    list(bootstrap(client, catalog, schema, "raw_evidence", warehouse))
    entries = [entry("journal", "bronze"), entry("kpis", "gold")]
    assert {r.status for r in register_tables(client, entries, catalog, schema, warehouse)} == {
        "created"
    }
    entries_file = tmp_path / "catalog.json"
    entries_file.write_text(json.dumps([e.model_dump() for e in entries]))

    env = {**databricks_env, "API_KEYS": API_KEY, "STATE_PATH": str(tmp_path / "state")}
    server = LiveServer(env, cwd=tmp_path)
    migrated = [
        upload(server.url, "ENG-A", "ledger.csv", b"a,b\n1,2\n"),
        upload(server.url, "ENG-A", "memo.txt", b"memo"),
        upload(server.url, "ENG-B", "minutes.pdf", b"%PDF-1.4 minutes"),
    ]
    inventory = tmp_path / "migration-inventory.txt"
    lines = [f"./evidence_store/{r['engagement_id']}/{r['id']}_{r['file_name']}" for r in migrated]
    inventory.write_text("\n".join(lines) + "\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)

    found = Deployment(
        server, databricks_workspace, catalog, schema, f"kmflow-api-{uuid.uuid4().hex[:8]}",
        inventory, entries_file, env,
    )  # fmt: skip
    found.grant("catalog", catalog, RUNBOOK_GRANTS["catalog"])
    for suffix in ("", "_bronze", "_silver", "_gold"):
        found.grant("schema", f"{catalog}.{schema}{suffix}", RUNBOOK_GRANTS["schema"])
    found.grant("volume", f"{catalog}.{schema}.raw_evidence", RUNBOOK_GRANTS["volume"])
    yield found
    server.stop()


def verify(deployment: Deployment, *extra: str) -> int:
    return main([
        "verify", "--url", deployment.server.url, "--inventory", str(deployment.inventory),
        "--catalog-entries", str(deployment.entries_file), "--principal", deployment.principal,
        *extra,
    ])  # fmt: skip


def report(capsys: pytest.CaptureFixture[str]) -> dict[str, tuple[str, str]]:
    """item -> (outcome, detail), with the summary line checked to be last."""
    lines = capsys.readouterr().out.splitlines()
    items = {}
    for line in lines[:-1]:
        outcome, rest = line.split("  ", 1)
        name, detail = rest.split(": ", 1)
        items[name] = (outcome, detail)
    assert list(items) == ITEMS, lines
    assert lines[-1].startswith("verify: ")
    return items


def test_a_deployment_done_by_the_runbook_passes_every_item_and_again_on_a_rerun(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog, schema = deployment.catalog, deployment.schema

    assert verify(deployment) == 0
    first = report(capsys)
    assert verify(deployment) == 0  # the first run's test upload is not counted as evidence
    second = report(capsys)

    assert {name: outcome for name, (outcome, _) in first.items()} == dict.fromkeys(ITEMS, "PASS")
    assert first["health"][1] == "200, storage=databricks"
    round_trip = first["upload round trip"][1]
    assert "uploaded to kmflow-verify-" in round_trip and "(sha256 matches)" in round_trip
    withdrawn = first["test upload withdrawn"][1]
    assert "its bytes are removed, its tombstone stays in kmflow-verify-" in withdrawn
    leftovers = [
        path
        for path in volume_files(deployment.workspace, deployment.env)
        if "/kmflow-verify-" in path
    ]
    assert leftovers == []  # the test upload's bytes are gone from the Volume
    assert first["metadata row"][1].startswith(f"`{catalog}`.`{schema}`.`evidence_metadata` has")
    root = f"/Volumes/{catalog}/{schema}/raw_evidence/evidence_store"
    assert first["volume file count"][1] == (
        f"3 files under {root} (recursive, kmflow-verify-* left out), 3 in {deployment.inventory}"
    )
    assert first["unity catalog tables"][1] == (
        f"{catalog}.{schema}.evidence_metadata exists; {catalog}.{schema}_bronze: 1 tables, "
        f"{catalog}.{schema}_silver: 0 tables, {catalog}.{schema}_gold: 1 tables; "
        "2 catalogue entries checked"
    )
    assert first["service principal grants"][1] == (
        f"{deployment.principal} holds only the runbook's privileges (17)"
    )
    assert second == {
        **first,
        "upload round trip": second["upload round trip"],
        "metadata row": second["metadata row"],
        "test upload withdrawn": second["test upload withdrawn"],
    }


def test_a_broad_grant_and_a_short_count_fail_their_items_and_exit_1(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog, schema = deployment.catalog, deployment.schema
    deployment.grant("schema", f"{catalog}.{schema}", [Privilege.ALL_PRIVILEGES])
    deployment.grant("catalog", catalog, [Privilege.SELECT])
    with deployment.inventory.open("a") as inventory:
        inventory.write("./evidence_store/ENG-C/never-migrated.pdf\n")

    assert verify(deployment) == 1

    items = report(capsys)
    assert {name: outcome for name, (outcome, _) in items.items()} == {
        "health": "PASS",
        "upload round trip": "PASS",
        "metadata row": "PASS",
        "volume file count": "FAIL",
        "unity catalog tables": "PASS",
        "service principal grants": "FAIL",
        "test upload withdrawn": "PASS",
    }
    assert items["volume file count"][1].startswith("3 files under /Volumes/")
    assert items["volume file count"][1].endswith(f", 4 in {deployment.inventory}")
    assert items["service principal grants"][1] == (
        f"too broad: SELECT on catalog {catalog}; ALL_PRIVILEGES on schema {catalog}.{schema}"
    )


def test_a_broad_grant_on_a_registered_table_fails_the_grants_item(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog, layer = deployment.catalog, f"{deployment.schema}_bronze"
    StatementRunner(deployment.workspace.client(), deployment.workspace.warehouse_id, 30).run(
        f"CREATE TABLE IF NOT EXISTS {quote_name(catalog, layer, 'journal')} (id STRING)"
    )
    deployment.grant("table", f"{catalog}.{layer}.journal", [Privilege.ALL_PRIVILEGES])

    assert verify(deployment) == 1

    outcome, detail = report(capsys)["service principal grants"]
    assert outcome == "FAIL"
    assert detail == f"too broad: ALL_PRIVILEGES on table {catalog}.{layer}.journal"


def test_a_missing_registration_fails_naming_the_table(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = json.loads(deployment.entries_file.read_text())
    entries.append(entry("never_registered", "silver").model_dump())
    deployment.entries_file.write_text(json.dumps(entries))

    assert verify(deployment) == 1

    outcome, detail = report(capsys)["unity catalog tables"]
    assert outcome == "FAIL"
    assert detail == (
        f"missing: table {deployment.catalog}.{deployment.schema}_silver.never_registered"
    )


def test_the_owner_of_an_object_is_reported_as_too_broad(minilake: DatabricksWorkspace) -> None:
    client = minilake.client()
    audit = audit_grants(client, "minilake-user", [Securable("CATALOG", minilake.catalog)])
    assert audit.too_broad == [f"owns catalog {minilake.catalog} (an owner holds every privilege)"]


def test_a_local_deployment_skips_the_databricks_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "STORAGE_BACKEND": "local",
        "LOCAL_STORAGE_PATH": str(tmp_path / "evidence_store"),
        "STATE_PATH": str(tmp_path / "state"),
        "API_KEYS": API_KEY,
    }
    server = LiveServer(env, cwd=tmp_path)
    try:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        passing = main(["verify", "--url", server.url])
        items = report(capsys)
        failing = main(["verify", "--url", server.url, "--api-key", "wrong-key-0123456789"])
        refused = report(capsys)
    finally:
        server.stop()

    assert passing == 0
    reason = "STORAGE_BACKEND=local: a Databricks-only item"
    assert items == {
        "health": ("PASS", "200, storage=local"),
        "upload round trip": items["upload round trip"],
        **{name: ("SKIP", reason) for name in DATABRICKS_ITEMS},
        "test upload withdrawn": items["test upload withdrawn"],
    }
    assert items["upload round trip"][0] == "PASS"
    assert items["test upload withdrawn"][0] == "PASS"
    assert failing == 1
    assert refused["health"][0] == "PASS"
    assert refused["upload round trip"][0] == "FAIL"
    assert refused["upload round trip"][1].startswith("upload answered 401")
