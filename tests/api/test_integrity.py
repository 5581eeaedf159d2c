"""Integrity and idempotency for clients: digests, retries without duplicates, ranges.

The in-process tests run on every backend (the `client` fixture is parametrised); the ones
that need real concurrency or a restart use real server processes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import API_KEY, AUTH, stored_files
from tests.live_server import LiveServer
from tests.multipart import multipart_body

UPLOAD = "/api/v1/evidence/upload"


def repr_digest(content: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(content).digest()).decode()}:"


def upload_request(
    engagement_id: str, content: bytes, headers: dict[str, str] | None = None, **fields: str
) -> dict[str, object]:
    body, content_type = multipart_body(
        {"engagement_id": engagement_id, **fields}, "ledger.csv", content
    )
    return {"content": body, "headers": {"Content-Type": content_type, **(headers or {})}}


def listed_ids(client: TestClient | httpx.Client, engagement_id: str, **params: str) -> list[str]:
    response = client.get(f"/api/v1/evidence/{engagement_id}", params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


# -- client digests ---------------------------------------------------------------------------


def test_a_matching_digest_is_accepted_and_echoed(client: TestClient) -> None:
    content = os.urandom(5000)
    response = client.post(
        UPLOAD, **upload_request("ENG-D", content, {"Repr-Digest": repr_digest(content)})
    )
    assert response.status_code == 201, response.text
    assert response.headers["Repr-Digest"] == repr_digest(content)
    assert response.json()["content_hash"] == hashlib.sha256(content).hexdigest()
    location = response.headers["Location"]
    assert location == f"/api/v1/evidence/ENG-D/{response.json()['id']}"
    assert client.get(location).json()["content_hash"] == response.json()["content_hash"]


@pytest.mark.parametrize("where", ["Repr-Digest", "sha256 field", "Content-Digest"])
def test_a_wrong_digest_is_refused_naming_both_and_nothing_is_stored(
    client: TestClient, where: str
) -> None:
    content, other = b"the real ledger\n" * 100, b"what the client meant to send"
    headers: dict[str, str] = {}
    fields: dict[str, str] = {}
    if where == "Repr-Digest":
        headers["Repr-Digest"] = repr_digest(other)
    elif where == "sha256 field":
        fields["sha256"] = hashlib.sha256(other).hexdigest()
    else:
        headers["Content-Digest"] = repr_digest(other)  # not the digest of the body sent

    response = client.post(UPLOAD, **upload_request("ENG-D", content, headers, **fields))

    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error"] == "digest_mismatch"
    assert hashlib.sha256(other).hexdigest() in error["detail"]
    if where != "Content-Digest":
        assert hashlib.sha256(content).hexdigest() in error["detail"]
    assert listed_ids(client, "ENG-D") == []
    assert stored_files(client) == []


def test_content_digest_is_the_digest_of_the_body_as_sent(client: TestClient) -> None:
    request = upload_request("ENG-D", b"payload")
    body: bytes = request["content"]  # type: ignore[assignment]
    request["headers"]["Content-Digest"] = repr_digest(body)  # type: ignore[index]
    response = client.post(UPLOAD, **request)
    assert response.status_code == 201, response.text


def test_digests_that_disagree_with_each_other_are_refused(client: TestClient) -> None:
    content = b"x" * 100
    response = client.post(
        UPLOAD,
        **upload_request(
            "ENG-D",
            content,
            {"Repr-Digest": repr_digest(content)},
            sha256=hashlib.sha256(b"y").hexdigest(),
        ),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "digest_mismatch"
    assert listed_ids(client, "ENG-D") == []


@pytest.mark.parametrize("value", ["sha-256=abc", "sha-256=:not base64!:", "sha-256=:AAAA:"])
def test_a_malformed_digest_header_is_a_422_like_any_invalid_field(
    client: TestClient, value: str
) -> None:
    response = client.post(UPLOAD, **upload_request("ENG-D", b"abc", {"Repr-Digest": value}))
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert stored_files(client) == []


def test_digests_of_other_algorithms_alone_are_ignored(client: TestClient) -> None:
    response = client.post(UPLOAD, **upload_request("ENG-D", b"abc", {"Repr-Digest": "md5=:x:"}))
    assert response.status_code == 201, response.text


# -- idempotency ------------------------------------------------------------------------------


def test_a_retry_with_the_same_key_returns_the_first_record(client: TestClient) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = client.post(UPLOAD, **upload_request("ENG-K", b"board pack", key))
    again = client.post(UPLOAD, **upload_request("ENG-K", b"board pack", key))

    assert first.status_code == again.status_code == 201
    assert first.json()["replayed"] is False and "Idempotent-Replayed" not in first.headers
    assert again.json()["replayed"] is True and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert listed_ids(client, "ENG-K") == [first.json()["id"]]
    assert len([f for f in stored_files(client) if not f.endswith(".part")]) == 1


@pytest.mark.parametrize("change", ["content", "engagement"])
def test_the_same_key_for_something_else_is_a_409(client: TestClient, change: str) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = client.post(UPLOAD, **upload_request("ENG-K", b"first", key))
    assert first.status_code == 201
    if change == "content":
        reused = client.post(UPLOAD, **upload_request("ENG-K", b"second", key))
    else:
        reused = client.post(UPLOAD, **upload_request("ENG-OTHER", b"first", key))

    assert reused.status_code == 409, reused.text
    assert reused.json()["error"] == "idempotency_key_reused"
    assert listed_ids(client, "ENG-K") == [first.json()["id"]]
    assert listed_ids(client, "ENG-OTHER") == []


def test_an_invalid_key_is_refused_before_anything_is_stored(client: TestClient) -> None:
    response = client.post(UPLOAD, **upload_request("ENG-K", b"x", {"Idempotency-Key": "a b"}))
    assert response.status_code == 422
    assert stored_files(client) == []


def _concurrent_retries(server: LiveServer, key: str, content: bytes, count: int) -> list[dict]:
    def attempt(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
            return http.post(
                UPLOAD, **upload_request("ENG-RETRY", content, {"Idempotency-Key": key})
            )  # type: ignore[arg-type]

    with ThreadPoolExecutor(count) as pool:
        responses = list(pool.map(attempt, range(count)))
    assert [r.status_code for r in responses] == [201] * count, [r.text for r in responses]
    return [r.json() for r in responses]


def test_ten_concurrent_retries_store_exactly_one_record(live_server: LiveServer) -> None:
    content = os.urandom(300_000)
    answers = _concurrent_retries(live_server, uuid.uuid4().hex, content, 10)

    assert len({answer["id"] for answer in answers}) == 1
    assert sorted(answer["replayed"] for answer in answers) == [False] + [True] * 9
    with httpx.Client(base_url=live_server.url, headers=AUTH) as http:
        assert listed_ids(http, "ENG-RETRY") == [answers[0]["id"]]


def test_keys_hold_across_workers_and_a_restart(
    backend_env: dict[str, str], tmp_path: Path
) -> None:
    if backend_env["STORAGE_BACKEND"] != "local":
        pytest.skip("worker and restart behaviour is backend-independent; local is enough")
    env = {**backend_env, "API_KEYS": API_KEY}
    key, content = uuid.uuid4().hex, os.urandom(50_000)
    server = LiveServer(env, cwd=tmp_path, workers=2)
    try:
        answers = _concurrent_retries(server, key, content, 10)
    finally:
        server.stop()
    restarted = LiveServer(env, cwd=tmp_path)
    try:
        [after_restart] = _concurrent_retries(restarted, key, content, 1)
        with httpx.Client(base_url=restarted.url, headers=AUTH) as http:
            stored = listed_ids(http, "ENG-RETRY")
    finally:
        restarted.stop()
    assert len({answer["id"] for answer in answers}) == 1
    assert after_restart["replayed"] is True and after_restart["id"] == answers[0]["id"]
    assert stored == [answers[0]["id"]]


# -- duplicates -------------------------------------------------------------------------------


def test_repeated_content_is_stored_again_and_names_the_earlier_copies(client: TestClient) -> None:
    content = b"the same scan\n" * 50
    ids = [client.post(UPLOAD, **upload_request("ENG-DUP", content)).json()["id"] for _ in range(3)]
    other = client.post(UPLOAD, **upload_request("ENG-DUP", b"another file")).json()
    elsewhere = client.post(UPLOAD, **upload_request("ENG-ELSE", content)).json()

    fourth = client.post(UPLOAD, **upload_request("ENG-DUP", content)).json()

    assert fourth["duplicate_of"] == list(reversed(ids))  # newest first
    assert other["duplicate_of"] == []
    assert elsewhere["duplicate_of"] == []  # other engagements do not count
    by_hash = listed_ids(client, "ENG-DUP", content_hash=hashlib.sha256(content).hexdigest())
    assert by_hash == [fourth["id"], *reversed(ids)]


def test_listing_by_a_malformed_hash_is_a_422(client: TestClient) -> None:
    response = client.get("/api/v1/evidence/ENG-DUP", params={"content_hash": "abc"})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


# -- ranges, conditional requests, HEAD --------------------------------------------------------


def test_ranges_etag_and_head_on_every_backend(client: TestClient) -> None:
    content = os.urandom(100_000)
    record = client.post(UPLOAD, **upload_request("ENG-R", content)).json()
    url = f"/api/v1/evidence/ENG-R/{record['id']}/content"

    middle = client.get(url, headers={"Range": "bytes=40000-40999"})
    assert middle.status_code == 206
    assert middle.content == content[40000:41000]
    assert middle.headers["Content-Range"] == f"bytes 40000-40999/{len(content)}"
    assert middle.headers["Content-Length"] == "1000"
    assert middle.headers["Repr-Digest"] == repr_digest(content)  # of the whole file

    unchanged = client.get(url, headers={"If-None-Match": f'"{record["content_hash"]}"'})
    assert unchanged.status_code == 304 and unchanged.content == b""

    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(content))
    assert head.headers["ETag"] == f'"{record["content_hash"]}"'
    assert head.headers["Accept-Ranges"] == "bytes"


@pytest.mark.slow
def test_ranges_of_a_50_mib_file_return_the_right_bytes(
    backend_env: dict[str, str], live_server: LiveServer, tmp_path: Path
) -> None:
    if backend_env["STORAGE_BACKEND"] != "local":
        pytest.skip("one large file is enough; every backend is covered by the test above")
    size = 50 * 1024 * 1024
    content = os.urandom(size)
    with httpx.Client(base_url=live_server.url, headers=AUTH, timeout=120) as http:
        record = http.post(UPLOAD, **upload_request("ENG-BIG", content)).json()  # type: ignore[arg-type]
        url = f"/api/v1/evidence/ENG-BIG/{record['id']}/content"
        cases = {
            "bytes=0-1048575": (0, 1048576),
            f"bytes={size // 2 - 10}-{size // 2 + 10}": (size // 2 - 10, size // 2 + 11),
            f"bytes={size - 1000}-": (size - 1000, size),
            "bytes=-4096": (size - 4096, size),
            f"bytes={size - 5}-{size + 100}": (size - 5, size),  # clipped to the end
        }
        for header, (start, stop) in cases.items():
            response = http.get(url, headers={"Range": header})
            assert response.status_code == 206, header
            assert response.content == content[start:stop], header
            assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{size}"

        outside = http.get(url, headers={"Range": f"bytes={size}-"})
        assert outside.status_code == 416
        assert outside.headers["Content-Range"] == f"bytes */{size}"
        assert outside.json()["error"] == "range_not_satisfiable"

        several = http.get(url, headers={"Range": "bytes=0-1,5-6"})  # ignored: whole file
        assert several.status_code == 200 and len(several.content) == size

        stale = http.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
        assert stale.status_code == 200 and len(stale.content) == size

        etag = http.head(url).headers["ETag"]
        assert http.get(url, headers={"If-None-Match": etag}).status_code == 304
        assert http.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
