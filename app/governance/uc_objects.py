"""Get-or-create for Unity Catalog objects through the REST API (the SDK), never through SQL.

Each object is looked up first and created only if missing, so a second run changes nothing
and needs no create privilege for what already exists (the runbook's catalog, say, which a
metastore admin usually creates). The REST API is used because it answers with typed errors
(`NotFound`, `AlreadyExists`, `PermissionDenied`) instead of SQL text, and because not every
SQL endpoint kmflow meets runs CREATE CATALOG / CREATE VOLUME (MiniLake does not).

Vendor errors stop here: callers get `GovernanceError` with the privilege that is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import (
    BadRequest,
    NotFound,
    PermissionDenied,
    ResourceConflict,
    Unauthenticated,
)
from databricks.sdk.errors.base import DatabricksError
from databricks.sdk.service.catalog import VolumeType

from app.governance.errors import GovernanceError

Outcome = Literal["created", "exists"]
TRANSPORT_ERRORS = (DatabricksError, requests.RequestException, TimeoutError)


def ensure_catalog(client: WorkspaceClient, name: str, storage_root: str | None = None) -> Outcome:
    return _ensure(
        f"catalog {name}",
        lambda: client.catalogs.get(name),
        lambda: client.catalogs.create(
            name=name, storage_root=storage_root, comment="kmflow evidence (runbook)"
        ),
        read_needs="USE CATALOG (or BROWSE) on it",
        create_needs=(
            "CREATE CATALOG on the metastore: ask a metastore admin to create it "
            "(the runbook expects it to exist), then run this again"
        ),
        bad_request_hint="if the metastore has no storage root, pass --storage-root",
    )


def ensure_schema(client: WorkspaceClient, catalog: str, name: str) -> Outcome:
    return _ensure(
        f"schema {catalog}.{name}",
        lambda: client.schemas.get(f"{catalog}.{name}"),
        lambda: client.schemas.create(name=name, catalog_name=catalog),
        read_needs="USE CATALOG on the catalog and USE SCHEMA on it",
        create_needs=f"USE CATALOG and CREATE SCHEMA on catalog {catalog}",
    )


def ensure_volume(client: WorkspaceClient, catalog: str, schema: str, name: str) -> Outcome:
    full_name = f"{catalog}.{schema}.{name}"
    return _ensure(
        f"volume {full_name}",
        lambda: client.volumes.read(full_name),
        lambda: client.volumes.create(catalog, schema, name, VolumeType.MANAGED),
        read_needs="USE CATALOG, USE SCHEMA and READ VOLUME on it",
        create_needs=f"USE SCHEMA and CREATE VOLUME on schema {catalog}.{schema}",
    )


def table_exists(client: WorkspaceClient, full_name: str) -> bool:
    """Whether the table is registered (tables created by SQL DDL count)."""
    try:
        answer = client.tables.exists(full_name)
    except TRANSPORT_ERRORS as error:
        needs = "USE SCHEMA on its schema"
        raise explain(error, f"cannot check table {full_name}", needs) from error
    return bool(answer.table_exists)


def _ensure(
    what: str,
    read: Callable[[], object],
    create: Callable[[], object],
    *,
    read_needs: str,
    create_needs: str,
    bad_request_hint: str | None = None,
) -> Outcome:
    try:
        read()
        return "exists"
    except NotFound:
        pass
    except TRANSPORT_ERRORS as error:
        raise explain(error, f"cannot read {what}", read_needs) from error
    try:
        create()
    except ResourceConflict:  # created by someone else since we looked
        return "exists"
    except TRANSPORT_ERRORS as error:
        raise explain(error, f"cannot create {what}", create_needs, bad_request_hint) from error
    return "created"


def explain(
    error: Exception, action: str, needs: str, bad_request_hint: str | None = None
) -> GovernanceError:
    """One line: what failed, why, and for a refusal the privilege that is missing."""
    if isinstance(error, PermissionDenied):
        return GovernanceError(f"{action}: permission denied; the caller needs {needs} ({error})")
    if isinstance(error, Unauthenticated):
        return GovernanceError(
            f"{action}: Databricks rejected the credentials (DATABRICKS_TOKEN, or "
            "DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET, whichever is set)"
        )
    if isinstance(error, BadRequest) and bad_request_hint:
        return GovernanceError(f"{action}: {error} ({bad_request_hint})")
    return GovernanceError(f"{action}: {error}")
