"""OAuth M2M, the runbook's service principal, as a first-class way to reach Databricks:
DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET from the environment or `.env`, passed to the SDK
explicitly, never beside a token; refusals name the variables to check, never the secret.

Against MiniLake, whose missing OAuth endpoints the bridge emulates (see its docstring), or a
real workspace when DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET are set for it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import API_KEY, AUTH, settings_from_env, stored_record
from tests.datalake.workspace import DatabricksWorkspace
from tests.live_server import LiveServer
from tests.multipart import multipart_body

# Distinctive, so that a leak of it anywhere is found.
WRONG_SECRET = "dose-wrong-oauth-secret-9876543210"


def upload(client: TestClient | httpx.Client, engagement: str, name: str, content: bytes
           ) -> httpx.Response:  # fmt: skip
    body, content_type = multipart_body({"engagement_id": engagement}, name, content)
    return client.post(
        "/api/v1/evidence/upload", content=body, headers={"Content-Type": content_type}
    )


def oauth_env(databricks_env: dict[str, str], workspace: DatabricksWorkspace, tmp_path: Path
              ) -> dict[str, str]:  # fmt: skip
    """The test's settings with OAuth M2M in place of the token."""
    env = {name: value for name, value in databricks_env.items() if name != "DATABRICKS_TOKEN"}
    return {**env, **workspace.oauth_credentials(), "STATE_PATH": str(tmp_path / "state"),
            "API_KEYS": API_KEY}  # fmt: skip


def test_upload_and_list_through_oauth_m2m_read_from_dotenv(
    databricks_env: dict[str, str], databricks_workspace: DatabricksWorkspace, tmp_path: Path
) -> None:
    """A real `kmflow serve` whose client credentials are only in `.env` (which the SDK never
    reads by itself): kmflow must hand them over."""
    workspace = databricks_workspace
    credentials = workspace.oauth_credentials()
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in credentials.items()))
    env = oauth_env(databricks_env, workspace, tmp_path)
    for name in credentials:
        del env[name]
    env["DATABRICKS_TOKEN"] = ""  # unset, whatever this shell holds
    issued_before = dict(workspace.bridge.oauth_requests) if workspace.bridge else {}

    server = LiveServer(env, cwd=tmp_path)
    try:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
            record = upload(http, "ENG-OAUTH", "memo.txt", b"stored by a service principal")
            listing = http.get("/api/v1/evidence/ENG-OAUTH")
            content = http.get(f"/api/v1/evidence/ENG-OAUTH/{record.json()['id']}/content")
            health = http.get("/api/v1/health")
    finally:
        server.stop()

    assert record.status_code == 201, record.text
    assert listing.json()["items"] == [stored_record(record.json())]
    assert content.content == b"stored by a service principal"
    assert health.status_code == 200
    assert workspace.secret not in server.log()
    if workspace.bridge is not None:  # every call carried a token the token endpoint issued
        client_id = credentials["DATABRICKS_CLIENT_ID"]
        before = issued_before.get(client_id, 0)
        assert workspace.bridge.oauth_requests.get(client_id, 0) > before


def test_health_detail_masks_the_client_secret_like_the_token(
    databricks_env: dict[str, str], databricks_workspace: DatabricksWorkspace, tmp_path: Path
) -> None:
    env = oauth_env(databricks_env, databricks_workspace, tmp_path)
    with TestClient(create_app(settings_from_env(env))) as api:
        api.headers.update(AUTH)
        detail = api.get("/api/v1/health/detail")

    configuration = detail.json()["configuration"]
    assert detail.status_code == 200, detail.text
    assert configuration["databricks_client_secret"] == "**********"
    assert configuration["databricks_client_id"] == env["DATABRICKS_CLIENT_ID"]
    assert configuration["databricks_token"] is None
    assert env["DATABRICKS_CLIENT_SECRET"] not in detail.text


def test_a_wrong_client_secret_names_the_client_credentials_and_never_the_secret(
    databricks_env: dict[str, str],
    databricks_workspace: DatabricksWorkspace,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {**oauth_env(databricks_env, databricks_workspace, tmp_path),
           "DATABRICKS_CLIENT_SECRET": WRONG_SECRET}  # fmt: skip
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(settings_from_env(env))) as api:
        api.headers.update(AUTH)
        stored = upload(api, "ENG-WRONG-SECRET", "a.txt", b"never stored")
        health = api.get("/api/v1/health")
        detail = api.get("/api/v1/health/detail")

    assert stored.status_code == 503
    assert stored.json()["error"] == "storage_misconfigured"
    assert "check DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET" in stored.json()["detail"]
    assert "DATABRICKS_TOKEN" not in stored.json()["detail"]
    assert health.status_code == 503
    assert (
        "DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET" in health.json()["details"]["volume_error"]
    )
    for text in (stored.text, health.text, detail.text, caplog.text):
        assert WRONG_SECRET not in text
        assert databricks_workspace.secret not in text


def test_the_grant_hint_names_the_oauth_client_id(
    databricks_env: dict[str, str], minilake: DatabricksWorkspace, tmp_path: Path
) -> None:
    """Grants name a service principal by its application id: the client id, when known."""
    assert minilake.bridge is not None
    oauth = oauth_env(databricks_env, minilake, tmp_path)
    token = {**databricks_env, "STATE_PATH": str(tmp_path / "state-pat"), "API_KEYS": API_KEY}
    volume = ".".join(
        databricks_env[name]
        for name in ("DATABRICKS_CATALOG", "DATABRICKS_SCHEMA", "DATABRICKS_VOLUME")
    )
    minilake.bridge.deny_writes.add(volume)
    try:
        details = []
        for env in (oauth, token):
            with TestClient(create_app(settings_from_env(env))) as api:
                api.headers.update(AUTH)
                details.append(upload(api, "ENG-GRANT", "a.txt", b"denied").json()["detail"])
    finally:
        minilake.bridge.deny_writes.discard(volume)

    with_client_id, with_token = details
    assert f"GRANT WRITE VOLUME ON VOLUME {volume} TO `{oauth['DATABRICKS_CLIENT_ID']}`;" in (
        with_client_id
    )
    assert "`kmflow-api`" not in with_client_id + with_token
    assert "TO `<service principal application id>`;" in with_token
    assert "named by its application id" in with_token


def test_the_bridge_token_endpoint_speaks_oauth_client_credentials(
    minilake: DatabricksWorkspace,
) -> None:
    """The emulated endpoints, as the SDK's `retrieve_token` calls them (basic auth) and as
    RFC 6749 also allows (client_secret_post); a wrong secret is invalid_client."""
    assert minilake.client_id is not None and minilake.client_secret is not None
    discovery = httpx.get(f"{minilake.host}/oidc/.well-known/oauth-authorization-server").json()
    token_url = discovery["token_endpoint"]
    grant = {"grant_type": "client_credentials", "scope": "all-apis"}

    basic = httpx.post(token_url, data=grant, auth=(minilake.client_id, minilake.client_secret))
    form = httpx.post(token_url, data={**grant, "client_id": minilake.client_id,
                                       "client_secret": minilake.client_secret})  # fmt: skip
    wrong = httpx.post(token_url, data=grant, auth=(minilake.client_id, WRONG_SECRET))

    for answer in (basic, form):
        assert answer.status_code == 200
        body = answer.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
        assert body["scope"] == "all-apis" and body["access_token"]
    assert basic.json()["access_token"] != form.json()["access_token"]
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert WRONG_SECRET not in json.dumps(wrong.json())


def test_sdk_variables_in_the_environment_do_not_change_the_configured_method(
    databricks_env: dict[str, str],
    minilake: DatabricksWorkspace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK also reads its own variables from the process environment; another method's
    there (basic auth, even DATABRICKS_AUTH_TYPE) neither joins nor overrides kmflow's."""
    assert minilake.bridge is not None and minilake.client_id is not None
    monkeypatch.setenv("DATABRICKS_AUTH_TYPE", "basic")
    monkeypatch.setenv("DATABRICKS_USERNAME", "someone@example.com")
    monkeypatch.setenv("DATABRICKS_PASSWORD", "not-kmflows-password")
    env = oauth_env(databricks_env, minilake, tmp_path)
    before = minilake.bridge.oauth_requests.get(minilake.client_id, 0)

    with TestClient(create_app(settings_from_env(env))) as api:
        api.headers.update(AUTH)
        stored = upload(api, "ENG-AMBIENT", "a.txt", b"oauth, whatever else is set")

    assert stored.status_code == 201, stored.text
    assert minilake.bridge.oauth_requests.get(minilake.client_id, 0) > before
