"""Look straight at the Databricks side (table rows, Volume files), bypassing kmflow."""

from __future__ import annotations

from databricks.sdk.errors import NotFound

from app.storage.databricks.sql import StatementRunner
from tests.datalake.workspace import DatabricksWorkspace


def table_rows(
    workspace: DatabricksWorkspace, env: dict[str, str], engagement: str | None = None
) -> list[list[object]]:
    """(id, content_hash, size_bytes, metadata_json) rows, by id; duplicates kept. No table
    (nothing was ever written) is no rows."""
    client = workspace.client()
    name = f"{env['DATABRICKS_CATALOG']}.{env['DATABRICKS_SCHEMA']}.evidence_metadata"
    if not client.tables.exists(name).table_exists:
        return []
    runner = StatementRunner(client, workspace.warehouse_id, timeout=30)
    table = f"`{env['DATABRICKS_CATALOG']}`.`{env['DATABRICKS_SCHEMA']}`.`evidence_metadata`"
    where, params = ("WHERE engagement_id = :engagement", {"engagement": engagement})
    if engagement is None:
        where, params = "", {}
    return runner.run(
        f"SELECT id, content_hash, size_bytes, metadata_json FROM {table} {where} "  # noqa: S608
        "ORDER BY id",
        params,
    )


def volume_files(workspace: DatabricksWorkspace, env: dict[str, str]) -> list[str]:
    """Every file path under the evidence directory of the test's volume, recursively."""
    client = workspace.client()
    root = (
        f"/Volumes/{env['DATABRICKS_CATALOG']}/{env['DATABRICKS_SCHEMA']}/"
        f"{env['DATABRICKS_VOLUME']}/evidence_store"
    )
    found, directories = [], [root]
    while directories:
        try:
            entries = list(client.files.list_directory_contents(directories.pop()))
        except NotFound:
            continue
        for entry in entries:
            path = (entry.path or "").rstrip("/")
            (directories if entry.is_directory else found).append(path)
    return sorted(found)
