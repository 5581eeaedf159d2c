"""A 200 MiB upload and download through a real uvicorn process: the server's memory stays flat."""

from __future__ import annotations

import pytest

from tests.live_server import LiveServer
from tests.transfer import round_trip

MIB = 1024 * 1024
FILE_SIZE = 200 * MIB
# Streaming holds a few MiB per request; buffering the body (a naive `await file.read()`)
# grows the server by the file size. That growth is the check for every backend. Idle sizes
# differ by backend (local ~55 MiB; the Databricks SDK ~110; deltalake's Arrow and DataFusion
# ~150), so the absolute cap applies to the local backend, whose idle size is kmflow's own.
MAX_GROWTH_MIB = 32
MAX_LOCAL_PEAK_MIB = 100


@pytest.mark.slow
def test_200_mib_round_trip_keeps_server_memory_bounded(
    live_server: LiveServer, backend_name: str
) -> None:
    transfer = round_trip(live_server, "BIG", FILE_SIZE)

    assert transfer.record["size_bytes"] == FILE_SIZE == transfer.downloaded_bytes
    assert transfer.record["content_hash"] == transfer.expected_hash == transfer.downloaded_hash
    assert transfer.peak_mib - transfer.idle_peak_mib < MAX_GROWTH_MIB, transfer
    if backend_name == "local":
        assert transfer.peak_mib < MAX_LOCAL_PEAK_MIB, transfer
