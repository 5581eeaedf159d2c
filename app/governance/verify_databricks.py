"""The Databricks-only items of `kmflow verify`, read with the operator's own credentials.

Each item reports what it saw; an error talking to Databricks fails that item only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound

from app.governance.bootstrap import LAYERS, METADATA_TABLE
from app.governance.catalog_file import load_catalog_entries
from app.governance.checklist import (
    DATABRICKS_ITEMS,
    VERIFY_ENGAGEMENT_PREFIX,
    CheckResult,
    VerifyOptions,
)
from app.governance.errors import GovernanceError
from app.governance.grants import Securable, audit_grants
from app.governance.uc_objects import TRANSPORT_ERRORS, explain, table_exists
from app.governance.unity_catalog import layer_schema
from app.settings import Settings
from app.storage.databricks.client import workspace_client
from app.storage.databricks.sql import StatementRunner, quote_name
from app.storage.databricks.volume import VOLUME_DIRECTORY
from app.storage.errors import StorageError

_ERRORS = (GovernanceError, StorageError, *TRANSPORT_ERRORS)
_ROW_POLL_SECONDS = 1.0


def databricks_checks(
    settings: Settings, options: VerifyOptions, record: dict[str, Any] | None
) -> Iterator[CheckResult]:
    try:
        client = workspace_client(settings)
    except StorageError as error:
        for name in DATABRICKS_ITEMS:
            yield CheckResult(name, "FAIL", str(error))
        return
    catalog, schema = settings.databricks_catalog, settings.databricks_schema
    yield _guarded("metadata row", lambda: check_metadata_row(client, settings, options, record))
    yield _guarded("volume file count", lambda: check_volume_count(client, settings, options))
    yield _guarded(
        "unity catalog tables", lambda: check_registrations(client, catalog, schema, options)
    )
    yield _guarded("service principal grants", lambda: check_grants(client, settings, options))


def _guarded(name: str, check: Callable[[], CheckResult]) -> CheckResult:
    try:
        return check()
    except _ERRORS as error:
        return CheckResult(name, "FAIL", str(error))


def check_metadata_row(
    client: WorkspaceClient,
    settings: Settings,
    options: VerifyOptions,
    record: dict[str, Any] | None,
) -> CheckResult:
    name = "metadata row"
    if record is None or "id" not in record:
        return CheckResult(name, "SKIP", "no test upload to look for (see the item above)")
    table = quote_name(settings.databricks_catalog, settings.databricks_schema, METADATA_TABLE)
    runner = StatementRunner(
        client, settings.databricks_warehouse_id, settings.databricks_statement_timeout_seconds
    )
    sql = f"SELECT id, content_hash, size_bytes FROM {table} WHERE id = :id"  # noqa: S608
    deadline = time.monotonic() + options.row_wait_seconds
    while not (rows := runner.run(sql, {"id": record["id"]})):
        if time.monotonic() >= deadline:
            return CheckResult(
                name,
                "FAIL",
                f"no row for {record['id']} in {table} after {options.row_wait_seconds:g}s "
                "(see pending_metadata_rows in the health answer)",
            )
        time.sleep(_ROW_POLL_SECONDS)
    row_id, content_hash, size = rows[0]
    if content_hash != record.get("content_hash") or int(size) != record.get("size_bytes"):
        detail = f"row {row_id} says sha256 {content_hash}, {size} bytes; the upload disagrees"
        return CheckResult(name, "FAIL", detail)
    return CheckResult(name, "PASS", f"{table} has the row of {row_id}")


def check_volume_count(
    client: WorkspaceClient, settings: Settings, options: VerifyOptions
) -> CheckResult:
    name = "volume file count"
    if options.inventory is None:
        return CheckResult(name, "SKIP", "no --inventory given (the runbook's Step 1 file)")
    expected = count_inventory(options.inventory)
    root = (
        f"/Volumes/{settings.databricks_catalog}/{settings.databricks_schema}/"
        f"{settings.databricks_volume}/{VOLUME_DIRECTORY}"
    )
    found = count_volume_files(client, root)
    detail = (
        f"{found} files under {root} (recursive, {VERIFY_ENGAGEMENT_PREFIX}* left out), "
        f"{expected} in {options.inventory}"
    )
    return CheckResult(name, "PASS" if found == expected else "FAIL", detail)


def count_inventory(path: Path) -> int:
    """Lines of `find ./evidence_store -type f`, less earlier verify uploads."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise GovernanceError(f"cannot read the inventory {path}: {error}") from error
    return sum(1 for line in lines if line.strip() and f"/{VERIFY_ENGAGEMENT_PREFIX}" not in line)


def count_volume_files(client: WorkspaceClient, root: str) -> int:
    """Files at any depth (the Files API lists one level), outside verify engagements."""
    count = 0
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            entries = list(client.files.list_directory_contents(directory))
        except NotFound:
            if directory == root:
                return 0  # nothing stored yet
            raise
        except TRANSPORT_ERRORS as error:
            raise explain(error, f"cannot list {directory}", "READ VOLUME on the volume") from error
        for entry in entries:
            if entry.is_directory:
                top_level = directory == root
                if not (top_level and (entry.name or "").startswith(VERIFY_ENGAGEMENT_PREFIX)):
                    pending.append(entry.path or f"{directory}/{entry.name}")
            else:
                count += 1
    return count


def check_registrations(
    client: WorkspaceClient, catalog: str, schema: str, options: VerifyOptions
) -> CheckResult:
    name = "unity catalog tables"
    missing: list[str] = []
    if not table_exists(client, f"{catalog}.{schema}.{METADATA_TABLE}"):
        missing.append(f"table {catalog}.{schema}.{METADATA_TABLE}")
    counts = {}
    for layer in LAYERS:
        target = f"{catalog}.{layer_schema(schema, layer)}"
        try:
            client.schemas.get(target)
            tables = client.tables.list(catalog, layer_schema(schema, layer))
            counts[target] = len(list(tables))
        except NotFound:
            missing.append(f"schema {target}")
        except TRANSPORT_ERRORS as error:
            raise explain(error, f"cannot list {target}", "USE SCHEMA on it") from error
    detail = ", ".join(f"{target}: {n} tables" for target, n in counts.items())
    if options.catalog_entries is not None:
        entries, problems = load_catalog_entries(options.catalog_entries)
        missing += [f"entry {p.position} of {options.catalog_entries}: {p.error}" for p in problems]
        for entry in entries:
            full_name = f"{catalog}.{layer_schema(schema, entry.layer)}.{entry.dataset_name}"
            if not table_exists(client, full_name):
                missing.append(f"table {full_name}")
        detail += f"; {len(entries)} catalogue entries checked"
    if missing:
        return CheckResult(name, "FAIL", "missing: " + "; ".join(missing))
    return CheckResult(name, "PASS", f"{catalog}.{schema}.{METADATA_TABLE} exists; {detail}")


def check_grants(
    client: WorkspaceClient, settings: Settings, options: VerifyOptions
) -> CheckResult:
    name = "service principal grants"
    catalog, schema = settings.databricks_catalog, settings.databricks_schema
    schemas = [schema, *(layer_schema(schema, layer) for layer in LAYERS)]
    securables = [
        Securable("CATALOG", catalog),
        *(Securable("SCHEMA", f"{catalog}.{each}") for each in schemas),
        Securable("VOLUME", f"{catalog}.{schema}.{settings.databricks_volume}"),
        Securable("TABLE", f"{catalog}.{schema}.{METADATA_TABLE}"),
    ]
    # Every table in those schemas too: a broad grant on one registered table counts.
    for each in schemas:
        try:
            tables = list(client.tables.list(catalog, each))
        except NotFound:
            continue
        except TRANSPORT_ERRORS as error:
            raise explain(error, f"cannot list {catalog}.{each}", "USE SCHEMA on it") from error
        securables += [
            Securable("TABLE", table.full_name)
            for table in tables
            if table.full_name and table.full_name != f"{catalog}.{schema}.{METADATA_TABLE}"
        ]
    audit = audit_grants(client, options.principal, securables)
    if audit.too_broad:
        return CheckResult(name, "FAIL", "too broad: " + "; ".join(audit.too_broad))
    if not audit.grants:
        return CheckResult(
            name,
            "FAIL",
            f"{options.principal} holds no privileges here: check --principal "
            "(a service principal is named by its application id)",
        )
    detail = f"{options.principal} holds only the runbook's privileges ({len(audit.grants)})"
    if audit.missing:
        detail += "; not granted: " + "; ".join(audit.missing)
    return CheckResult(name, "PASS", detail)
