"""The Databricks peer for tests: MiniLake on 127.0.0.1 by default, a real workspace when
DATABRICKS_HOST and DATABRICKS_TOKEN, or DATABRICKS_HOST, DATABRICKS_CLIENT_ID and
DATABRICKS_CLIENT_SECRET (a service principal's OAuth M2M credentials), are set in the
environment (the runbook's staging run).

Each test gets its own schema and volume, so tests never see each other's rows and a real
workspace needs nothing but a catalog and the runbook's privileges on it.
"""

from __future__ import annotations

import os
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
from tests.datalake.minilake_bridge import MiniLakeBridge, minilake_environment
from tests.live_server import free_port

# Distinctive, so tests can prove they never leak into logs or responses.
MINILAKE_TOKEN = "dapi-minilake-secret-0123456789"
# A service principal's OAuth M2M credentials, registered with the bridge (application id,
# OAuth secret).
MINILAKE_CLIENT_ID = "6f1c7c1e-5a0e-4d47-9a41-0c6b3f0e1d2a"
MINILAKE_CLIENT_SECRET = "dose-minilake-oauth-secret-0123456789"


@dataclass
class DatabricksWorkspace:
    host: str
    token: str | None  # None: a real workspace reached with OAuth M2M only
    warehouse_id: str
    catalog: str
    bridge: MiniLakeBridge | None  # None against a real workspace
    # MiniLake at a workspace's speed, ZERO unless a test sets it; None against a real workspace
    latency: LatencyModel | None = None
    # A service principal's OAuth M2M credentials, when there are some (always on MiniLake).
    client_id: str | None = None
    client_secret: str | None = None

    def client(self) -> WorkspaceClient:
        if self.token is not None:
            return WorkspaceClient(host=self.host, token=self.token, auth_type="pat")
        return WorkspaceClient(
            host=self.host,
            client_id=self.client_id,
            client_secret=self.client_secret,
            auth_type="oauth-m2m",
        )

    @property
    def secret(self) -> str:
        """The secret tests use to reach the workspace (the token, else the client secret)."""
        secret = self.token or self.client_secret
        assert secret is not None
        return secret

    def credentials(self) -> dict[str, str]:
        """The variables of one authentication method: the token if there is one."""
        if self.token is not None:
            return {"DATABRICKS_TOKEN": self.token}
        return self.oauth_credentials()

    def oauth_credentials(self) -> dict[str, str]:
        if self.client_id is None or self.client_secret is None:
            pytest.skip("needs OAuth M2M credentials: DATABRICKS_CLIENT_ID/_SECRET unset")
        return {"DATABRICKS_CLIENT_ID": self.client_id,
                "DATABRICKS_CLIENT_SECRET": self.client_secret}  # fmt: skip


@pytest.fixture(scope="session")
def databricks_workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabricksWorkspace]:
    host, token = os.environ.get("DATABRICKS_HOST"), os.environ.get("DATABRICKS_TOKEN")
    client_id = os.environ.get("DATABRICKS_CLIENT_ID")
    client_secret = os.environ.get("DATABRICKS_CLIENT_SECRET")
    if host and (token or (client_id and client_secret)):
        staging = DatabricksWorkspace(
            host, token or None, "", os.environ.get("DATABRICKS_CATALOG", "kmflow"), None,
            client_id=client_id or None, client_secret=client_secret or None,
        )  # fmt: skip
        staging.warehouse_id = os.environ.get("DATABRICKS_WAREHOUSE_ID") or next(
            w.id for w in staging.client().warehouses.list() if w.id
        )
        yield staging
        return
    minilake = RunningMiniLake(tmp_path_factory.mktemp("minilake"))
    with minilake as (url, bridge):
        bridge.add_oauth_client(MINILAKE_CLIENT_ID, MINILAKE_CLIENT_SECRET)
        client = WorkspaceClient(host=url, token=MINILAKE_TOKEN)
        warehouse = client.warehouses.create(name="kmflow-tests", cluster_size="2X-Small").result()
        assert warehouse.id is not None
        client.catalogs.create(name="kmflow")
        yield DatabricksWorkspace(
            url, MINILAKE_TOKEN, warehouse.id, "kmflow", bridge, latency=minilake.latency,
            client_id=MINILAKE_CLIENT_ID, client_secret=MINILAKE_CLIENT_SECRET,
        )  # fmt: skip


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
        **workspace.credentials(),
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


@pytest.fixture
def bridge(databricks_workspace: DatabricksWorkspace) -> Iterator[MiniLakeBridge]:
    """The bridge in front of MiniLake, to add workspace behaviours and faults; its faults are
    cleared after the test. Tests that need it are skipped against a real workspace."""
    if databricks_workspace.bridge is None:
        pytest.skip("needs the bridge's behaviours and faults; not run against a real workspace")
    yield databricks_workspace.bridge
    databricks_workspace.bridge.faults.clear()


@pytest.fixture
def minilake(databricks_workspace: DatabricksWorkspace) -> DatabricksWorkspace:
    """The test workspace when it is MiniLake (behind the bridge, whose controls the test
    uses: faults, stopped warehouses, denied privileges); skipped against a real workspace."""
    if databricks_workspace.bridge is None:
        pytest.skip("needs MiniLake's controls; not run against a real workspace")
    return databricks_workspace


class RunningMiniLake:
    """MiniLake in this process, behind the bridge and the latency model (ZERO: a pass-through
    that counts), served by uvicorn on a free port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()

    def __enter__(self) -> tuple[str, MiniLakeBridge]:
        minilake_environment(self.data_dir)
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
