"""Clients that drop the connection mid-body leave nothing behind, and the server serves on.

A raw client declares a body (64 KiB, or 200 MiB), sends part of it, waits until the server has
staged the upload, then hangs up: with a FIN, with an RST (a killed client, a middlebox), or
mid-way through a chunked body. Afterwards there is no file in the store, no record, no
partial upload in STATE_PATH, and the next upload is stored as usual. Every backend.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import AUTH, BACKENDS
from tests.datalake.workspace import DatabricksWorkspace
from tests.live_server import LiveServer
from tests.multipart import CHUNK, multipart_envelope
from tests.reliability.observe import all_records, staging_leftovers, stored_paths
from tests.reliability.raw_http import UPLOAD, connect, hang_up, request_head

MIB = 1024 * 1024
BOUNDARY = "dropped"


def staged_bytes(env: dict[str, str]) -> int | None:
    """Bytes in the one partial upload in STATE_PATH, None if there is none."""
    parts = [p for p in staging_leftovers(env) if p.endswith(".part")]
    if not parts:
        return None
    return (Path(env["STATE_PATH"]) / parts[0]).stat().st_size


def wait_until(condition: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize(
    ("size", "sent", "how"),
    [
        (64 * 1024, 32 * 1024, "close"),
        (64 * 1024, 32 * 1024, "reset"),
        (64 * 1024, 32 * 1024, "chunked"),
        pytest.param(200 * MIB, 120 * MIB, "reset", marks=pytest.mark.slow),
    ],
    ids=["small-fin", "small-rst", "small-chunked", "200MiB-rst"],
)
def test_a_client_dropping_mid_body_leaves_no_file_record_or_temp_file(
    live_server: LiveServer,
    backend_env: dict[str, str],
    request: pytest.FixtureRequest,
    size: int,
    sent: int,
    how: str,
) -> None:
    workspace: DatabricksWorkspace | None = None
    if backend_env["STORAGE_BACKEND"] == "databricks":
        workspace = request.getfixturevalue("databricks_workspace")
    head, _ = multipart_envelope({"engagement_id": "DROPPED"}, "dropped.bin", BOUNDARY)
    framing = {"Content-Length": str(len(head) + size + 64)}
    if how == "chunked":
        framing = {"Transfer-Encoding": "chunked"}
    sock = connect(live_server.port)
    sock.sendall(
        request_head("POST", UPLOAD, {
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **framing,
        })
    )  # fmt: skip
    block = b"d" * CHUNK
    pieces = [head] + [block[: min(CHUNK, sent - n)] for n in range(0, sent, CHUNK)]
    for piece in pieces:
        sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if how == "chunked" else piece)
    # The server has the upload in hand (staged, and for the big one most of it on disk).
    wait_until(lambda: (staged_bytes(backend_env) or 0) >= sent // 2 - 2 * MIB,
               f"the server never staged the upload:\n{live_server.log()}")  # fmt: skip

    hang_up(sock, "close" if how == "chunked" else how)

    wait_until(lambda: staged_bytes(backend_env) is None, "the partial upload was not removed")
    with httpx.Client(base_url=live_server.url, headers=AUTH, timeout=60) as http:
        assert all_records(http, "DROPPED") == []
        assert stored_paths(backend_env, workspace) == []
        assert staging_leftovers(backend_env) == []
        assert http.get("/api/v1/health").status_code == 200
        after = http.post(
            UPLOAD, data={"engagement_id": "DROPPED"}, files={"file": ("next.txt", b"next")}
        )
        assert after.status_code == 201, after.text
        assert [r["id"] for r in all_records(http, "DROPPED")] == [after.json()["id"]]
    assert stored_paths(backend_env, workspace) == [after.json()["volume_path"]]
    assert staging_leftovers(backend_env) == []
