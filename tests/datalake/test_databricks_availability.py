"""The Databricks backend when the workspace is down, or not as kmflow left it: startup never
waits on it (liveness answers at once, readiness follows the workspace without a restart), a
stopped warehouse is told as one that starts again, a file deleted behind kmflow's back is
told as missing, and Unity Catalog names are used in the case Unity Catalog stores them.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import AUTH, settings_from_env, stored_record
from tests.datalake.relay import Relay
from tests.datalake.workspace import DatabricksWorkspace
from tests.live_server import LiveServer, free_port
from tests.multipart import multipart_body


def upload(client: TestClient, engagement: str, name: str, content: bytes) -> httpx.Response:
    body, content_type = multipart_body({"engagement_id": engagement}, name, content)
    return client.post(
        "/api/v1/evidence/upload", content=body, headers={"Content-Type": content_type}
    )


@pytest.mark.parametrize("method", ["pat", "oauth-m2m"])
def test_a_server_whose_workspace_is_down_is_live_at_once_and_ready_when_it_comes_back(
    env: dict[str, str], minilake: DatabricksWorkspace, tmp_path: Path, method: str
) -> None:
    """With OAuth M2M no client can even be built while the host is down (the SDK needs its
    OAuth discovery first): each use tries again, and the first after the outage succeeds."""
    if method == "oauth-m2m":
        env = {k: v for k, v in env.items() if k != "DATABRICKS_TOKEN"}
        env |= {**minilake.oauth_credentials(), "DATABRICKS_TOKEN": ""}
    port = free_port()  # nothing listens here until the relay does: connections are refused
    down = {
        **env,
        "DATABRICKS_HOST": f"http://127.0.0.1:{port}",
        # The SDK's own budget, as deployed: each call to a dead host retries for a minute.
        "DATABRICKS_RETRY_TIMEOUT_SECONDS": "60",
        "DATABRICKS_HTTP_TIMEOUT_SECONDS": "60",
    }
    target = urlsplit(minilake.host)
    relay = Relay(port, (str(target.hostname), int(target.port or 80)))

    started = time.monotonic()
    server = LiveServer(down, cwd=tmp_path, ready_path="/api/v1/health/live")
    try:
        live_after = time.monotonic() - started
        live = httpx.get(f"{server.url}/api/v1/health/live", timeout=10)
        not_ready = httpx.get(f"{server.url}/api/v1/health", timeout=60)
        relay.start()
        deadline = time.monotonic() + 60
        while True:
            ready = httpx.get(f"{server.url}/api/v1/health", timeout=60)
            if ready.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        still_live = httpx.get(f"{server.url}/api/v1/health/live", timeout=10)
    finally:
        server.stop()
        relay.stop()

    # Live before even one of the SDK's retry budgets could have run out (startup used to
    # spend several: building two clients, then its checks).
    assert live_after < 60, server.log()
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    assert not_ready.status_code == 503
    assert not_ready.json()["details"]["volume_reachable"] is False
    assert ready.status_code == 200, ready.text  # no restart: the same process
    assert ready.json()["details"]["volume_reachable"] is True
    assert still_live.status_code == 200
    assert minilake.secret not in server.log()


def test_content_of_a_record_whose_file_was_deleted_says_the_file_is_missing(
    env: dict[str, str], databricks_workspace: DatabricksWorkspace
) -> None:
    client = databricks_workspace.client()
    volume = ".".join(
        env[name] for name in ("DATABRICKS_CATALOG", "DATABRICKS_SCHEMA", "DATABRICKS_VOLUME")
    )
    with TestClient(create_app(settings_from_env(env))) as api:
        api.headers.update(AUTH)
        records = [upload(api, "ENG-GONE", f"{n}.txt", b"%d" % n).json() for n in range(2)]
        client.files.delete(records[0]["volume_path"])  # behind kmflow's back
        file_gone = api.get(f"/api/v1/evidence/ENG-GONE/{records[0]['id']}/content")
        record_kept = api.get(f"/api/v1/evidence/ENG-GONE/{records[0]['id']}")
        client.volumes.delete(volume)  # now the whole volume
        volume_gone = api.get(f"/api/v1/evidence/ENG-GONE/{records[1]['id']}/content")

    assert file_gone.status_code == 503
    assert file_gone.json()["error"] == "storage_unavailable"  # as the local backend says it
    assert f"the file of record {records[0]['id']} is missing" in file_gone.json()["detail"]
    assert "CREATE VOLUME" not in file_gone.json()["detail"]
    assert record_kept.json() == stored_record(records[0])
    assert volume_gone.status_code == 503
    assert volume_gone.json()["error"] == "storage_misconfigured"
    assert f"CREATE VOLUME IF NOT EXISTS {volume};" in volume_gone.json()["detail"]


def test_upper_case_unity_catalog_names_reach_the_objects_unity_catalog_stores(
    env: dict[str, str], databricks_workspace: DatabricksWorkspace
) -> None:
    upper = {
        **env,
        **{
            name: env[name].upper()
            for name in ("DATABRICKS_CATALOG", "DATABRICKS_SCHEMA", "DATABRICKS_VOLUME")
        },
    }
    with TestClient(create_app(settings_from_env(upper))) as api:
        api.headers.update(AUTH)
        record = upload(api, "ENG-CASE", "a.txt", b"case").json()
        listing = api.get("/api/v1/evidence/ENG-CASE")
        health = api.get("/api/v1/health")

    volume = f"/Volumes/{env['DATABRICKS_CATALOG']}/{env['DATABRICKS_SCHEMA']}/raw_evidence"
    assert record["volume_path"].startswith(f"{volume}/evidence_store/ENG-CASE/"), record
    assert listing.json()["items"] == [stored_record(record)]
    assert health.status_code == 200
    assert databricks_workspace.client().files.get_metadata(record["volume_path"]).content_length


def test_an_auto_stopped_warehouse_is_reported_as_starting_on_the_next_statement(
    env: dict[str, str], minilake: DatabricksWorkspace
) -> None:
    client = minilake.client()
    with TestClient(create_app(settings_from_env(env))) as api:
        api.headers.update(AUTH)
        client.warehouses.stop(minilake.warehouse_id).result()
        try:
            health = api.get("/api/v1/health")
            detail = api.get("/api/v1/health/detail")
        finally:
            client.warehouses.start(minilake.warehouse_id).result()

    assert health.status_code == 200  # the Volume is fine: still ready
    details = health.json()["details"]
    assert details["warehouse_state"] == "STOPPED"
    assert "starts on the next statement" in details["warehouse_detail"]
    [warehouse] = [c for c in detail.json()["checks"] if c["name"] == "warehouse running"]
    assert warehouse["essential"] is False
    assert (
        "STOPPED" in warehouse["detail"] and "starts on the next statement" in warehouse["detail"]
    )
