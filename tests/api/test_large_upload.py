"""A 200 MiB upload and download through a real uvicorn process: the server's memory stays flat."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.conftest import AUTH
from tests.live_server import LiveServer
from tests.multipart import streamed_multipart

MIB = 1024 * 1024
FILE_SIZE = 200 * MIB
# An idle server peaks near 55 MiB; the bound is far under the file size yet catches any
# buffering of the body (a naive `await file.read()` peaks above the file size).
PEAK_RSS_BOUND_MIB = 100
PATTERN = b"0123456789abcdef" * 64 + b"kmflow"


@pytest.mark.slow
def test_200_mib_round_trip_keeps_server_memory_bounded(live_server: LiveServer) -> None:
    chunks, length, content_type = streamed_multipart(
        {"engagement_id": "BIG"}, "recording.bin", FILE_SIZE, PATTERN
    )
    baseline = live_server.peak_rss_mib()

    with httpx.Client(base_url=live_server.url, headers=AUTH, timeout=300) as http:
        response = http.post(
            "/api/v1/evidence/upload",
            content=chunks,
            headers={"Content-Type": content_type, "Content-Length": str(length)},
        )
        assert response.status_code == 201, response.text
        record = response.json()
        after_upload = live_server.peak_rss_mib()

        digest = hashlib.sha256()
        size = 0
        url = f"/api/v1/evidence/BIG/{record['id']}/content"
        with http.stream("GET", url) as download:
            assert download.status_code == 200
            for piece in download.iter_bytes():
                digest.update(piece)
                size += len(piece)
        after_download = live_server.peak_rss_mib()

    block = (PATTERN * (MIB // len(PATTERN) + 1))[:MIB]
    expected = hashlib.sha256()
    for _ in range(FILE_SIZE // MIB):
        expected.update(block)
    assert record["size_bytes"] == FILE_SIZE == size
    assert record["content_hash"] == expected.hexdigest() == digest.hexdigest()
    assert after_upload < PEAK_RSS_BOUND_MIB, (baseline, after_upload)
    assert after_download < PEAK_RSS_BOUND_MIB, (baseline, after_download)
