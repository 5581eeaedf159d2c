"""`kmflow databricks bootstrap`: every Unity Catalog object the runbook's prerequisites list.

In dependency order: the catalog, the base schema, the three medallion layer schemas, the
volume, then the `evidence_metadata` table, kmflow's own `kmflow_claims` (Idempotency-Keys
and leases every replica sees) and the evidence lifecycle's `evidence_withdrawals`,
`engagement_holds` and `evidence_audit` (the service creates these on first use otherwise,
which needs CREATE TABLE). The original runbook's SQL created the volume
`kmflow.evidence.raw_evidence` without ever creating its schema `kmflow.evidence`; here, as in
kmflow's runbook, the base schema comes before anything that lives in it.

Catalog, schemas and volume go through the REST API (looked up first, created only when
missing); the table through the SQL warehouse with the runbook's DDL, since a managed Delta
table is created by SQL. Running it again reports every object as `exists` and changes
nothing. It stops at the first object it cannot create: everything after depends on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from databricks.sdk import WorkspaceClient

from app.governance.errors import GovernanceError
from app.governance.sql_text import container_name
from app.governance.uc_objects import (
    Outcome,
    ensure_catalog,
    ensure_schema,
    ensure_volume,
    table_exists,
)
from app.governance.unity_catalog import STATEMENT_TIMEOUT_SECONDS, layer_schema
from app.storage.databricks.claims import CLAIMS_TABLE, create_claims_statement
from app.storage.databricks.lifecycle_sql import (
    AUDIT_TABLE,
    HOLDS_TABLE,
    WITHDRAWALS_TABLE,
    create_audit_statement,
    create_holds_statement,
    create_withdrawals_statement,
)
from app.storage.databricks.sql import StatementRunner, create_table_statement, quote_name
from app.storage.errors import StorageError

LAYERS = ("bronze", "silver", "gold")
METADATA_TABLE = "evidence_metadata"

Kind = Literal["catalog", "schema", "volume", "table"]


@dataclass(frozen=True)
class BootstrapStep:
    kind: Kind
    full_name: str
    outcome: Outcome


def bootstrap(
    client: WorkspaceClient,
    catalog: str,
    schema: str,
    volume: str,
    warehouse_id: str | None,
    storage_root: str | None = None,
) -> Iterator[BootstrapStep]:
    """Yield each object as it is made sure of; raises `GovernanceError` at the first failure."""
    for name, what in ((catalog, "catalog"), (schema, "schema"), (volume, "volume")):
        container_name(name, what)
    yield BootstrapStep("catalog", catalog, ensure_catalog(client, catalog, storage_root))
    for name in (schema, *(layer_schema(schema, layer) for layer in LAYERS)):
        yield BootstrapStep("schema", f"{catalog}.{name}", ensure_schema(client, catalog, name))
    yield BootstrapStep(
        "volume", f"{catalog}.{schema}.{volume}", ensure_volume(client, catalog, schema, volume)
    )
    for table, ddl in (
        (METADATA_TABLE, create_table_statement),
        (CLAIMS_TABLE, create_claims_statement),
        (WITHDRAWALS_TABLE, create_withdrawals_statement),
        (HOLDS_TABLE, create_holds_statement),
        (AUDIT_TABLE, create_audit_statement),
    ):
        yield BootstrapStep(
            "table",
            f"{catalog}.{schema}.{table}",
            _ensure_table(client, warehouse_id, catalog, schema, table, ddl),
        )


def _ensure_table(
    client: WorkspaceClient,
    warehouse_id: str | None,
    catalog: str,
    schema: str,
    table: str,
    ddl: Callable[[str], str],
) -> Outcome:
    if table_exists(client, f"{catalog}.{schema}.{table}"):
        return "exists"
    runner = StatementRunner(client, warehouse_id, STATEMENT_TIMEOUT_SECONDS)
    try:
        runner.run(ddl(quote_name(catalog, schema, table)))
    except StorageError as error:
        raise GovernanceError(
            f"cannot create table {catalog}.{schema}.{table}: {error} "
            f"(the caller needs USE SCHEMA and CREATE TABLE on {catalog}.{schema}, "
            "and CAN USE on the SQL warehouse)"
        ) from error
    return "created"
