"""The bound on request heads that `kmflow serve` adds to httptools (app/api/http_protocol.py)."""

from __future__ import annotations

import http.client
import socket
from pathlib import Path

import pytest

from app.api.http_protocol import MAX_HEAD_BYTES, MAX_HEADERS
from tests.conftest import API_KEY
from tests.live_server import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    root: Path = tmp_path_factory.mktemp("protocol")
    env = {
        "STORAGE_BACKEND": "local",
        "LOCAL_STORAGE_PATH": str(root / "evidence_store"),
        "STATE_PATH": str(root / "kmflow_state"),
        "API_KEYS": API_KEY,
    }
    live = LiveServer(env, cwd=root)
    yield live  # type: ignore[misc]
    live.stop()


def ask(server: LiveServer, headers: dict[str, str]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", "/api/v1/health", headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    except (ConnectionError, http.client.RemoteDisconnected):
        return 0, b""
    finally:
        connection.close()


def test_a_head_under_the_limit_is_served(server: LiveServer) -> None:
    assert ask(server, {"X-Big": "a" * (MAX_HEAD_BYTES - 2048)})[0] == 200
    assert ask(server, {f"X-H{n}": "1" for n in range(MAX_HEADERS - 10)})[0] == 200


@pytest.mark.parametrize("kind", ["one huge header", "too many headers"])
def test_an_oversized_head_is_a_431_and_the_server_goes_on(server: LiveServer, kind: str) -> None:
    if kind == "one huge header":
        headers = {"X-Big": "a" * (4 * MAX_HEAD_BYTES)}
    else:
        headers = {f"X-H{n}": "1" for n in range(MAX_HEADERS + 1)}
    status, body = ask(server, headers)
    assert status == 431
    assert b"request_header_too_large" in body
    assert ask(server, {})[0] == 200


def test_the_count_starts_again_for_each_request_on_a_connection(server: LiveServer) -> None:
    header = "X-Big: " + "a" * (MAX_HEAD_BYTES // 2) + "\r\n"
    request = f"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n{header}\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request * 3)  # three keep-alive requests, 3/2 of the limit together
        received = b""
        while received.count(b"HTTP/1.1 200") < 3:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    assert b"431" not in received
