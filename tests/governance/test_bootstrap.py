"""`kmflow databricks bootstrap`: the runbook's prerequisites, created once, then left alone."""

from __future__ import annotations

import uuid

import pytest

from app.cli import main
from app.storage.databricks.sql import COLUMNS, StatementRunner
from tests.datalake.workspace import DatabricksWorkspace


def expected_lines(outcome: str, catalog: str, schema: str) -> list[str]:
    return [
        f"{outcome:<8} catalog {catalog}",
        f"{outcome:<8} schema  {catalog}.{schema}",
        f"{outcome:<8} schema  {catalog}.{schema}_bronze",
        f"{outcome:<8} schema  {catalog}.{schema}_silver",
        f"{outcome:<8} schema  {catalog}.{schema}_gold",
        f"{outcome:<8} volume  {catalog}.{schema}.raw_evidence",
        f"{outcome:<8} table   {catalog}.{schema}.evidence_metadata",
        f"{outcome:<8} table   {catalog}.{schema}.kmflow_claims",
        f"{outcome:<8} table   {catalog}.{schema}.evidence_withdrawals",
        f"{outcome:<8} table   {catalog}.{schema}.engagement_holds",
        f"{outcome:<8} table   {catalog}.{schema}.evidence_audit",
    ]


def test_bootstrap_twice_on_an_empty_emulator_creates_everything_then_changes_nothing(
    minilake: DatabricksWorkspace, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert minilake.bridge is not None
    catalog = f"kmflow_boot_{uuid.uuid4().hex[:10]}"
    client = minilake.client()

    assert main(["databricks", "bootstrap", "--catalog", catalog]) == 0
    first = capsys.readouterr().out.splitlines()
    statements = len(minilake.bridge.statements)
    assert main(["databricks", "bootstrap", "--catalog", catalog]) == 0
    second = capsys.readouterr().out.splitlines()

    assert first == expected_lines("created", catalog, "evidence")
    assert second == expected_lines("exists", catalog, "evidence")
    assert len(minilake.bridge.statements) == statements  # the second run sent no SQL
    assert sorted(str(s.name) for s in client.schemas.list(catalog)) == sorted(
        ["default", "evidence", "evidence_bronze", "evidence_silver", "evidence_gold"]
    )
    assert client.volumes.read(f"{catalog}.evidence.raw_evidence").volume_type is not None
    # The table is the runbook's: kmflow's own queries run against it.
    runner = StatementRunner(client, minilake.warehouse_id, timeout=10)
    table = f"`{catalog}`.`evidence`.`evidence_metadata`"
    assert runner.run(f"SELECT {', '.join(COLUMNS)} FROM {table}") == []  # noqa: S608


def test_bootstrap_under_an_existing_catalog_creates_only_what_is_missing(
    databricks_workspace: DatabricksWorkspace,
    base_schema: str,
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    catalog = databricks_workspace.catalog
    client = databricks_workspace.client()
    client.schemas.create(name=f"{base_schema}_silver", catalog_name=catalog)

    code = main(["databricks", "bootstrap", "--schema", base_schema, "--volume", "files"])

    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        f"exists   catalog {catalog}",
        f"created  schema  {catalog}.{base_schema}",
        f"created  schema  {catalog}.{base_schema}_bronze",
        f"exists   schema  {catalog}.{base_schema}_silver",
        f"created  schema  {catalog}.{base_schema}_gold",
        f"created  volume  {catalog}.{base_schema}.files",
        f"created  table   {catalog}.{base_schema}.evidence_metadata",
        f"created  table   {catalog}.{base_schema}.kmflow_claims",
        f"created  table   {catalog}.{base_schema}.evidence_withdrawals",
        f"created  table   {catalog}.{base_schema}.engagement_holds",
        f"created  table   {catalog}.{base_schema}.evidence_audit",
    ]


def test_a_refused_catalog_stops_the_bootstrap_naming_the_privilege(
    minilake: DatabricksWorkspace, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert minilake.bridge is not None
    catalog = f"kmflow_boot_{uuid.uuid4().hex[:10]}"
    minilake.bridge.add_fault(r"/unity-catalog/catalogs$", status=403, method="POST", times=1)

    code = main(["databricks", "bootstrap", "--catalog", catalog])

    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert captured.err.startswith(f"kmflow: cannot create catalog {catalog}: permission denied")
    assert "CREATE CATALOG on the metastore" in captured.err
    assert catalog not in [c.name for c in minilake.client().catalogs.list()]


def test_an_invalid_name_is_refused_before_any_call(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["databricks", "bootstrap", "--schema", "evidence;drop"]) == 2
    assert capsys.readouterr().err.startswith("kmflow: invalid configuration: DATABRICKS_SCHEMA")
