"""Request ids and the per-request log line: taken from the client or made, echoed back, and
on every log line the request causes, in JSON when LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import API_KEY, AUTH
from tests.live_server import LiveServer
from tests.multipart import multipart_body


@pytest.mark.parametrize("backend_name", ["local"])
def test_every_log_line_of_a_request_carries_its_id(
    client: TestClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = client.app_state["storage"]
    original = storage.list

    def noisy_list(*args: object, **kwargs: object) -> object:
        logging.getLogger("app.storage.local.backend").warning("listing on a worker thread")
        return original(*args, **kwargs)

    monkeypatch.setattr(storage, "list", noisy_list)
    with caplog.at_level(logging.INFO):
        response = client.get("/api/v1/evidence/ENG-1", headers={"X-Request-ID": "abc"})

    assert response.headers["X-Request-ID"] == "abc"
    lines = [r for r in caplog.records if r.name in ("app.storage.local.backend", "app.request")]
    assert [r.name for r in lines] == ["app.storage.local.backend", "app.request"]
    assert [getattr(r, "request_id", None) for r in lines] == ["abc", "abc"]
    request_line = lines[1]
    assert (request_line.status, request_line.route) == (200, "/api/v1/evidence/{engagement_id}")  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend_name", ["local"])
@pytest.mark.parametrize("sent", [None, "has spaces", "x" * 129, "a/b", "new\\r\\nline"])
def test_a_missing_or_unusable_request_id_is_replaced(client: TestClient, sent: str | None) -> None:
    headers = {"X-Request-ID": sent} if sent is not None else {}
    response = client.get(f"/api/v1/evidence/ENG-1/{'0' * 32}", headers=headers)
    request_id = response.headers["X-Request-ID"]
    assert request_id != sent and len(request_id) == 32
    assert response.status_code == 404
    assert response.json()["request_id"] == request_id  # error bodies name it too


@pytest.mark.slow
def test_json_logs_of_a_real_server(tmp_path: Path) -> None:
    env = {
        "STORAGE_BACKEND": "local",
        "LOCAL_STORAGE_PATH": str(tmp_path / "evidence_store"),
        "STATE_PATH": str(tmp_path / "kmflow_state"),
        "API_KEYS": API_KEY,
        "LOG_FORMAT": "json",
    }
    server = LiveServer(env, cwd=tmp_path)
    try:
        body, content_type = multipart_body({"engagement_id": "ENG-J"}, "memo.txt", b"x" * 1234)
        with httpx.Client(base_url=server.url, headers=AUTH) as http:
            uploaded = http.post(
                "/api/v1/evidence/upload",
                content=body,
                headers={"Content-Type": content_type, "X-Request-ID": "abc"},
            )
            refused = http.get("/api/v1/evidence/ENG-J", headers={"Authorization": "Bearer no"})
    finally:
        server.stop()
    entries = [json.loads(line) for line in server.log().splitlines() if line.strip()]

    assert uploaded.status_code == 201 and uploaded.headers["X-Request-ID"] == "abc"
    [line] = [e for e in entries if e["request_id"] == "abc"]
    assert line["logger"] == "app.request"
    assert line["method"] == "POST" and line["route"] == "/api/v1/evidence/upload"
    assert line["status"] == 201 and line["bytes_in"] == len(body)
    assert (line["engagement_id"], line["evidence_id"]) == ("ENG-J", uploaded.json()["id"])
    assert line["duration_ms"] > 0
    [started] = [e for e in entries if "started" in e["message"]]
    assert "STORAGE_BACKEND=local" in started["message"] and "auth=api_keys" in started["message"]
    assert str(tmp_path / "evidence_store") in started["message"]
    assert refused.status_code == 401
    assert [e["status"] for e in entries if e["request_id"] == refused.json()["request_id"]] == [
        401
    ]
    assert API_KEY not in server.log() and "Bearer" not in server.log()
