"""Several `kmflow serve` replicas on one `s3://` delta base, each with its own STATE_PATH,
as behind a load balancer: they hold Idempotency-Keys for the whole deployment, and a
replica's disk holds nothing an acknowledged upload needs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, AUTH, stored_record
from tests.live_server import LiveServer
from tests.multipart import multipart_body

pytestmark = pytest.mark.slow

UPLOAD = "/api/v1/evidence/upload"
ENGAGEMENT = "ENG-REPLICAS"
KEYS = 8


def replica(base_uri: str, state_path: Path, log_dir: Path) -> LiveServer:
    env = {
        "STORAGE_BACKEND": "delta",
        "DELTA_BASE_PATH": base_uri,
        "STATE_PATH": str(state_path),
        "API_KEYS": API_KEY,
    }  # the AWS_* variables come from this process's environment (the `base_uri` fixture)
    return LiveServer(env, cwd=log_dir)


def upload(
    server: LiveServer, content: bytes, key: str | None = None, metadata: str | None = None
) -> httpx.Response:
    fields = {"engagement_id": ENGAGEMENT} | ({"metadata": metadata} if metadata else {})
    body, content_type = multipart_body(fields, "minutes.pdf", content)
    headers = {**AUTH, "Content-Type": content_type}
    if key is not None:
        headers["Idempotency-Key"] = key
    with httpx.Client(base_url=server.url, timeout=120) as http:
        return http.post(UPLOAD, content=body, headers=headers)


def listed(server: LiveServer) -> list[dict[str, object]]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
        response = http.get(f"/api/v1/evidence/{ENGAGEMENT}", params={"limit": 1000})
    assert response.status_code == 200, response.text
    items: list[dict[str, object]] = response.json()["items"]
    return items


def send_to_both(
    replicas: list[LiveServer], keys: list[str], contents: list[bytes]
) -> dict[str, list[httpx.Response]]:
    """Every key's upload, sent to every replica at the same moment."""
    jobs = [
        (key, content, server)
        for key, content in zip(keys, contents, strict=True)
        for server in replicas
    ]
    start = threading.Barrier(len(jobs))
    answers: dict[str, list[httpx.Response]] = {key: [] for key in keys}
    errors: list[BaseException] = []

    def send(key: str, content: bytes, server: LiveServer) -> None:
        start.wait()
        try:
            answers[key].append(upload(server, content, key))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=send, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return answers


def test_replicas_on_one_s3_base_store_one_record_per_idempotency_key(
    base_uri: str, tmp_path: Path
) -> None:
    servers = [replica(base_uri, tmp_path / f"state-{name}", tmp_path) for name in "ab"]
    try:
        keys = [f"replica-retry-{n}-{os.urandom(4).hex()}" for n in range(KEYS)]
        contents = [os.urandom(300_000) for _ in keys]
        answers = send_to_both(servers, keys, contents)
        records = listed(servers[0])
    finally:
        for server in servers:
            server.stop()

    for key, content in zip(keys, contents, strict=True):
        acknowledged = [answer for answer in answers[key] if answer.status_code == 201]
        refused = [answer for answer in answers[key] if answer.status_code != 201]
        assert len(answers[key]) == 2
        for answer in refused:  # the first upload took longer than a retry waits
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"] == "idempotency_key_in_progress"
        assert len({answer.json()["id"] for answer in acknowledged}) == 1, key
        assert sorted(answer.json()["replayed"] for answer in acknowledged) == [False] + [True] * (
            len(acknowledged) - 1
        )
        for answer in acknowledged:
            replayed = answer.headers.get("Idempotent-Replayed")
            assert replayed == ("true" if answer.json()["replayed"] else None)
            assert answer.json()["content_hash"] == hashlib.sha256(content).hexdigest()
    by_hash = {
        hashlib.sha256(content).hexdigest(): key
        for key, content in zip(keys, contents, strict=True)
    }
    assert sorted(str(record["content_hash"]) for record in records) == sorted(by_hash)
    for record in records:  # the one record of each key is the one its 201s named
        key = by_hash[str(record["content_hash"])]
        assert {a.json()["id"] for a in answers[key] if a.status_code == 201} == {record["id"]}


def test_a_replica_that_is_killed_and_loses_its_disk_loses_no_acknowledged_upload(
    base_uri: str, tmp_path: Path
) -> None:
    a_state, b_state = tmp_path / "state-a", tmp_path / "state-b"
    a, b = replica(base_uri, a_state, tmp_path), replica(base_uri, b_state, tmp_path)
    try:
        uploads: list[tuple[dict[str, object], bytes, str]] = []
        for n in range(6):
            content = os.urandom(100_000 + n)
            key = f"a-upload-{n}-{os.urandom(4).hex()}"
            metadata = json.dumps({"page": n, "source": "scanner", "note": "é"})
            answer = upload(a, content, key, metadata)
            assert answer.status_code == 201, answer.text
            uploads.append((answer.json(), content, key))
        a.process.kill()  # SIGKILL: nothing is flushed or handed over
        a.process.wait()
        a.stop()
        shutil.rmtree(a_state)

        with httpx.Client(base_url=b.url, headers=AUTH, timeout=60) as http:
            fetched = [http.get(f"/api/v1/evidence/{ENGAGEMENT}/{r['id']}") for r, _, _ in uploads]
            downloads = [
                http.get(f"/api/v1/evidence/{ENGAGEMENT}/{r['id']}/content") for r, _, _ in uploads
            ]
        records = listed(b)
        # A's keys hold on B too: the same upload retried there is a replay of A's record.
        retries = [upload(b, content, key) for _, content, key in uploads]
        after_retries = listed(b)
    finally:
        a.stop()
        b.stop()

    acknowledged = [stored_record(record) for record, _, _ in uploads]
    assert [response.status_code for response in fetched] == [200] * len(uploads)
    assert [response.json() for response in fetched] == acknowledged
    assert [json.loads(str(record["metadata_json"]))["page"] for record in acknowledged] == list(
        range(len(uploads))
    )
    assert [response.content for response in downloads] == [content for _, content, _ in uploads]
    assert sorted(records, key=lambda record: str(record["id"])) == sorted(
        acknowledged, key=lambda record: str(record["id"])
    )
    assert [retry.status_code for retry in retries] == [201] * len(uploads)
    assert [retry.json()["id"] for retry in retries] == [record["id"] for record in acknowledged]
    assert all(retry.headers.get("Idempotent-Replayed") == "true" for retry in retries)
    assert len(after_retries) == len(uploads)
