"""A corpus of hostile requests against a real `kmflow serve`: each gets a 4xx JSON error,
nothing is stored, and the server's memory and log stay bounded.

The corpus is sent over raw sockets (tests/reliability/raw_http.py) so that nothing is
cleaned up on the way: path traversal and NUL bytes in names and ids, 10,000-character names,
malformed multipart, missing boundaries, thousands of form parts, part headers beyond
python-multipart's limits, wrong content types, invalid or oversized JSON metadata, bodies
over the upload limit with and without Content-Length, bad digests and idempotency keys, and
the payloads of python-multipart's published advisories that reach kmflow's parsing (see
docs/reliability.md). In-process cases of the same kinds, per backend, are in
tests/api/test_evidence_api.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import API_KEY, AUTH
from tests.live_server import LiveServer
from tests.multipart import multipart_body
from tests.reliability.observe import all_records, staging_leftovers, stored_paths
from tests.reliability.raw_http import UPLOAD, Answer, exchange, request_head

MIB = 1024 * 1024
MAX_UPLOAD_BYTES = MIB
MAX_METADATA_BYTES = 64 * 1024  # the default
ENGAGEMENT = "HOSTILE"
# The server's peak memory may grow this much over the whole corpus (a buffered 64 MiB body,
# or a header kept whole, would be far beyond it).
MAX_GROWTH_MIB = 24
B = "hostile"  # the boundary of the corpus's multipart bodies


@dataclass
class Case:
    name: str
    head: bytes
    body: list[bytes] = field(default_factory=list)


def get(name: str, target: str) -> Case:
    return Case(name, request_head("GET", target))


def raw_upload(
    name: str, body: bytes, content_type: str = f"multipart/form-data; boundary={B}", **headers: str
) -> Case:
    framing = {"Content-Type": content_type, "Content-Length": str(len(body)), **headers}
    return Case(name, request_head("POST", UPLOAD, framing), [body])


def form(
    name: str,
    fields: dict[str, str],
    file_name: str | bytes | None = "a.txt",
    content: bytes = b"evidence",
    **headers: str,
) -> Case:
    body, content_type = multipart_body(fields, file_name, content, boundary=B)
    return raw_upload(name, body, content_type, **headers)


def part_head(headers: bytes) -> bytes:
    return b"--" + B.encode() + b"\r\n" + headers + b"\r\n\r\n"


def part(headers: bytes, value: bytes = b"v") -> bytes:
    return part_head(headers) + value + b"\r\n"


def disposition(name: str) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"'.encode()


END = f"--{B}--\r\n".encode()
VALID_PARTS = part(disposition("engagement_id"), ENGAGEMENT.encode()) + part(
    disposition("file") + b'; filename="a.txt"', b"evidence"
)
X10K = "x" * 10_000
OTHER_SHA256_B64 = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()


def chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def endless_file() -> Iterator[bytes]:
    yield part(disposition("engagement_id"), ENGAGEMENT.encode())
    yield part_head(disposition("file") + b'; filename="a"')
    for _ in range(64):
        yield b"z" * MIB


def corpus() -> list[Case]:
    multipart = f"multipart/form-data; boundary={B}"
    ok = {"engagement_id": ENGAGEMENT}
    return [
        # Path traversal in ids and names.
        get("traversal-engagement", "/api/v1/evidence/..%2F..%2Fetc%2Fpasswd"),
        get("traversal-dotdot-encoded", "/api/v1/evidence/%2e%2e/%2e%2e"),
        get("traversal-id", f"/api/v1/evidence/{ENGAGEMENT}/..%2F..%2F..%2Fetc%2Fpasswd"),
        get("traversal-content", f"/api/v1/evidence/{ENGAGEMENT}/..%2F..%2Fetc%2Fpasswd/content"),
        get("traversal-raw", f"/api/v1/evidence/{ENGAGEMENT}/../../../../etc/passwd"),
        get("traversal-backslash", "/api/v1/evidence/..%5C..%5Cwindows"),
        form("traversal-form-engagement", {"engagement_id": "../../etc"}),
        form("traversal-form-engagement-dot", {"engagement_id": ".."}),
        form("traversal-file-name-dotdot", {"engagement_id": ENGAGEMENT}, "a/.."),
        form("traversal-file-name-dir-only", {"engagement_id": ENGAGEMENT}, "../../"),
        # NUL bytes.
        get("nul-engagement", "/api/v1/evidence/a%00b"),
        get("nul-id", f"/api/v1/evidence/{ENGAGEMENT}/{'0' * 31}%00"),
        form("nul-form-engagement", {"engagement_id": "ENG\x00"}),
        form("nul-file-name", {"engagement_id": ENGAGEMENT}, b"a\x00.txt"),
        form("nul-in-metadata-text", {"engagement_id": ENGAGEMENT, "metadata": '{"a": "\x00"}'}),
        # 10,000-character names.
        get("long-engagement-url", f"/api/v1/evidence/{X10K}"),
        get("long-id-url", f"/api/v1/evidence/{ENGAGEMENT}/{X10K}/content"),
        form("long-form-engagement", {"engagement_id": X10K}),
        form("long-file-name", {"engagement_id": ENGAGEMENT}, X10K + ".pdf"),
        raw_upload("long-field-name", part(disposition(X10K)) + VALID_PARTS + END),
        # Malformed multipart.
        raw_upload("empty-body", b""),
        raw_upload("no-closing-boundary", VALID_PARTS),
        raw_upload("ends-mid-headers", b"--" + B.encode() + b"\r\nContent-Disp"),
        raw_upload("garbage", b"this is not multipart at all" * 100),
        raw_upload("wrong-boundary", VALID_PARTS.replace(B.encode(), b"other") + END),
        raw_upload("part-without-disposition", part(b"X-Other: 1") + VALID_PARTS + END),
        raw_upload(
            "disposition-not-form-data",
            part(b'Content-Disposition: attachment; name="a"') + VALID_PARTS + END,
        ),
        raw_upload("header-without-colon", part(b"no colon here") + VALID_PARTS + END),
        raw_upload(
            "part-header-too-long",
            part(disposition("file") + b'; filename="' + b"a" * 5000 + b'"') + END,
        ),
        raw_upload(
            "too-many-part-headers",
            part(b"".join(b"X-%d: a\r\n" % n for n in range(20)) + disposition("metadata"))
            + VALID_PARTS
            + END,
        ),
        raw_upload("crlf-flood-before-garbage", b"\r\n" * (MIB // 4) + b"garbage"),
        raw_upload(
            "file-part-twice",
            VALID_PARTS + part(disposition("file") + b'; filename="b.txt"', b"again") + END,
        ),
        raw_upload(
            "file-without-filename",
            part(disposition("engagement_id"), b"E") + part(disposition("file"), b"evidence") + END,
        ),
        raw_upload(
            "text-field-with-filename",
            part(disposition("metadata") + b'; filename="m"') + VALID_PARTS + END,
        ),
        raw_upload(
            "rfc2231-field-name-smuggling",
            part(disposition("notes") + b"; name*=UTF-8''engagement_id", b"E") + VALID_PARTS + END,
        ),
        raw_upload(
            "invalid-utf8-engagement",
            part(disposition("engagement_id"), b"E\xff\xfe")
            + part(disposition("file") + b'; filename="a.txt"', b"x")
            + END,
        ),
        # Missing or broken boundary.
        raw_upload("no-boundary", VALID_PARTS + END, "multipart/form-data"),
        raw_upload("empty-boundary", VALID_PARTS + END, "multipart/form-data; boundary="),
        raw_upload(
            "boundary-over-256", VALID_PARTS + END, "multipart/form-data; boundary=" + "b" * 300
        ),
        # Thousands of form parts.
        raw_upload("5000-repeated-parts", part(disposition("engagement_id"), b"E") * 5000 + END),
        raw_upload(
            "5000-distinct-parts", b"".join(part(disposition(f"f{n}")) for n in range(5000)) + END
        ),
        raw_upload("5000-empty-parts", (b"--" + B.encode() + b"\r\n\r\n\r\n") * 5000 + END),
        # Wrong content types.
        raw_upload("json", b'{"engagement_id": "E"}', "application/json"),
        raw_upload("text-plain", VALID_PARTS + END, "text/plain"),
        raw_upload("urlencoded", b"engagement_id=E&file=x", "application/x-www-form-urlencoded"),
        raw_upload("multipart-mixed", VALID_PARTS + END, f"multipart/mixed; boundary={B}"),
        raw_upload("no-content-type", VALID_PARTS + END, ""),
        # CVE-2024-24762's ReDoS payload, in the header python-multipart parses for kmflow.
        raw_upload(
            "content-type-redos",
            VALID_PARTS + END,
            'application/x-www-form-urlencoded; !="' + "\\" * 5000,
        ),
        # Invalid JSON metadata.
        form("metadata-not-json", {"engagement_id": ENGAGEMENT, "metadata": "{not json"}),
        form("metadata-array", {"engagement_id": ENGAGEMENT, "metadata": "[1, 2]"}),
        form("metadata-null", {"engagement_id": ENGAGEMENT, "metadata": "null"}),
        form("metadata-string", {"engagement_id": ENGAGEMENT, "metadata": '"text"'}),
        form("metadata-trailing-data", {"engagement_id": ENGAGEMENT, "metadata": '{"a": 1} x'}),
        raw_upload(
            "metadata-not-utf8", part(disposition("metadata"), b'{"a": "\xff"}') + VALID_PARTS + END
        ),
        # Over the size limits.
        form(
            "metadata-over-limit",
            {"engagement_id": ENGAGEMENT, "metadata": json.dumps({"k": "v" * MAX_METADATA_BYTES})},
        ),
        form(
            "file-one-byte-over",
            {"engagement_id": ENGAGEMENT},
            "big.bin",
            b"x" * (MAX_UPLOAD_BYTES + 1),
        ),
        Case(
            "declared-10-GiB",
            request_head(
                "POST", UPLOAD, {"Content-Type": multipart, "Content-Length": str(10 * 1024 * MIB)}
            ),
        ),
        Case(
            "declared-2-MiB-sent",
            request_head(
                "POST", UPLOAD, {"Content-Type": multipart, "Content-Length": str(2 * MIB + 200)}
            ),
            [VALID_PARTS, b"p" * 2 * MIB],
        ),
        Case(
            "chunked-64-MiB",
            request_head(
                "POST", UPLOAD, {"Content-Type": multipart, "Transfer-Encoding": "chunked"}
            ),
            list(chunked(endless_file())),
        ),
        # Integrity and idempotency headers, and the sha256 field.
        form("repr-digest-not-base64", ok, **{"Repr-Digest": "sha-256=:!!not base64!!:"}),
        form("repr-digest-short", ok, **{"Repr-Digest": "sha-256=:AAAA:"}),
        form("repr-digest-mismatch", ok, **{"Repr-Digest": f"sha-256=:{OTHER_SHA256_B64}:"}),
        form("content-digest-mismatch", ok, **{"Content-Digest": f"sha-256=:{OTHER_SHA256_B64}:"}),
        form("sha256-field-not-hex", {**ok, "sha256": "z" * 64}),
        form("sha256-field-mismatch", {**ok, "sha256": "0" * 64}),
        form("idempotency-key-10k", ok, **{"Idempotency-Key": X10K}),
        form("idempotency-key-not-ascii", ok, **{"Idempotency-Key": "clé"}),
        # Query strings and methods.
        get("limit-zero", f"/api/v1/evidence/{ENGAGEMENT}?limit=0"),
        get("limit-huge", f"/api/v1/evidence/{ENGAGEMENT}?limit=100000000000000000000"),
        get("limit-text", f"/api/v1/evidence/{ENGAGEMENT}?limit=%00"),
        get("cursor-garbage", f"/api/v1/evidence/{ENGAGEMENT}?cursor={X10K}"),
        Case("delete", request_head("DELETE", f"/api/v1/evidence/{ENGAGEMENT}/{'0' * 32}")),
        Case("put-upload", request_head("PUT", UPLOAD, {"Content-Length": "0"})),
    ]


# Refused by uvicorn's HTTP parser before kmflow sees them: a 400 in plain text.
PROTOCOL_CORPUS = [
    Case("content-length-negative", request_head("POST", UPLOAD, {"Content-Length": "-1"})),
    Case("content-length-text", request_head("POST", UPLOAD, {"Content-Length": "ten"})),
    Case(
        "content-length-twice",
        request_head("POST", UPLOAD, {"Content-Length": "5"}).replace(
            b"\r\n\r\n", b"\r\nContent-Length: 6\r\n\r\n"
        ),
        [b"123456"],
    ),
    Case(
        "nul-in-header", request_head("GET", f"/api/v1/evidence/{ENGAGEMENT}", {"X-Bad": "a\x00b"})
    ),
]


@pytest.fixture
def server(backend_env: dict[str, str], tmp_path: Path) -> Iterator[LiveServer]:
    env = {**backend_env, "API_KEYS": API_KEY, "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES)}
    server = LiveServer(env, cwd=tmp_path)
    yield server
    server.stop()


@pytest.mark.parametrize("backend_name", ["local"])
def test_hostile_requests_get_a_json_4xx_store_nothing_and_keep_memory_bounded(
    server: LiveServer, backend_env: dict[str, str]
) -> None:
    cases = corpus()
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
        assert http.get(f"/api/v1/evidence/{ENGAGEMENT}").status_code == 200  # warm
        idle_peak = server.peak_rss_mib()
        log_lines = len(server.log().splitlines())

        answers: dict[str, Answer] = {
            case.name: exchange(server.port, case.head, case.body) for case in cases
        }
        protocol: dict[str, Answer] = {
            case.name: exchange(server.port, case.head, case.body) for case in PROTOCOL_CORPUS
        }

        peak = server.peak_rss_mib()
        added_log_lines = len(server.log().splitlines()) - log_lines
        not_json_4xx = {
            name: (answer.status, answer.body[:200])
            for name, answer in answers.items()
            if not 400 <= answer.status < 500
            or answer.content_type != "application/json"
            or not {"error", "detail"} <= set(answer.json())
        }
        assert not_json_4xx == {}
        assert {name: answer.status for name, answer in protocol.items()} == {
            case.name: 400 for case in PROTOCOL_CORPUS
        }
        assert all_records(http, ENGAGEMENT) == []
        assert stored_paths(backend_env) == []
        assert staging_leftovers(backend_env) == []
        assert peak - idle_peak < MAX_GROWTH_MIB, (idle_peak, peak)
        # One access line per request, one more at most for a refusal (CVE-2024-53981 logged
        # every CR/LF before a boundary).
        assert added_log_lines <= 2 * (len(cases) + len(PROTOCOL_CORPUS)), server.log()[-3000:]
        # Still serving.
        stored = http.post(
            UPLOAD, data={"engagement_id": ENGAGEMENT}, files={"file": ("ok", b"ok")}
        )
        assert stored.status_code == 201, stored.text
    print(
        f"hostile requests tried: {len(cases) + len(PROTOCOL_CORPUS)}, stored: 0, "
        f"peak memory {idle_peak:.0f} -> {peak:.0f} MiB"
    )


@pytest.mark.parametrize("backend_name", ["local"])
def test_oversized_request_headers_are_refused_with_bounded_memory(server: LiveServer) -> None:
    target = f"/api/v1/evidence/{ENGAGEMENT}"
    idle_peak = server.peak_rss_mib()
    huge_header = exchange(server.port, request_head("GET", target, {"X-Pad": "a" * (16 * MIB)}))
    many_headers = exchange(
        server.port, request_head("GET", target, {f"X-{n}": "a" for n in range(200_000)})
    )
    peak = server.peak_rss_mib()

    assert 400 <= huge_header.status < 500, huge_header
    assert 400 <= many_headers.status < 500, many_headers
    assert peak - idle_peak < 8, (idle_peak, peak)


@pytest.mark.parametrize("backend_name", ["local"])
@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param('{"a": ' + "[" * 10_000 + "]" * 10_000 + "}", id="nested-10000-deep"),
        pytest.param('{"a": ' + "1" * 5000 + "}", id="integer-of-5000-digits"),
        pytest.param('{"a": "\\ud800"}', id="lone-surrogate"),
        pytest.param('{"a": NaN}', id="nan"),
        pytest.param('{"a": 1e999}', id="overflowing-float"),
    ],
)
def test_metadata_that_is_not_portable_json_is_a_422(
    client: TestClient, backend_env: dict[str, str], metadata: str
) -> None:
    body, content_type = multipart_body(
        {"engagement_id": ENGAGEMENT, "metadata": metadata}, "a.txt", b"evidence"
    )
    response = client.post(UPLOAD, content=body, headers={"Content-Type": content_type})

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert stored_paths(backend_env) == []


@pytest.mark.parametrize("backend_name", ["local"])
def test_extended_parameters_cannot_smuggle_a_file_or_field_name(client: TestClient) -> None:
    """RFC 7578 forbids `filename*`/`name*` in form data; python-multipart < 0.0.30 decoded
    them over the plain parameter (CVE-2026-53537)."""
    body = (
        part(disposition("engagement_id") + b"; name*=UTF-8''metadata", ENGAGEMENT.encode())
        + part(
            disposition("file") + b"; filename=\"minutes.txt\"; filename*=UTF-8''evil.exe",
            b"evidence",
        )
        + END
    )
    response = client.post(
        UPLOAD, content=body, headers={"Content-Type": f"multipart/form-data; boundary={B}"}
    )

    assert response.status_code == 201, response.text
    assert response.json()["engagement_id"] == ENGAGEMENT
    assert response.json()["file_name"] == "minutes.txt"
