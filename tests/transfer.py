"""Upload then download one large generated file through a live server, measuring its memory."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import httpx

from tests.conftest import AUTH
from tests.live_server import LiveServer
from tests.multipart import CHUNK, streamed_multipart

PATTERN = b"0123456789abcdef" * 64 + b"kmflow"


@dataclass
class Transfer:
    record: dict[str, Any]
    expected_hash: str
    downloaded_hash: str
    downloaded_bytes: int
    idle_peak_mib: float  # the server's VmHWM before the transfer
    peak_mib: float  # ... and after upload and download


def round_trip(server: LiveServer, engagement_id: str, size: int) -> Transfer:
    chunks, length, content_type = streamed_multipart(
        {"engagement_id": engagement_id}, "recording.bin", size, PATTERN
    )
    idle_peak = server.peak_rss_mib()
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=600) as http:
        response = http.post(
            "/api/v1/evidence/upload",
            content=chunks,
            headers={"Content-Type": content_type, "Content-Length": str(length)},
        )
        assert response.status_code == 201, response.text
        record = response.json()
        digest = hashlib.sha256()
        received = 0
        url = f"/api/v1/evidence/{engagement_id}/{record['id']}/content"
        with http.stream("GET", url) as download:
            assert download.status_code == 200
            for piece in download.iter_bytes():
                digest.update(piece)
                received += len(piece)
    expected = hashlib.sha256()
    block = (PATTERN * (CHUNK // len(PATTERN) + 1))[:CHUNK]
    for offset in range(0, size, CHUNK):
        expected.update(block[: min(CHUNK, size - offset)])
    return Transfer(
        record, expected.hexdigest(), digest.hexdigest(), received, idle_peak, server.peak_rss_mib()
    )
