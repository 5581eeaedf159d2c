"""Fixtures for the Unity Catalog operations of the runbook (docs/databricks-upgrade-runbook.md),
against MiniLake or a real workspace."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from databricks.sdk.errors import NotFound

from tests.datalake.workspace import DatabricksWorkspace


@pytest.fixture
def base_schema(databricks_workspace: DatabricksWorkspace) -> Iterator[str]:
    """A fresh base schema name; on a real workspace, it and its layer schemas are dropped."""
    name = f"gov_{uuid.uuid4().hex[:12]}"
    yield name
    if databricks_workspace.bridge is None:
        client = databricks_workspace.client()
        for suffix in ("", "_bronze", "_silver", "_gold"):
            with contextlib.suppress(NotFound):
                client.schemas.delete(f"{databricks_workspace.catalog}.{name}{suffix}", force=True)


@pytest.fixture
def cli_env(
    databricks_workspace: DatabricksWorkspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, str]:
    """The environment `kmflow` reads, set for in-process `app.cli.main` calls."""
    env = {
        "DATABRICKS_HOST": databricks_workspace.host,
        **databricks_workspace.credentials(),
        "DATABRICKS_WAREHOUSE_ID": databricks_workspace.warehouse_id,
        "DATABRICKS_CATALOG": databricks_workspace.catalog,
        "DATABRICKS_RETRY_TIMEOUT_SECONDS": "10",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no stray .env file
    return env
