"""The delta backend on an `s3://` base, against a local S3-compatible server (moto).

moto runs as its own process on a free loopback port and, like AWS S3, honours conditional
PUTs (`If-None-Match`, `If-Match`), which delta-rs commits and the maintenance lease rely on.
Credentials reach deltalake and obstore only through the `AWS_*` environment variables.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.storage.delta import DeltaLakeBackend
from app.storage.delta_files import ObjectStoreFiles
from app.storage.delta_location import DeltaLocation
from app.storage.delta_maintenance import MaintenancePolicy
from tests.conftest import API_KEY, AUTH, stored_record
from tests.live_server import free_port
from tests.multipart import multipart_body

BUCKET = "kmflow-evidence"
SECRET = "moto-secret-key-never-shown"


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key=SECRET,
        ).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def base_uri(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh prefix in the bucket, with the AWS_* variables an operator would set."""
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_ALLOW_HTTP": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_CONDITIONAL_PUT", raising=False)
    monkeypatch.delenv("AWS_S3_ALLOW_UNSAFE_RENAME", raising=False)
    return f"s3://{BUCKET}/kmflow-{uuid.uuid4().hex[:8]}"


def object_keys(s3_endpoint: str, prefix: str) -> list[str]:
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key=SECRET,
    )
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_api_round_trip_on_an_s3_base(s3_endpoint: str, base_uri: str, tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        storage_backend="delta",
        delta_base_path=base_uri,
        state_path=tmp_path / "state",
        api_keys=API_KEY,
    )
    content = b"scanned contract page\n" * 500_000  # 11 MB: a multipart upload
    body, content_type = multipart_body(
        {"engagement_id": "ENG-S3", "metadata": '{"source": "scanner"}'}, "contract.pdf", content
    )
    with TestClient(create_app(settings), headers=AUTH) as client:
        uploaded = client.post(
            "/api/v1/evidence/upload", content=body, headers={"Content-Type": content_type}
        )
        assert uploaded.status_code == 201, uploaded.text
        record = uploaded.json()
        listed = client.get("/api/v1/evidence/ENG-S3").json()["items"]
        download = client.get(f"/api/v1/evidence/ENG-S3/{record['id']}/content")
        health = client.get("/api/v1/health")

    assert record["content_hash"] == hashlib.sha256(content).hexdigest()
    assert record["volume_path"] == f"evidence_store/ENG-S3/{record['id']}_contract.pdf"
    assert listed == [stored_record(record)]
    assert download.status_code == 200, download.text
    assert download.content == content
    assert health.json()["storage"] == "delta"
    assert health.json()["reachable"] is True
    assert SECRET not in health.text and "testing" not in health.text
    prefix = base_uri.removeprefix(f"s3://{BUCKET}/")
    keys = object_keys(s3_endpoint, prefix)
    assert f"{prefix}/{record['volume_path']}" in keys
    assert f"{prefix}/evidence_metadata/_delta_log/00000000000000000001.json" in keys


def test_concurrent_writers_on_s3_lose_and_duplicate_nothing(base_uri: str, tmp_path: Path) -> None:
    """Two handles racing for every version, with maintenance on: exactly the rows written."""
    location = DeltaLocation.parse(base_uri)
    backends = [
        DeltaLakeBackend(
            location, tmp_path / f"state{n}" / "staging", MaintenancePolicy(compact_every=5)
        )
        for n in range(2)
    ]
    for backend in backends:
        backend.startup()
    written: list[tuple[str, str]] = []

    def write(backend: DeltaLakeBackend, worker: int) -> None:
        for n in range(12):
            content = f"worker {worker} file {n}".encode()
            record = backend.write("RACE", f"{worker}-{n}.txt", io.BytesIO(content))
            written.append((record.id, hashlib.sha256(content).hexdigest()))

    threads = [
        threading.Thread(target=write, args=(backends[worker % 2], worker)) for worker in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for backend in backends:
        backend.close()

    reader = DeltaLakeBackend(location, tmp_path / "reader" / "staging")
    reader.startup()
    try:
        listed = reader.list("RACE", limit=1000).items
        assert sorted((record.id, record.content_hash) for record in listed) == sorted(written)
        assert len(listed) == 48
        for record in listed[:5]:
            with reader.open(record) as stored:
                assert hashlib.sha256(stored.read()).hexdigest() == record.content_hash
        assert "OPTIMIZE" in {entry["operation"] for entry in reader.table.history()}
    finally:
        reader.close()


def test_the_maintenance_lease_is_exclusive_and_expires(base_uri: str) -> None:
    files = ObjectStoreFiles(base_uri, "etag")
    with files.lease("_kmflow/lease", 60) as first, files.lease("_kmflow/lease", 60) as second:
        assert (first, second) == (True, False)
    with files.lease("_kmflow/lease", 60) as again:
        assert again is True  # released on exit

    with files.lease("_kmflow/stale", -1) as expired_holder:
        assert expired_holder is True
        with files.lease("_kmflow/stale", 60) as taker:
            assert taker is True  # the first holder's lease had already expired
