"""The API contract, run unchanged against every backend in `tests.conftest.BACKENDS`."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient

from app.storage.pagination import encode_cursor
from tests.conftest import API_KEY, AUTH, ClientFactory, stored_files, stored_record
from tests.live_server import LiveServer
from tests.multipart import multipart_body

UPLOAD = "/api/v1/evidence/upload"


def upload(
    client: TestClient,
    engagement_id: str,
    file_name: str | bytes,
    content: bytes,
    metadata: str | None = None,
) -> httpx.Response:
    fields = {"engagement_id": engagement_id}
    if metadata is not None:
        fields["metadata"] = metadata
    body, content_type = multipart_body(fields, file_name, content)
    return client.post(UPLOAD, content=body, headers={"Content-Type": content_type})


def listed(client: TestClient, engagement_id: str) -> list[dict[str, object]]:
    response = client.get(f"/api/v1/evidence/{engagement_id}", params={"limit": 1000})
    assert response.status_code == 200, response.text
    items: list[dict[str, object]] = response.json()["items"]
    return items


def test_round_trip_keeps_bytes_hash_and_metadata(client: TestClient) -> None:
    content = b"minutes of the steering committee\n" * 1000
    metadata = {"source": "sharepoint", "tags": ["board", "2026"], "pages": 12}

    response = upload(client, "ENG-001", "minutes.txt", content, json.dumps(metadata))

    assert response.status_code == 201, response.text
    record = response.json()
    assert set(record) == {
        "id", "engagement_id", "file_name", "volume_path", "content_hash", "size_bytes",
        "stored_at", "metadata_json", "replayed", "duplicate_of",
    }  # fmt: skip
    assert (record["replayed"], record["duplicate_of"]) == (False, [])
    assert record["engagement_id"] == "ENG-001"
    assert record["file_name"] == "minutes.txt"
    assert record["content_hash"] == hashlib.sha256(content).hexdigest()
    assert record["size_bytes"] == len(content)
    assert record["stored_at"].endswith("Z")
    assert json.loads(record["metadata_json"]) == metadata

    assert listed(client, "ENG-001") == [stored_record(record)]
    assert client.get(f"/api/v1/evidence/ENG-001/{record['id']}").json() == stored_record(record)

    download = client.get(f"/api/v1/evidence/ENG-001/{record['id']}/content")
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["etag"] == f'"{record["content_hash"]}"'
    assert download.headers["content-length"] == str(len(content))
    assert 'filename="minutes.txt"' in download.headers["content-disposition"]


def test_each_write_gets_a_fresh_id_even_for_the_same_bytes(client: TestClient) -> None:
    first = upload(client, "E1", "a.pdf", b"same").json()
    second = upload(client, "E1", "a.pdf", b"same").json()

    assert first["id"] != second["id"]
    assert first["volume_path"] != second["volume_path"]
    assert {item["id"] for item in listed(client, "E1")} == {first["id"], second["id"]}


def test_part_order_does_not_matter(client: TestClient) -> None:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n'
        f"\r\nfile-first\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n{{"a":1}}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="engagement_id"\r\n\r\nE2\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    response = client.post(
        UPLOAD, content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )  # fmt: skip

    assert response.status_code == 201, response.text
    assert response.json()["size_bytes"] == len(b"file-first")
    assert json.loads(response.json()["metadata_json"]) == {"a": 1}


def test_listing_pages_newest_first_without_gaps_or_repeats(client: TestClient) -> None:
    ids = [upload(client, "PAGED", f"f{n}.txt", f"{n}".encode()).json()["id"] for n in range(7)]

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/evidence/PAGED", params=params).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == 3
    assert seen == list(reversed(ids))


@pytest.mark.parametrize(
    "cursor",
    [
        "not-base64!",
        encode_cursor("' OR 1=1 --", "0" * 32),
        encode_cursor("2026-11-25T22:45:29.959390Z", "x' OR 'a'='a"),
    ],
)
def test_a_cursor_this_service_did_not_issue_is_refused(client: TestClient, cursor: str) -> None:
    upload(client, "CURSOR", "a.txt", b"x")
    response = client.get("/api/v1/evidence/CURSOR", params={"cursor": cursor})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


def test_unknown_engagement_lists_empty_and_unknown_id_is_404(client: TestClient) -> None:
    assert listed(client, "nobody") == []
    response = client.get("/api/v1/evidence/nobody/" + "0" * 32)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert client.get("/api/v1/evidence/nobody/not-an-id/content").status_code == 404


def test_record_is_only_found_under_its_own_engagement(client: TestClient) -> None:
    record = upload(client, "OWNER", "a.txt", b"mine").json()
    assert client.get(f"/api/v1/evidence/OTHER/{record['id']}").status_code == 404
    assert client.get(f"/api/v1/evidence/OTHER/{record['id']}/content").status_code == 404


HOSTILE_FILE_NAMES = [
    "../../etc/passwd",
    "/abs/path.txt",
    "..\\..\\windows\\system.ini",
    "x" * 1000,
    "résumé 📄 証拠.pdf",
    "Report.PDF",
    "report.pdf",
    "...",
    ' "quoted"; filename=evil.txt',
]


def test_hostile_file_names_are_stored_inside_the_store_and_listed_safely(
    client: TestClient,
) -> None:
    stored: dict[str, dict[str, object]] = {}
    for name in HOSTILE_FILE_NAMES:
        response = upload(client, "HOSTILE", name, name.encode())
        assert response.status_code == 201, (name, response.text)
        stored[name] = response.json()

    for record in stored.values():
        assert "/" not in record["file_name"] and "\\" not in record["file_name"]
        assert ".." not in record["volume_path"].split("/")
    assert stored["../../etc/passwd"]["file_name"] == "passwd"
    assert stored["résumé 📄 証拠.pdf"]["file_name"] == "résumé 📄 証拠.pdf"
    assert stored["Report.PDF"]["volume_path"] != stored["report.pdf"]["volume_path"]
    assert len(listed(client, "HOSTILE")) == len(HOSTILE_FILE_NAMES)
    assert len(stored_files(client)) == len(HOSTILE_FILE_NAMES)
    for name, record in stored.items():
        content = client.get(f"/api/v1/evidence/HOSTILE/{record['id']}/content")
        assert content.content == name.encode()
        assert content.headers["content-disposition"].isascii()


@pytest.mark.parametrize(
    "file_name",
    [b"a\x00b.txt", b"line\nbreak.txt", b"", b"..", b"x" * 1025, b"latin1-\xe9t\xe9.txt"],
)
def test_file_names_that_cannot_be_kept_are_refused(client: TestClient, file_name: bytes) -> None:
    response = upload(client, "BADNAMES", file_name, b"data")
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert listed(client, "BADNAMES") == []
    assert stored_files(client) == []


@pytest.mark.parametrize(
    "engagement_id",
    ["../../etc", "/abs", "a\x00b", "a/b", "x" * 1000, "证据", ".hidden", "..", "a b"],
)
def test_hostile_engagement_ids_are_refused(client: TestClient, engagement_id: str) -> None:
    response = upload(client, engagement_id, "a.txt", b"data")
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert stored_files(client) == []
    listing = client.get(f"/api/v1/evidence/{quote(engagement_id, safe='')}")
    assert listing.status_code in (404, 422)
    assert "items" not in listing.json()


def test_over_the_size_limit_is_413_and_stores_nothing(make_client: ClientFactory) -> None:
    client = make_client(max_upload_bytes=1000)

    exact = upload(client, "LIMIT", "ok.bin", b"x" * 1000)
    too_big = upload(client, "LIMIT", "big.bin", b"x" * 1001)

    assert exact.status_code == 201
    assert too_big.status_code == 413, too_big.text
    assert too_big.json()["error"] == "payload_too_large"
    assert [item["file_name"] for item in listed(client, "LIMIT")] == ["ok.bin"]
    assert len(stored_files(client)) == 1


def test_declared_oversized_body_is_refused_before_reading(make_client: ClientFactory) -> None:
    client = make_client(max_upload_bytes=1000)
    body, content_type = multipart_body({"engagement_id": "LIMIT"}, "big.bin", b"x" * 500_000)
    response = client.post(
        UPLOAD, content=body,
        headers={"Content-Type": content_type, "Content-Length": str(len(body))},
    )  # fmt: skip
    assert response.status_code == 413
    assert listed(client, "LIMIT") == []
    assert stored_files(client) == []


@pytest.mark.parametrize(
    ("fields", "file_name", "content", "status"),
    [
        ({"engagement_id": "BAD"}, "empty.txt", b"", 422),
        ({"engagement_id": "BAD", "metadata": "{not json"}, "a.txt", b"x", 422),
        ({"engagement_id": "BAD", "metadata": "[1, 2]"}, "a.txt", b"x", 422),
        ({"engagement_id": "BAD"}, None, b"", 422),
        ({}, "a.txt", b"x", 422),
        ({"engagement_id": "BAD", "surprise": "field"}, "a.txt", b"x", 422),
    ],
    ids=["empty-file", "bad-json", "json-not-object", "no-file", "no-engagement", "extra-field"],
)
def test_bad_uploads_get_a_json_4xx_and_store_nothing(
    client: TestClient,
    fields: dict[str, str],
    file_name: str | None,
    content: bytes,
    status: int,
) -> None:
    body, content_type = multipart_body(fields, file_name, content)
    response = client.post(UPLOAD, content=body, headers={"Content-Type": content_type})

    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "detail", "request_id"}
    assert listed(client, "BAD") == []
    assert stored_files(client) == []


def test_a_chunked_body_over_the_limit_is_refused_while_streaming(
    make_client: ClientFactory,
) -> None:
    client = make_client(max_upload_bytes=1000, max_metadata_bytes=100)
    body, content_type = multipart_body({"engagement_id": "CHUNKED"}, "a.bin", b"x" * 10)
    trailing_junk = b"j" * 200_000  # after the closing boundary: must still count

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield body
        yield trailing_junk

    response = client.post(UPLOAD, content=chunks(), headers={"Content-Type": content_type})

    assert response.status_code == 413
    assert listed(client, "CHUNKED") == []
    assert stored_files(client) == []


def test_without_api_keys_only_loopback_requests_are_served(make_client: ClientFactory) -> None:
    local = make_client()
    remote = make_client(base_url="http://192.0.2.10")  # a request on a non-loopback interface

    refused = upload(remote, "LOOPBACK", "a.txt", b"x")

    assert refused.status_code == 401
    assert "API_KEYS" in refused.json()["detail"]
    assert upload(local, "LOOPBACK", "a.txt", b"x").status_code == 201


def test_metadata_over_its_limit_is_refused(make_client: ClientFactory) -> None:
    client = make_client(max_metadata_bytes=100)
    response = upload(client, "META", "a.txt", b"x", json.dumps({"k": "v" * 200}))
    assert response.status_code == 413
    assert listed(client, "META") == []
    assert stored_files(client) == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"engagement_id": "X"}'),
        ("multipart/form-data", b"--x\r\n"),
        ("multipart/form-data; boundary=abc", b"--abc\r\nno headers at all"),
        ("multipart/form-data; boundary=abc", b"garbage without any boundary"),
        ("multipart/form-data; boundary=" + "b" * 300, b"--" + b"b" * 300 + b"\r\n"),
    ],
    ids=["json", "no-boundary", "truncated", "no-parts", "boundary-too-long"],
)
def test_malformed_bodies_get_a_json_4xx(
    client: TestClient, content_type: str, body: bytes
) -> None:
    response = client.post(UPLOAD, content=body, headers={"Content-Type": content_type})
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()) == {"error", "detail", "request_id"}
    assert stored_files(client) == []


def test_evidence_routes_need_a_valid_key_and_health_does_not(client: TestClient) -> None:
    body, content_type = multipart_body({"engagement_id": "AUTH"}, "a.txt", b"secret")
    no_key = {"Content-Type": content_type, "Authorization": ""}
    wrong_key = {"Content-Type": content_type, "Authorization": "Bearer " + "x" * len(API_KEY)}

    missing = client.post(UPLOAD, content=body, headers=no_key)
    wrong = client.post(UPLOAD, content=body, headers=wrong_key)

    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/evidence/AUTH", headers={"Authorization": ""}).status_code == 401
    assert listed(client, "AUTH") == []
    assert stored_files(client) == []
    health = client.get("/api/v1/health", headers={"Authorization": ""})
    assert health.status_code == 200
    assert API_KEY not in health.text


def test_health_reports_the_backend_and_auth_mode(
    make_client: ClientFactory, backend_name: str
) -> None:
    open_client = make_client()
    keyed_client = make_client(api_keys=API_KEY)

    open_health = open_client.get("/api/v1/health").json()
    keyed_health = keyed_client.get("/api/v1/health").json()

    assert open_health["status"] == "ok"
    assert open_health["storage"] == backend_name
    assert open_health["reachable"] is True
    assert open_health["auth"] == "open_loopback"
    assert keyed_health["auth"] == "api_keys"
    assert upload(open_client, "OPEN", "a.txt", b"x").status_code == 201


def test_openapi_documents_the_upload_form(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    upload_op = schema["paths"]["/api/v1/evidence/upload"]["post"]
    form = upload_op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["engagement_id", "file"]
    assert set(form["properties"]) == {"engagement_id", "file", "metadata", "sha256"}
    assert "201" in upload_op["responses"] and "413" in upload_op["responses"]
    assert API_KEY not in json.dumps(schema)


@pytest.mark.slow
def test_fifty_concurrent_uploads_to_one_engagement(live_server: LiveServer) -> None:
    contents = [f"evidence number {n}\n".encode() * (n + 1) for n in range(50)]

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_server.url, headers=AUTH, timeout=60) as http:
            return await asyncio.gather(
                *(
                    http.post(
                        UPLOAD,
                        data={"engagement_id": "CONCURRENT"},
                        files={"file": (f"f{n}.txt", content)},
                    )
                    for n, content in enumerate(contents)
                )
            )

    responses = asyncio.run(run())

    assert [response.status_code for response in responses] == [201] * 50
    records = [response.json() for response in responses]
    assert len({record["id"] for record in records}) == 50
    with httpx.Client(base_url=live_server.url, headers=AUTH, timeout=60) as http:
        page = http.get("/api/v1/evidence/CONCURRENT", params={"limit": 100}).json()
        assert {item["id"] for item in page["items"]} == {record["id"] for record in records}
        for record, content in zip(records, contents, strict=True):
            body = http.get(f"/api/v1/evidence/CONCURRENT/{record['id']}/content").content
            assert body == content
            assert hashlib.sha256(body).hexdigest() == record["content_hash"]
