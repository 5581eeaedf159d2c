"""Register `DataCatalogEntry` records as Unity Catalog tables: the runbook's Step 3.

Each entry becomes a `CREATE TABLE IF NOT EXISTS` Delta table in the layer schema
`{schema}_{layer}` (created through the REST API when missing). One entry's problem (a bad
name, an unsupported type, a refused statement) is reported in its result and the others go
on: a bulk registration should say everything that is wrong in one run.

The entry's description becomes the table COMMENT; dataset type, layer, owner, classification
and retention days become `kmflow.*` table properties. The owner is a label for people, not a
Unity Catalog principal: ownership of the table is left to whoever runs the registration.
Retention is recorded, not enforced (Delta's own retention settings are about time travel,
not about how long evidence must be kept).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from databricks.sdk import WorkspaceClient

from app.core.models import DataCatalogEntry
from app.governance.errors import GovernanceError, InvalidDefinition
from app.governance.sql_text import column_type, container_name, identifier, string_literal
from app.governance.uc_objects import ensure_schema, table_exists
from app.storage.databricks.sql import StatementRunner, quote_name
from app.storage.errors import StorageError

logger = logging.getLogger(__name__)

# A stopped SQL warehouse takes minutes to start; DDL waits for it rather than failing.
STATEMENT_TIMEOUT_SECONDS = 300.0

Status = Literal["created", "exists", "failed"]


@dataclass(frozen=True)
class RegistrationResult:
    dataset_name: str
    full_name: str | None  # catalog.schema_layer.table; None when the name itself is invalid
    status: Status
    error: str | None = None


def register_tables(
    client: WorkspaceClient,
    catalog_entries: Iterable[DataCatalogEntry],
    catalog: str,
    schema: str,
    warehouse_id: str | None,
) -> list[RegistrationResult]:
    """One result per entry, in order. Raises only for an invalid `catalog` or `schema`."""
    container_name(catalog, "catalog")
    container_name(schema, "schema")
    runner = StatementRunner(client, warehouse_id, STATEMENT_TIMEOUT_SECONDS)
    layer_schemas: dict[str, str | None] = {}  # layer -> why it is unusable
    results = []
    for entry in catalog_entries:
        result = _register(client, runner, catalog, schema, entry, layer_schemas)
        logger.info("%s: %s %s", entry.dataset_name, result.status, result.error or "")
        results.append(result)
    return results


def layer_schema(schema: str, layer: str) -> str:
    """The medallion schema of a layer: `evidence` + `bronze` -> `evidence_bronze`."""
    return f"{schema}_{layer}"


def create_entry_statement(catalog: str, schema: str, entry: DataCatalogEntry) -> str:
    """The DDL for one entry in `{schema}_{layer}`; raises `InvalidDefinition` if unsafe."""
    table = quote_name(
        catalog, layer_schema(schema, entry.layer), identifier(entry.dataset_name, "dataset_name")
    )
    seen: set[str] = set()
    columns = []
    for column in entry.columns:
        name = identifier(column.name, "column name")
        if name.lower() in seen:  # Delta column names are case-insensitive
            raise InvalidDefinition(f"column {name!r} appears twice")
        seen.add(name.lower())
        not_null = "" if column.nullable else " NOT NULL"
        columns.append(f"    {quote_name(name)} {column_type(column.type)}{not_null}")
    properties = {
        "kmflow.dataset_type": entry.dataset_type,
        "kmflow.layer": entry.layer,
        "kmflow.classification": entry.classification,
    }
    if entry.owner is not None:
        properties["kmflow.owner"] = entry.owner
    if entry.retention_days is not None:
        properties["kmflow.retention_days"] = str(entry.retention_days)
    comment = f"\nCOMMENT {string_literal(entry.description)}" if entry.description else ""
    listed = ",\n".join(
        f"    {string_literal(key)} = {string_literal(value)}" for key, value in properties.items()
    )
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (\n" + ",\n".join(columns) + "\n)\n"
        f"USING DELTA{comment}\nTBLPROPERTIES (\n{listed}\n)"
    )


def _register(
    client: WorkspaceClient,
    runner: StatementRunner,
    catalog: str,
    schema: str,
    entry: DataCatalogEntry,
    layer_schemas: dict[str, str | None],
) -> RegistrationResult:
    target = layer_schema(schema, entry.layer)
    full_name = f"{catalog}.{target}.{entry.dataset_name}"
    try:
        statement = create_entry_statement(catalog, schema, entry)
    except GovernanceError as error:
        shown = full_name if _is_identifier(entry.dataset_name) else None
        return RegistrationResult(entry.dataset_name, shown, "failed", str(error))
    try:
        _ensure_layer_schema(client, catalog, target, entry.layer, layer_schemas)
        if table_exists(client, full_name):
            return RegistrationResult(entry.dataset_name, full_name, "exists")
        runner.run(statement)
    except (GovernanceError, StorageError) as error:
        return RegistrationResult(entry.dataset_name, full_name, "failed", str(error))
    return RegistrationResult(entry.dataset_name, full_name, "created")


def _ensure_layer_schema(
    client: WorkspaceClient,
    catalog: str,
    target: str,
    layer: str,
    layer_schemas: dict[str, str | None],
) -> None:
    """Create `{schema}_{layer}` once per run; a refusal fails that layer's entries only."""
    if layer not in layer_schemas:
        try:
            if ensure_schema(client, catalog, target) == "created":
                logger.info("created schema %s.%s", catalog, target)
            layer_schemas[layer] = None
        except GovernanceError as error:
            layer_schemas[layer] = str(error)
    problem = layer_schemas[layer]
    if problem is not None:
        raise GovernanceError(problem)


def _is_identifier(name: str) -> bool:
    try:
        identifier(name, "name")
    except GovernanceError:
        return False
    return True
