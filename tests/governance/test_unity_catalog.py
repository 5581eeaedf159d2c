"""Runbook Step 3: `register_tables` and `kmflow catalog register`, against a real SDK peer."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from app.cli import main
from app.core.models import DataCatalogEntry
from app.governance.errors import InvalidDefinition
from app.governance.sql_text import column_type, identifier, string_literal
from app.governance.unity_catalog import (
    RegistrationResult,
    create_entry_statement,
    register_tables,
)
from tests.datalake.workspace import DatabricksWorkspace
from tests.governance.entries import entry

TRICKY = "GL lines: it's a \\ path `x` -- not a comment; DROP TABLE t\nline two"


def table_names(workspace: DatabricksWorkspace, schema: str) -> list[str]:
    client = workspace.client()
    return sorted(str(t.name) for t in client.tables.list(workspace.catalog, schema))


def test_register_tables_creates_each_entry_in_its_layer_and_reports_bad_ones(
    databricks_workspace: DatabricksWorkspace, base_schema: str
) -> None:
    catalog = databricks_workspace.catalog
    entries = [
        entry("gl_lines", "bronze", description=TRICKY, owner="finance", retention_days=2555),
        entry("bad name; DROP TABLE x", "silver"),
        entry("vendors", "silver", columns=[{"name": "id", "type": "VARCHAR(10)"}]),
        entry("vendor_master", "silver"),
        entry("kpis", "gold", columns={"kpi": "string", "value": "double", "as_of": "DATE"}),
    ]
    results = register_tables(
        databricks_workspace.client(),
        catalog_entries=entries,
        catalog=catalog,
        schema=base_schema,
        warehouse_id=databricks_workspace.warehouse_id,
    )

    assert [(r.dataset_name, r.full_name, r.status) for r in results] == [
        ("gl_lines", f"{catalog}.{base_schema}_bronze.gl_lines", "created"),
        ("bad name; DROP TABLE x", None, "failed"),
        ("vendors", f"{catalog}.{base_schema}_silver.vendors", "failed"),
        ("vendor_master", f"{catalog}.{base_schema}_silver.vendor_master", "created"),
        ("kpis", f"{catalog}.{base_schema}_gold.kpis", "created"),
    ]
    assert results[1].error is not None and "invalid dataset_name" in results[1].error
    assert results[2].error is not None and "unsupported type 'VARCHAR(10)'" in results[2].error
    assert table_names(databricks_workspace, f"{base_schema}_bronze") == ["gl_lines"]
    assert table_names(databricks_workspace, f"{base_schema}_silver") == ["vendor_master"]
    assert table_names(databricks_workspace, f"{base_schema}_gold") == ["kpis"]
    kpis = databricks_workspace.client().tables.get(f"{catalog}.{base_schema}_gold.kpis")
    assert [(c.name, str(c.type_text).lower()) for c in kpis.columns or []] == [
        ("kpi", "string"),
        ("value", "double"),
        ("as_of", "date"),
    ]

    warehouse = databricks_workspace.warehouse_id
    again = register_tables(databricks_workspace.client(), entries, catalog, base_schema, warehouse)
    assert [r.status for r in again] == ["exists", "failed", "failed", "exists", "exists"]


def test_the_ddl_sent_is_the_escaped_statement(
    minilake: DatabricksWorkspace, base_schema: str
) -> None:
    assert minilake.bridge is not None
    gl_lines = entry("gl_lines", "bronze", description=TRICKY, owner="o'brien", retention_days=30)
    sent_before = len(minilake.bridge.statements)

    register_tables(minilake.client(), [gl_lines], minilake.catalog, base_schema, None)

    sent = [s["statement"] for s in minilake.bridge.statements[sent_before:]]
    assert sent == [create_entry_statement(minilake.catalog, base_schema, gl_lines)]
    assert sent[0] == (
        f"CREATE TABLE IF NOT EXISTS `kmflow`.`{base_schema}_bronze`.`gl_lines` (\n"
        "    `id` STRING NOT NULL,\n"
        "    `amount` DECIMAL(18,2)\n"
        ")\n"
        "USING DELTA\n"
        "COMMENT 'GL lines: it\\'s a \\\\ path `x` -- not a comment; DROP TABLE t\\nline two'\n"
        "TBLPROPERTIES (\n"
        "    'kmflow.dataset_type' = 'structured',\n"
        "    'kmflow.layer' = 'bronze',\n"
        "    'kmflow.classification' = 'internal',\n"
        "    'kmflow.owner' = 'o\\'brien',\n"
        "    'kmflow.retention_days' = '30'\n"
        ")"
    )


def test_a_refused_statement_fails_its_entry_only(
    minilake: DatabricksWorkspace, base_schema: str
) -> None:
    assert minilake.bridge is not None
    minilake.bridge.add_fault(r"^/api/2\.0/sql/statements$", status=500, method="POST", times=1)

    results = register_tables(
        minilake.client(),
        [entry("first", "bronze"), entry("second", "bronze")],
        minilake.catalog,
        base_schema,
        minilake.warehouse_id,
    )

    assert [(r.dataset_name, r.status) for r in results] == [
        ("first", "failed"),
        ("second", "created"),
    ]
    assert results[0].error is not None and "injected 500" in results[0].error
    assert table_names(minilake, f"{base_schema}_bronze") == ["second"]


def test_an_invalid_catalog_or_schema_argument_raises_before_anything_runs(
    databricks_workspace: DatabricksWorkspace,
) -> None:
    with pytest.raises(InvalidDefinition, match="invalid schema"):
        register_tables(databricks_workspace.client(), [], "kmflow", "a.b", None)


@pytest.mark.parametrize(
    ("declared", "written"),
    [
        ("string", "STRING"),
        ("Long", "BIGINT"),
        ("INTEGER", "INT"),
        ("decimal( 18 , 2 )", "DECIMAL(18,2)"),
        ("NUMERIC(5)", "DECIMAL(5,0)"),
        ("timestamp", "TIMESTAMP"),
    ],
)
def test_column_types_are_written_in_their_canonical_spelling(declared: str, written: str) -> None:
    assert column_type(declared) == written


@pytest.mark.parametrize(
    "declared",
    ["VARCHAR(10)", "DECIMAL", "DECIMAL(39,2)", "DECIMAL(5,6)", "ARRAY<STRING>", "STRING; DROP"],
)
def test_other_column_types_are_refused(declared: str) -> None:
    with pytest.raises(InvalidDefinition):
        column_type(declared)


@pytest.mark.parametrize("name", ["", "1st", "a-b", "a b", "a`b", "a.b", "é", "x" * 256])
def test_table_and_column_names_must_be_plain_identifiers(name: str) -> None:
    with pytest.raises(InvalidDefinition):
        identifier(name, "column name")


def databricks_unescape(literal: str) -> str:
    """Read one literal as Databricks' lexer does; fail if it ends before its last character."""
    assert literal[0] == "'"
    escapes = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "b": "\b", "Z": "\x1a"}
    out, i = [], 1
    while literal[i] != "'":
        if literal[i] == "\\":
            out.append(escapes.get(literal[i + 1], literal[i + 1]))
            i += 2
        else:
            out.append(literal[i])
            i += 1
    assert i == len(literal) - 1, "the literal ended early: the rest would be SQL"
    return "".join(out)


def test_any_text_stays_one_string_literal_and_reads_back_unchanged() -> None:
    rng = random.Random(5)  # noqa: S311 - reproducible samples, not secrets
    alphabet = "ab'\\\"`;-\n\r\t %_é"
    samples = ["", "'", "\\", "\\'", "'; DROP TABLE t; --", "\\\\''"]
    samples += [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) for _ in range(500)
    ]
    for text in samples:
        assert databricks_unescape(string_literal(text)) == text


def test_duplicate_columns_are_refused_case_insensitively() -> None:
    twice = entry(
        "t", "gold", columns=[{"name": "Id", "type": "INT"}, {"name": "id", "type": "INT"}]
    )
    with pytest.raises(InvalidDefinition, match="appears twice"):
        create_entry_statement("kmflow", "evidence", twice)


def test_catalog_register_loads_yaml_and_exits_1_listing_each_failure(
    databricks_workspace: DatabricksWorkspace,
    base_schema: str,
    cli_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    catalog = databricks_workspace.catalog
    document = {
        "entries": [
            {"dataset_name": "journal", "dataset_type": "structured", "layer": "bronze",
             "columns": {"id": "STRING", "posted_on": "DATE"}, "owner": "finance",
             "classification": "confidential", "retention_days": 2555,
             "description": "Journal entries"},
            {"dataset_name": "typo", "dataset_type": "structured", "layer": "platinum",
             "columns": {"id": "STRING"}},
            {"dataset_name": "controls", "dataset_type": "document", "layer": "gold",
             "columns": [{"name": "control_id", "type": "STRING", "nullable": False}]},
        ]
    }  # fmt: skip
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(document))

    code = main(["catalog", "register", str(path), "--schema", base_schema])

    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[0].startswith("failed   entry 2 (typo): layer: Input should be 'bronze'")
    assert out[1:] == [
        f"created  {catalog}.{base_schema}_bronze.journal",
        f"created  {catalog}.{base_schema}_gold.controls",
        "3 entries, 1 failed",
    ]
    assert table_names(databricks_workspace, f"{base_schema}_gold") == ["controls"]


def test_catalog_register_reads_json_and_exits_0_when_all_exist(
    databricks_workspace: DatabricksWorkspace,
    base_schema: str,
    cli_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    catalog = databricks_workspace.catalog
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps([entry("ledger", "silver").model_dump()]))

    assert main(["catalog", "register", str(path), "--schema", base_schema]) == 0
    assert main(["catalog", "register", str(path), "--schema", base_schema]) == 0

    assert capsys.readouterr().out.splitlines() == [
        f"created  {catalog}.{base_schema}_silver.ledger",
        "1 entries, 0 failed",
        f"exists   {catalog}.{base_schema}_silver.ledger",
        "1 entries, 0 failed",
    ]


def test_results_print_as_the_runbook_shows() -> None:
    result = RegistrationResult("kpis", "kmflow.evidence_gold.kpis", "created")
    assert repr(result) == (
        "RegistrationResult(dataset_name='kpis', full_name='kmflow.evidence_gold.kpis', "
        "status='created', error=None)"
    )


def test_a_catalogue_entry_rejects_unknown_fields_and_layers() -> None:
    with pytest.raises(ValueError, match="retention"):
        DataCatalogEntry.model_validate(
            {"dataset_name": "t", "dataset_type": "s", "layer": "gold",
             "columns": {"id": "INT"}, "retention": 5}
        )  # fmt: skip
    with pytest.raises(ValueError, match="layer"):
        entry("t", "platinum")
