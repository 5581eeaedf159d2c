"""The delta backend on an `s3://` base, against a local S3-compatible server (moto).

moto runs as its own process on a free loopback port (`tests.storage.s3_server`) and, like
AWS S3, honours conditional PUTs (`If-None-Match`, `If-Match`), which delta-rs commits, the
maintenance lease and the Idempotency-Key claims rely on. Credentials reach deltalake and
obstore only through the `AWS_*` environment variables.
"""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import obstore
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from app.storage.delta.backend import DeltaLakeBackend
from app.storage.delta.files import ObjectStoreFiles
from app.storage.delta.location import DeltaLocation
from app.storage.delta.maintenance import MaintenancePolicy
from app.storage.delta.object_store_key_claims import ObjectStoreKeyClaims, claim_path
from app.storage.idempotency import IdempotencyKeys
from app.storage.records import UploadOutcome
from tests.conftest import API_KEY, AUTH, stored_record
from tests.multipart import multipart_body
from tests.storage.s3_server import BUCKET, SECRET, object_keys


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


def test_keys_are_claimed_on_the_store_of_an_s3_base_and_on_this_machine_for_a_local_one(
    s3_endpoint: str, base_uri: str, tmp_path: Path
) -> None:
    on_s3 = DeltaLakeBackend(DeltaLocation.parse(base_uri), tmp_path / "s3" / "staging")
    local = DeltaLakeBackend(
        DeltaLocation.parse(str(tmp_path / "delta_store")), tmp_path / "local" / "staging"
    )
    try:
        assert isinstance(on_s3.idempotency_keys, ObjectStoreKeyClaims)
        assert isinstance(local.idempotency_keys, IdempotencyKeys)
        on_s3.startup()
        staged = on_s3.stage()
        staged.write(b"board pack")
        outcome = on_s3.upload(staged, "ENG-S3", "pack.pdf", idempotency_key="key-1")
    finally:
        on_s3.close()
        local.close()

    assert outcome.replayed is False
    prefix = base_uri.removeprefix(f"s3://{BUCKET}/")
    assert f"{prefix}/{claim_path('key-1')}" in object_keys(s3_endpoint, prefix)
    assert not (tmp_path / "s3" / "idempotency.sqlite3").exists()


def test_backends_sharing_an_s3_base_store_one_record_per_idempotency_key(
    base_uri: str, tmp_path: Path
) -> None:
    """Two replicas' backends in one process, each with its own STATE_PATH; every key's
    upload is sent to both at once, several times."""
    location = DeltaLocation.parse(base_uri)
    replicas = [DeltaLakeBackend(location, tmp_path / f"state{n}" / "staging") for n in range(2)]
    for backend in replicas:
        backend.startup()
    contents = {f"key-{n}": f"evidence {n}".encode() * 1000 for n in range(4)}
    outcomes: dict[str, list[UploadOutcome]] = {key: [] for key in contents}
    start = threading.Barrier(len(contents) * 4)

    def send(key: str, backend: DeltaLakeBackend) -> None:
        staged = backend.stage()
        staged.write(contents[key])
        start.wait()
        outcomes[key].append(backend.upload(staged, "ENG-KEYS", "f.pdf", idempotency_key=key))

    threads = [
        threading.Thread(target=send, args=(key, replicas[n % 2]))
        for key in contents
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        listed = replicas[1].list("ENG-KEYS", limit=100).items
    finally:
        for backend in replicas:
            backend.close()

    assert sorted(record.content_hash for record in listed) == sorted(
        hashlib.sha256(content).hexdigest() for content in contents.values()
    )
    for key, answers in outcomes.items():
        assert len(answers) == 4
        assert len({answer.record.id for answer in answers}) == 1, key
        assert sorted(answer.replayed for answer in answers) == [False, True, True, True]


def test_stored_sizes_on_an_s3_base_come_from_listings_not_a_head_per_file(
    base_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration checks every record it copied at the end: thousands of HEADs otherwise."""
    backend = DeltaLakeBackend(
        DeltaLocation.parse(base_uri), tmp_path / "state" / "staging", MaintenancePolicy()
    )
    backend.startup()
    try:
        records = [
            backend.write(f"ENG-{n % 2}", f"{n}.txt", io.BytesIO(b"x" * (n + 1))) for n in range(6)
        ]
        assert isinstance(backend.files, ObjectStoreFiles)
        obstore.delete(backend.files.store, records[4].volume_path)  # behind the table's back

        def no_head(*args: object, **kwargs: object) -> object:
            raise AssertionError("one HEAD per file")

        monkeypatch.setattr(obstore, "head", no_head)
        sizes = backend.stored_sizes(records)
    finally:
        backend.close()

    assert sizes == {record.id: None if n == 4 else n + 1 for n, record in enumerate(records)}
