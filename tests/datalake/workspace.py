"""The Databricks peer for tests: MiniLake on 127.0.0.1 by default, a real workspace when
DATABRICKS_HOST and DATABRICKS_TOKEN are set in the environment (the runbook's staging run).

Each test gets its own schema and volume, so tests never see each other's rows and a real
workspace needs nothing but a catalog and the runbook's privileges on it.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.catalog import VolumeType

from tests.datalake.latency_model import ZERO, LatencyModel
from tests.datalake.minilake_bridge import MiniLakeBridge
from tests.live_server import free_port

# Distinctive, so tests can prove it never leaks into logs or responses.
MINILAKE_TOKEN = "dapi-minilake-secret-0123456789"


@dataclass
class DatabricksWorkspace:
    host: str
    token: str
    warehouse_id: str
    catalog: str
    bridge: MiniLakeBridge | None  # None against a real workspace
    # MiniLake at a workspace's speed, ZERO unless a test sets it; None against a real workspace
    latency: LatencyModel | None = None

    def client(self) -> WorkspaceClient:
        return WorkspaceClient(host=self.host, token=self.token)


@pytest.fixture(scope="session")
def databricks_workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabricksWorkspace]:
    host, token = os.environ.get("DATABRICKS_HOST"), os.environ.get("DATABRICKS_TOKEN")
    if host and token:
        client = WorkspaceClient(host=host, token=token)
        warehouse_id = os.environ.get("DATABRICKS_WAREHOUSE_ID") or next(
            w.id for w in client.warehouses.list() if w.id
        )
        catalog = os.environ.get("DATABRICKS_CATALOG", "kmflow")
        yield DatabricksWorkspace(host, token, warehouse_id, catalog, bridge=None, latency=None)
        return
    minilake = RunningMiniLake(tmp_path_factory.mktemp("minilake"))
    with minilake as (url, bridge):
        client = WorkspaceClient(host=url, token=MINILAKE_TOKEN)
        warehouse = client.warehouses.create(name="kmflow-tests", cluster_size="2X-Small").result()
        assert warehouse.id is not None
        client.catalogs.create(name="kmflow")
        yield DatabricksWorkspace(
            url, MINILAKE_TOKEN, warehouse.id, "kmflow", bridge, latency=minilake.latency
        )


@pytest.fixture
def databricks_env(databricks_workspace: DatabricksWorkspace) -> Iterator[dict[str, str]]:
    """Settings for a DatabricksBackend on a fresh schema and volume of the test workspace."""
    workspace = databricks_workspace
    client = workspace.client()
    schema = f"kmflow_test_{uuid.uuid4().hex[:12]}"
    client.schemas.create(name=schema, catalog_name=workspace.catalog)
    client.volumes.create(workspace.catalog, schema, "raw_evidence", VolumeType.MANAGED)
    yield {
        "STORAGE_BACKEND": "databricks",
        "DATABRICKS_HOST": workspace.host,
        "DATABRICKS_TOKEN": workspace.token,
        "DATABRICKS_WAREHOUSE_ID": workspace.warehouse_id,
        "DATABRICKS_CATALOG": workspace.catalog,
        "DATABRICKS_SCHEMA": schema,
        "DATABRICKS_VOLUME": "raw_evidence",
        "DATABRICKS_STATEMENT_TIMEOUT_SECONDS": "3",
        "DATABRICKS_RETRY_TIMEOUT_SECONDS": "10",
        "DATABRICKS_OUTBOX_RETRY_SECONDS": "0.5",
    }
    if workspace.bridge is None:
        client.schemas.delete(f"{workspace.catalog}.{schema}", force=True)


class RunningMiniLake:
    """MiniLake in this process, behind the bridge and the latency model (ZERO: a pass-through
    that counts), served by uvicorn on a free port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()

    def __enter__(self) -> tuple[str, MiniLakeBridge]:
        # MiniLake reads its settings at import time.
        os.environ["MINILAKE_DATA_DIR"] = str(self.data_dir)
        os.environ["MINILAKE_NOTEBOOK"] = "0"
        os.environ["MINILAKE_SPARK_PREWARM"] = "0"
        os.environ["MINILAKE_DUCKDB_EXTENSION_DIR"] = tempfile.mkdtemp(dir=self.data_dir)
        import uvicorn
        from minilake.app import create_app

        self.bridge = MiniLakeBridge(create_app())
        self.latency = LatencyModel(self.bridge, ZERO)
        port = free_port()
        config = uvicorn.Config(
            self.latency, host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("MiniLake did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{port}", self.bridge

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
