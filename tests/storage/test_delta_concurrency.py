"""Several processes (and uvicorn workers), each with several threads, writing to one table.

Processes are started with `spawn`: delta-rs's runtime does not survive `fork`, and uvicorn's
workers are spawned the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.storage.delta.backend import DeltaLakeBackend
from app.storage.delta.location import DeltaLocation
from app.storage.delta.maintenance import MaintenancePolicy
from tests.live_server import LiveServer

PROCESSES = 4
UPLOADS_PER_PROCESS = 100
THREADS_PER_PROCESS = 4


def content_of(process: int, upload: int) -> bytes:
    return f"process {process} upload {upload}\n".encode() * (upload % 7 + 1)


def open_backend(tmp_path: Path) -> DeltaLakeBackend:
    backend = DeltaLakeBackend(
        DeltaLocation.parse(str(tmp_path / "delta_store")),
        tmp_path / "state" / "staging",
        # Maintenance thresholds low enough to run several times during the test.
        MaintenancePolicy(compact_every=10, checkpoint_every=50),
    )
    backend.startup()
    return backend


def write_uploads(tmp_path: Path, process: int) -> list[tuple[str, str]]:
    """One process: UPLOADS_PER_PROCESS uploads from THREADS_PER_PROCESS threads."""
    backend = open_backend(tmp_path)

    def upload(n: int) -> tuple[str, str]:
        record = backend.write("SHARED", f"p{process}-{n}.txt", io.BytesIO(content_of(process, n)))
        return record.id, record.content_hash

    try:
        with ThreadPoolExecutor(THREADS_PER_PROCESS) as pool:
            return list(pool.map(upload, range(UPLOADS_PER_PROCESS)))
    finally:
        backend.close()


@pytest.mark.slow
def test_concurrent_processes_lose_no_row_and_duplicate_none(tmp_path: Path) -> None:
    open_backend(tmp_path).close()  # create the table once, as the first worker would
    context = multiprocessing.get_context("spawn")
    with context.Pool(PROCESSES) as pool:
        results = pool.starmap(write_uploads, [(tmp_path, p) for p in range(PROCESSES)])
    written = {evidence_id: digest for result in results for evidence_id, digest in result}
    expected = {
        hashlib.sha256(content_of(p, n)).hexdigest()
        for p in range(PROCESSES)
        for n in range(UPLOADS_PER_PROCESS)
    }

    backend = open_backend(tmp_path)
    try:
        listed = []
        cursor = None
        while True:
            page = backend.list("SHARED", limit=150, cursor=cursor)
            listed += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
        assert len(written) == PROCESSES * UPLOADS_PER_PROCESS
        assert len(listed) == PROCESSES * UPLOADS_PER_PROCESS
        assert {record.id: record.content_hash for record in listed} == written
        assert set(written.values()) == expected
        for record in listed:
            with backend.open(record) as stored:
                assert hashlib.sha256(stored.read()).hexdigest() == record.content_hash
        history = backend.table.history()
        operations = {entry["operation"] for entry in history}
        assert "OPTIMIZE" in operations  # maintenance ran while the writers were busy
    finally:
        backend.close()


@pytest.mark.slow
def test_uvicorn_workers_share_one_table(tmp_path: Path) -> None:
    """`kmflow serve --workers 2`: spawned workers, each with its own writer, one table."""
    env = {
        "STORAGE_BACKEND": "delta",
        "DELTA_BASE_PATH": str(tmp_path / "delta_store"),
        "STATE_PATH": str(tmp_path / "state"),
        "DELTA_COMPACT_EVERY": "4",
    }
    server = LiveServer(env, cwd=tmp_path, workers=2)
    contents = [f"worker test {n}\n".encode() * (n + 1) for n in range(60)]
    try:

        async def upload_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                return await asyncio.gather(
                    *(
                        http.post(
                            "/api/v1/evidence/upload",
                            data={"engagement_id": "WORKERS"},
                            files={"file": (f"{n}.txt", content)},
                        )
                        for n, content in enumerate(contents)
                    )
                )

        responses = asyncio.run(upload_all())
        assert [response.status_code for response in responses] == [201] * 60
        with httpx.Client(base_url=server.url, timeout=60) as http:
            listed = http.get("/api/v1/evidence/WORKERS", params={"limit": 1000}).json()
        assert sorted(item["content_hash"] for item in listed["items"]) == sorted(
            hashlib.sha256(content).hexdigest() for content in contents
        )
    finally:
        server.stop()
    assert "Traceback" not in server.log()
