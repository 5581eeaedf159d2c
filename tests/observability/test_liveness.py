"""GET /api/v1/health/live: the process answers; no backend call, no key. Readiness
(/api/v1/health) is the one that follows the backend."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.storage.health import BackendHealth


def test_liveness_answers_without_a_key_or_the_backend(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = client.app_state["storage"]

    def no_backend_call(*args: object, **kwargs: object) -> BackendHealth:
        raise AssertionError("liveness asked the backend")

    monkeypatch.setattr(storage, "check", no_backend_call)
    monkeypatch.setattr(storage, "probes", no_backend_call)

    live = client.get("/api/v1/health/live", headers={"Authorization": ""})

    assert live.status_code == 200
    assert live.json() == {"status": "alive"}


@pytest.mark.parametrize("backend_name", ["local"])
def test_liveness_and_readiness_are_documented_apart(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    live = paths["/api/v1/health/live"]["get"]
    ready = paths["/api/v1/health"]["get"]

    assert "Liveness" in live["summary"] and "readiness" in live["description"]
    assert "Readiness" in ready["summary"] and "503" in ready["description"]
    assert "security" not in live
