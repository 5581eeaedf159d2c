"""/metrics: the counters and histograms after a known sequence of requests, also summed
over several workers, and who may read them."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.storage.errors import StorageUnavailable
from tests.conftest import API_KEY, AUTH, ClientFactory
from tests.live_server import LiveServer
from tests.multipart import multipart_body
from tests.observability.scrape import Samples, parse, value

UPLOAD_ROUTE = "/api/v1/evidence/upload"
LIST_ROUTE = "/api/v1/evidence/{engagement_id}"
GET_ROUTE = "/api/v1/evidence/{engagement_id}/{evidence_id}"


def scrape(client: TestClient | httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def upload(client: TestClient | httpx.Client, content: bytes, **fields: str) -> int:
    body, content_type = multipart_body(fields, "memo.txt", content)
    response = client.post(UPLOAD_ROUTE, content=body, headers={"Content-Type": content_type})
    return response.status_code


@pytest.mark.parametrize("backend_name", ["local"])
def test_a_known_sequence_of_requests_is_counted_exactly(client: TestClient) -> None:
    before = scrape(client)
    sizes = [1000, 20_000, 300_000]
    statuses = [upload(client, os.urandom(size), engagement_id="ENG-M") for size in sizes]
    statuses.append(upload(client, b"no engagement"))  # 422
    for _ in range(2):
        assert client.get("/api/v1/evidence/ENG-M").status_code == 200
    assert client.get(f"/api/v1/evidence/ENG-M/{'0' * 32}").status_code == 404
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert statuses == [201, 201, 201, 422]
    requests = "kmflow_http_requests_total"
    assert moved(requests, method="POST", route=UPLOAD_ROUTE, status="201") == 3
    assert moved(requests, method="POST", route=UPLOAD_ROUTE, status="422") == 1
    assert moved(requests, method="GET", route=LIST_ROUTE, status="200") == 2
    assert moved(requests, method="GET", route=GET_ROUTE, status="404") == 1
    duration = "kmflow_http_request_duration_seconds_count"
    assert moved(duration, method="POST", route=UPLOAD_ROUTE) == 4
    assert moved("kmflow_upload_bytes_count", backend="local") == 3
    assert moved("kmflow_upload_bytes_sum", backend="local") == sum(sizes)
    assert moved("kmflow_upload_duration_seconds_count", backend="local") == 3
    operation = "kmflow_backend_operation_duration_seconds_count"
    assert moved(operation, backend="local", operation="upload") == 3  # the 422 never got there
    assert moved(operation, backend="local", operation="list") == 2
    assert moved(operation, backend="local", operation="get") == 1
    assert moved("kmflow_backend_errors_total", backend="local", operation="get") == 0  # a 404


@pytest.mark.parametrize("backend_name", ["local"])
def test_a_failing_backend_operation_is_counted_by_error_class(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = client.app_state["storage"]

    def unavailable(*_: object) -> None:  # a fault no real local disk produces on demand
        raise StorageUnavailable("disk went away")

    monkeypatch.setattr(storage, "_commit", unavailable)
    before = scrape(client)
    assert upload(client, b"evidence", engagement_id="ENG-F") == 503
    after = scrape(client)
    labels = {"backend": "local", "operation": "upload", "error": "StorageUnavailable"}
    errors = "kmflow_backend_errors_total"
    assert value(after, errors, **labels) - value(before, errors, **labels) == 1


@pytest.mark.parametrize("backend_name", ["local"])
def test_metrics_need_a_key_unless_made_public(make_client: ClientFactory) -> None:
    protected = make_client(api_keys=API_KEY)
    assert protected.get("/metrics").status_code == 401
    assert protected.get("/metrics", headers=AUTH).status_code == 200
    public = make_client(api_keys=API_KEY, metrics_public=True)
    assert public.get("/metrics").status_code == 200


@pytest.mark.slow
def test_two_workers_report_the_sum_of_their_counts(tmp_path: Path) -> None:
    env = {
        "STORAGE_BACKEND": "local",
        "LOCAL_STORAGE_PATH": str(tmp_path / "evidence_store"),
        "STATE_PATH": str(tmp_path / "kmflow_state"),
        "API_KEYS": API_KEY,
    }
    server = LiveServer(env, cwd=tmp_path, workers=2)
    try:
        statuses = []
        for n in range(24):  # a new connection each: the kernel spreads them over the workers
            with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
                statuses.append(upload(http, f"memo {n}".encode(), engagement_id="ENG-W"))
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
            samples = scrape(http)
    finally:
        server.stop()
    metric_files = list((tmp_path / "kmflow_state" / "metrics").glob("counter_*.db"))

    assert statuses == [201] * 24
    assert len(metric_files) >= 2, "both workers should have counted requests"
    requests = "kmflow_http_requests_total"
    assert value(samples, requests, method="POST", route=UPLOAD_ROUTE, status="201") == 24
    assert value(samples, "kmflow_upload_bytes_count", backend="local") == 24
