"""GET /api/v1/health/detail: every check with its latency, the version, the configuration
with secrets masked; a stopped warehouse is 'degraded' (evidence is still stored) and the
report recovers by itself when it runs again."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from app import __version__
from app.main import create_app
from tests.conftest import API_KEY, AUTH, settings_from_env
from tests.datalake.workspace import DatabricksWorkspace


def detail(client: TestClient) -> tuple[int, dict[str, object]]:
    response = client.get("/api/v1/health/detail")
    return response.status_code, response.json()


def checks_by_name(body: dict[str, object]) -> dict[str, dict[str, object]]:
    return {check["name"]: check for check in body["checks"]}  # type: ignore[index, union-attr]


@pytest.mark.parametrize("backend_name", ["local", "delta"])
def test_detail_times_each_check_and_masks_secrets(client: TestClient) -> None:
    assert client.get("/api/v1/health/detail", headers={"Authorization": ""}).status_code == 401

    status, body = detail(client)

    assert status == 200 and body["status"] == "ok"
    assert body["version"] == __version__
    checks = checks_by_name(body)
    first = {"local": "index readable", "delta": "table readable"}[body["storage"]]  # type: ignore[index]
    assert list(checks) == [first, "store writable", "free disk", "audit trail stored"]
    assert all(check["ok"] and check["latency_ms"] >= 0 for check in checks.values())
    assert "bytes free" in str(checks["free disk"]["detail"])
    configuration = body["configuration"]
    assert configuration["api_keys"] == [{"name": "key-1", "key": "**********", "roles": []}]  # type: ignore[index]
    assert API_KEY not in str(body)


@pytest.mark.parametrize("backend_name", ["local"])
def test_a_failing_essential_check_makes_the_detail_a_503(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = client.app_state["storage"]

    def broken_ping() -> None:  # a corrupt index cannot be made on demand: fault injected
        raise OSError("disk I/O error")

    monkeypatch.setattr(storage.index, "ping", broken_ping)
    status, body = detail(client)
    assert status == 503 and body["status"] == "unavailable"
    assert checks_by_name(body)["index readable"]["detail"] == "OSError: disk I/O error"


@pytest.mark.parametrize("backend_name", ["local"])
def test_an_audit_trail_that_cannot_be_stored_is_degraded_not_down(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = client.app_state["storage"]

    def store_down(events: object) -> None:  # a store that refuses on demand: injected
        raise OSError("disk I/O error")

    monkeypatch.setattr(storage.audit.store, "append", store_down)
    client.get("/api/v1/evidence/ENG/" + "0" * 32 + "/content")  # a 404: recorded too
    uploaded = client.post(
        "/api/v1/evidence/upload", data={"engagement_id": "ENG"}, files={"file": ("a", b"a")}
    )
    deadline = time.monotonic() + 10
    while storage.audit.last_error is None and time.monotonic() < deadline:
        time.sleep(0.05)

    status, body = detail(client)

    assert uploaded.status_code == 201  # the evidence is stored all the same
    assert status == 200 and body["status"] == "degraded"
    audit = checks_by_name(body)["audit trail stored"]
    assert audit["ok"] is False and audit["essential"] is False
    assert (
        audit["detail"]
        == "StorageUnavailable: 2 audit event(s) waiting; last error: disk I/O error"
    )
    assert client.get("/api/v1/health").json()["details"]["audit_events_waiting"] == 2


def test_a_stopped_warehouse_is_degraded_and_recovers(
    databricks_env: dict[str, str], databricks_workspace: DatabricksWorkspace, tmp_path: object
) -> None:
    if databricks_workspace.bridge is None:
        pytest.skip("stops the warehouse: MiniLake only")
    env = {**databricks_env, "STATE_PATH": f"{tmp_path}/state", "API_KEYS": API_KEY}
    client = databricks_workspace.client()
    with TestClient(create_app(settings_from_env(env))) as api:
        api.headers.update(AUTH)
        status_before, before = detail(api)
        client.warehouses.stop(databricks_workspace.warehouse_id).result()
        try:
            status_stopped, stopped = detail(api)
            stored_meanwhile = api.post(
                "/api/v1/evidence/upload",
                files={"file": ("memo.txt", b"still stored")},
                data={"engagement_id": "ENG-H"},
            )
        finally:
            client.warehouses.start(databricks_workspace.warehouse_id).result()
        deadline = time.monotonic() + 60
        while True:
            status_after, after = detail(api)
            if after["status"] == "ok" or time.monotonic() > deadline:
                break
            time.sleep(1)

    assert (status_before, before["status"]) == (200, "ok")
    assert (status_stopped, stopped["status"]) == (200, "degraded")
    stopped_checks = checks_by_name(stopped)
    assert stopped_checks["volume reachable"]["ok"] is True
    assert stopped_checks["warehouse running"]["ok"] is False
    assert "STOPPED" in str(stopped_checks["warehouse running"]["detail"])
    assert stored_meanwhile.status_code == 201
    assert (status_after, after["status"]) == (200, "ok")  # the queued row was delivered
    assert databricks_workspace.secret not in str(stopped) + str(after)
    assert stopped["configuration"]["databricks_token"] == "**********"  # type: ignore[index]
