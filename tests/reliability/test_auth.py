"""API keys: every evidence route refuses a missing or wrong key, keys are compared in
constant time, and no key or Databricks token reaches a log, an error, /health or the OpenAPI
document."""

from __future__ import annotations

import base64
import hmac
import json
import logging
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.cli import main
from tests.conftest import API_KEY, AUTH, ClientFactory
from tests.datalake.minilake_bridge import MiniLakeBridge
from tests.datalake.workspace import DatabricksWorkspace
from tests.live_server import LiveServer
from tests.multipart import multipart_body
from tests.reliability.observe import stored_paths

SECOND_KEY = "second-key-fedcba9876543210"
WRONG_KEY = "wrong-key-a1b2c3d4e5f6a7b8c9"  # never configured: must not be echoed either
EVIDENCE = "/api/v1/evidence"


def bad_credentials() -> dict[str, dict[str, str]]:
    basic = base64.b64encode(f"user:{API_KEY}".encode()).decode()
    return {
        "missing": {},
        "empty": {"Authorization": ""},
        "scheme-only": {"Authorization": "Bearer"},
        "scheme-and-space": {"Authorization": "Bearer "},
        "no-scheme": {"Authorization": API_KEY},
        "basic": {"Authorization": f"Basic {basic}"},
        "other-scheme": {"Authorization": f"Token {API_KEY}"},
        "wrong-same-length": {"Authorization": "Bearer " + "x" * len(API_KEY)},
        "wrong": {"Authorization": f"Bearer {WRONG_KEY}"},
        "prefix": {"Authorization": f"Bearer {API_KEY[:-1]}"},
        "extended": {"Authorization": f"Bearer {API_KEY}x"},
        "two-keys": {"Authorization": f"Bearer {API_KEY},{SECOND_KEY}"},
        "other-header": {"X-API-Key": API_KEY},
    }


def evidence_requests(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every evidence operation in the OpenAPI document, parameters filled
    in: routes added later are covered without touching this test."""
    found = []
    for template, operations in client.get("/openapi.json").json()["paths"].items():
        if template.startswith(EVIDENCE):
            path = template.format(engagement_id="AUTH", evidence_id="0" * 32)
            found += [(method.upper(), path) for method in sorted(operations)]
    return found


@pytest.mark.parametrize("backend_name", ["local"])
def test_every_evidence_route_refuses_missing_and_invalid_keys(
    make_client: ClientFactory, backend_env: dict[str, str]
) -> None:
    client = make_client(api_keys=f"{API_KEY},{SECOND_KEY}")
    body, content_type = multipart_body({"engagement_id": "AUTH"}, "a.txt", b"secret evidence")
    routes = evidence_requests(client)
    assert ("POST", f"{EVIDENCE}/upload") in routes and len(routes) >= 4

    refused = {}
    for method, path in routes:
        for name, headers in bad_credentials().items():
            response = client.request(
                method, path, content=body, headers={"Content-Type": content_type, **headers},
            )  # fmt: skip
            refused[(method, path, name)] = (
                response.status_code,
                response.json()["error"] if method != "HEAD" else "unauthorized",  # no body
                response.headers.get("www-authenticate"),
                API_KEY in response.text or WRONG_KEY in response.text,
            )

    assert set(refused.values()) == {(401, "unauthorized", "Bearer", False)}, refused
    assert stored_paths(backend_env) == []
    for key in (API_KEY, SECOND_KEY):  # both configured keys work
        stored = client.post(f"{EVIDENCE}/upload", content=body, headers={
            "Content-Type": content_type, "Authorization": f"Bearer {key}"})  # fmt: skip
        assert stored.status_code == 201, stored.text
    assert len(stored_paths(backend_env)) == 2


@pytest.mark.parametrize("backend_name", ["local"])
@pytest.mark.parametrize(
    "presented", [API_KEY, SECOND_KEY, WRONG_KEY, API_KEY[:8], ""], ids=[
        "first-key", "last-key", "wrong", "prefix", "empty"]
)  # fmt: skip
def test_keys_are_compared_in_constant_time(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch, presented: str
) -> None:
    """Every configured key is compared, in full, with hmac.compare_digest, whichever key (if
    any) matches: neither the comparison nor the number of comparisons depends on the key."""
    keys = [API_KEY, "middle-key-0123456789abcdef", SECOND_KEY]
    client = make_client(api_keys=",".join(keys))
    real_compare = hmac.compare_digest
    compared: list[tuple[object, object]] = []

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    response = client.get(f"{EVIDENCE}/AUTH", headers={"Authorization": f"Bearer {presented}"})

    assert response.status_code == (200 if presented in keys else 401)
    if presented:  # an empty credential is refused before any comparison
        assert sorted(compared) == sorted((presented.encode(), key.encode()) for key in keys)


@pytest.mark.parametrize("backend_name", ["local"])
def test_no_key_in_the_server_log_errors_health_or_openapi(
    backend_env: dict[str, str], tmp_path: Path
) -> None:
    server = LiveServer(
        {**backend_env, "API_KEYS": f"{API_KEY},{SECOND_KEY}", "MAX_UPLOAD_BYTES": "64"},
        cwd=tmp_path,
    )
    answers = []
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for headers in ({}, {"Authorization": f"Bearer {WRONG_KEY}"}, AUTH,
                            {"Authorization": f"Bearer {SECOND_KEY}"}):  # fmt: skip
                answers += [
                    http.post(f"{EVIDENCE}/upload", headers=headers,
                              data={"engagement_id": "LOGS"}, files={"file": ("a", b"x")}),
                    http.post(f"{EVIDENCE}/upload", headers=headers,
                              data={"engagement_id": "LOGS"}, files={"file": ("a", b"x" * 65)}),
                    http.post(f"{EVIDENCE}/upload", headers=headers, content=b"{}"),
                    http.get(f"{EVIDENCE}/LOGS", headers=headers, params={"cursor": "x"}),
                    http.get(f"{EVIDENCE}/LOGS/{'0' * 32}/content", headers=headers),
                ]  # fmt: skip
            answers += [http.get(path) for path in ("/api/v1/health", "/openapi.json", "/docs")]
        log = server.log()
    finally:
        server.stop()

    assert {a.status_code for a in answers} == {200, 201, 401, 404, 413, 415, 422}
    for secret in (API_KEY, SECOND_KEY, WRONG_KEY):
        assert secret not in log
        assert [a.request.url for a in answers if secret in a.text] == []


@pytest.mark.parametrize("backend_name", ["databricks"])
def test_no_databricks_token_in_logs_errors_health_or_openapi(
    make_client: ClientFactory,
    backend_env: dict[str, str],
    databricks_workspace: DatabricksWorkspace,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through failures that carry the SDK's error text: a Volume that refuses writes, one that
    is down, a missing volume; logs captured at DEBUG, the SDK's own included."""
    bridge: MiniLakeBridge | None = databricks_workspace.bridge
    if bridge is None:
        pytest.skip("needs MiniLake's fault injection; not run against a real workspace")
    token = backend_env["DATABRICKS_TOKEN"]
    caplog.set_level(logging.DEBUG)
    client = make_client(api_keys=API_KEY, databricks_retry_timeout_seconds=1)
    client.headers.update(AUTH)
    missing = make_client(api_keys=API_KEY, databricks_volume="no_such_volume")
    missing.headers.update(AUTH)
    volume = ".".join(
        backend_env[name]
        for name in ("DATABRICKS_CATALOG", "DATABRICKS_SCHEMA", "DATABRICKS_VOLUME")
    )

    def attempt(api: TestClient) -> list[httpx.Response]:
        return [
            api.post(f"{EVIDENCE}/upload", data={"engagement_id": "TOKEN"},
                     files={"file": ("a.txt", b"x")}),
            api.get("/api/v1/health"),
        ]  # fmt: skip

    answers = attempt(client) + attempt(missing)
    bridge.deny_writes.add(volume)
    try:
        answers += attempt(client)
    finally:
        bridge.deny_writes.discard(volume)
    bridge.add_fault(r"^/api/2\.(0/fs|1/unity-catalog/volumes)/", 503, times=1_000_000)
    try:
        answers += attempt(client)
    finally:
        bridge.faults.clear()
    answers += [client.get("/openapi.json")]

    assert sorted({a.status_code for a in answers}) == [200, 201, 503]
    assert [a.request.url for a in answers if token in a.text] == []
    assert "Databricks Files API unavailable" in caplog.text  # the errors were logged...
    assert token not in caplog.text  # ...without the token
    assert json.dumps(client.get("/api/v1/health").json()).find(token) == -1


def test_a_configuration_error_does_not_echo_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    short_key = "short-secret-7"  # refused: under 16 characters
    monkeypatch.setenv("API_KEYS", f"{API_KEY},{short_key}")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-token-in-a-bad-config-0123")
    monkeypatch.setenv("DATABRICKS_HOST", "not a url")

    assert main(["serve"]) == 2

    error = capsys.readouterr().err
    assert "API_KEYS" in error and "DATABRICKS_HOST" in error
    for secret in (API_KEY, short_key, "dapi-token-in-a-bad-config-0123"):
        assert secret not in error
