"""The harness's side of MiniLake: start it, create the objects a measurement needs (each in
a schema of its own, so rounds never share files or rows), set its latency model and read its
counts (requests by kind, statements by SQL keyword) through the model's `/_latency`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.catalog import VolumeType
from databricks.sdk.service.sql import StatementParameterListItem, StatementState

from app.storage.databricks.sql import create_table_statement, quote_name
from benchmarks.servers import ServerProcess, free_port, python_env
from tests.datalake.latency_model import CONTROL_PATH, Latency

TOKEN = "dapi-kmflow-bench"  # noqa: S105 - MiniLake takes any token; not a secret
CATALOG = "kmflow"
VOLUME = "raw_evidence"


def start_minilake(directory: Path, log_dir: Path) -> ServerProcess:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.minilake_server", "--port", str(port)]
    command += ["--data-dir", str(directory)]
    return ServerProcess(
        "minilake",
        command,
        port=port,
        env=python_env({}),
        cwd=directory,
        log_dir=log_dir,
        health_path="/_minilake/health",
    )


class MiniLake:
    """A started MiniLake with a warehouse and the `kmflow` catalog."""

    def __init__(self, server: ServerProcess) -> None:
        self.url = server.url
        self.client = WorkspaceClient(host=self.url, token=TOKEN)
        warehouse = self.client.warehouses.create(
            name="kmflow-bench", cluster_size="2X-Small"
        ).result()
        if warehouse.id is None:
            raise RuntimeError("MiniLake created a warehouse without an id")
        self.warehouse_id: str = warehouse.id
        self.client.catalogs.create(name=CATALOG)

    def new_schema(self, schema: str) -> None:
        """A schema with the `raw_evidence` volume, as `kmflow databricks bootstrap` makes."""
        self.client.schemas.create(name=schema, catalog_name=CATALOG)
        self.client.volumes.create(CATALOG, schema, VOLUME, VolumeType.MANAGED)

    def metadata_table(self, schema: str) -> str:
        """The quoted name of `schema`'s `evidence_metadata` table."""
        return quote_name(CATALOG, schema, "evidence_metadata")

    def create_metadata_table(self, schema: str) -> str:
        """`evidence_metadata` with the runbook's DDL; returns its quoted name."""
        table = self.metadata_table(schema)
        self.sql(create_table_statement(table))
        return table

    def sql(self, statement: str, parameters: Sequence[StatementParameterListItem] = ()) -> None:
        response = self.client.statement_execution.execute_statement(
            statement=statement,
            warehouse_id=self.warehouse_id,
            parameters=list(parameters) or None,
            wait_timeout="50s",
        )
        state = response.status.state if response.status else None
        if state is not StatementState.SUCCEEDED:
            raise RuntimeError(f"statement {state}: {response.status}")

    def env(self, schema: str) -> dict[str, str]:
        """kmflow's settings for the databricks backend on `schema`."""
        return {
            "STORAGE_BACKEND": "databricks",
            "DATABRICKS_HOST": self.url,
            "DATABRICKS_TOKEN": TOKEN,
            "DATABRICKS_WAREHOUSE_ID": self.warehouse_id,
            "DATABRICKS_CATALOG": CATALOG,
            "DATABRICKS_SCHEMA": schema,
            "DATABRICKS_VOLUME": VOLUME,
        }

    def reset_counts(self) -> None:
        httpx.delete(self.url + CONTROL_PATH + "/counts", timeout=10).raise_for_status()

    def counts(self) -> dict[str, int]:
        """Requests since the last reset, by kind ("files PUT", "sql execute", ...)."""
        counts: dict[str, int] = self._report()["requests"]
        return counts

    def statement_counts(self) -> dict[str, int]:
        """SQL statements since the last reset, by first keyword ("MERGE", "SELECT", ...)."""
        counts: dict[str, int] = self._report()["statements"]
        return counts

    def set_latency(self, latency: Latency) -> None:
        """Make MiniLake answer at `latency`'s speed from now on (it starts at zero)."""
        response = httpx.put(self.url + CONTROL_PATH, json=latency.to_json(), timeout=10)
        response.raise_for_status()

    def _report(self) -> dict[str, Any]:
        response = httpx.get(self.url + CONTROL_PATH, timeout=10)
        response.raise_for_status()
        report: dict[str, Any] = response.json()
        return report
