"""Evidence routes: upload, list an engagement, read one record, stream its bytes (or a range),
issue a download link to them, withdraw a record. Uploads, content reads and withdrawals are
recorded in the audit trail.

Longer than most modules: each route's OpenAPI text (built from the storage patterns) stays
beside the route it documents.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, BinaryIO
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from app.api import API_PREFIX, digests
from app.api.audit_events import record_event, refusals_recorded
from app.api.byte_ranges import ByteRange, etag_matches, requested_range
from app.api.deps import (
    AppSettings,
    CurrentPrincipal,
    Principal,
    Reader,
    Signer,
    Storage,
    require_api_key,
)
from app.api.errors import (
    NOT_JSON,
    ApiError,
    ResponseDocs,
    WithdrawnBody,
    error_responses,
    invalid_request,
)
from app.api.file_body import FileBody
from app.api.multipart import FILE_FIELD, ReceivedUpload, UploadLimits, receive_upload
from app.api.parameters import EXAMPLE_ENGAGEMENT, EngagementPath
from app.api.threads import in_thread
from app.observability import metrics, request_context
from app.settings import Settings
from app.sizes import CHUNK_BYTES
from app.storage.base import StorageBackend
from app.storage.idempotency import KEY_PATTERN_TEXT, validate_key
from app.storage.metadata_json import decode_metadata
from app.storage.names import ENGAGEMENT_ID_PATTERN, SHA256_HEX_ANY_CASE_PATTERN
from app.storage.pagination import MAX_PAGE_SIZE
from app.storage.records import (
    MAX_REASON_CHARS,
    EvidenceRecord,
    RecordPage,
    Tombstone,
    UploadOutcome,
)

router = APIRouter(prefix="/evidence", tags=["evidence"], dependencies=[Depends(require_api_key)])
# The content routes take a key or a signed download link (`require_key_or_link`).
content_router = APIRouter(prefix=router.prefix, tags=router.tags)

SHA256_FIELD = "sha256"
TEXT_FIELDS = frozenset({"engagement_id", "metadata", SHA256_FIELD})

UPLOAD_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["engagement_id", FILE_FIELD],
                "properties": {
                    # Every field has an example, so the docs' "Try it out" works as filled
                    # in: Swagger UI invents a value for a field without one.
                    "engagement_id": {
                        "type": "string",
                        "pattern": f"^{ENGAGEMENT_ID_PATTERN}$",
                        "examples": [EXAMPLE_ENGAGEMENT],
                    },
                    FILE_FIELD: {"type": "string", "format": "binary"},
                    "metadata": {
                        "type": "string",
                        "description": "Client metadata: a JSON object, as a string. Empty: none.",
                        "examples": ['{"source": "browser"}'],
                    },
                    SHA256_FIELD: {
                        "type": "string",
                        "pattern": f"^({SHA256_HEX_ANY_CASE_PATTERN})?$",
                        "description": "The file's SHA-256 (hex); a mismatch stores nothing. "
                        "Empty: not checked.",
                        "examples": [""],
                    },
                },
            }
        }
    },
}


def optional_parameter(
    name: str, where: str, description: str, pattern: str | None = None
) -> dict[str, Any]:
    """An optional string parameter for `openapi_extra`: for what a handler reads from the
    request itself (headers here; FastAPI's Header parameters cost the upload its speed)."""
    schema = {"type": "string"} | ({"pattern": pattern} if pattern else {})
    return {
        "name": name,
        "in": where,
        "required": False,
        "schema": schema,
        "description": description,
    }


UPLOAD_HEADERS = [
    optional_parameter(
        "Idempotency-Key",
        "header",
        "Retries with the same key return the first upload's record.",
        pattern=f"^{KEY_PATTERN_TEXT}$",
    ),
    optional_parameter(
        "Repr-Digest", "header", "The file's digest, `sha-256=:<base64>:` (RFC 9530)."
    ),
    optional_parameter(
        "Content-Digest", "header", "The request body's digest, `sha-256=:<base64>:` (RFC 9530)."
    ),
]


class UploadResponse(EvidenceRecord):
    """The stored record, flat, with what the upload did: `UploadOutcome`'s other fields,
    described once there."""

    replayed: bool = Field(description=UploadOutcome.model_fields["replayed"].description)
    duplicate_of: list[str] | None = Field(
        description=UploadOutcome.model_fields["duplicate_of"].description
    )


@router.post(
    "/upload",
    status_code=201,
    response_model=UploadResponse,
    responses=error_responses(
        400,
        401,
        409,
        413,
        415,
        422,
        503,
        meanings={
            400: "Malformed multipart, or `digest_mismatch`: the bytes are not what a digest "
            "sent says. Nothing is stored.",
            409: "The Idempotency-Key was used for other content, or its first upload is still "
            "in progress.",
        },
    ),
    openapi_extra={"requestBody": UPLOAD_REQUEST_BODY, "parameters": UPLOAD_HEADERS},
    summary="Upload one evidence file (streamed; any part order)",
    description="A multipart form: `engagement_id`, `file` and optional `metadata` (a JSON "
    "object) and `sha256`. 201 means the bytes are durable and listed. Send an "
    "`Idempotency-Key` to retry without storing the file twice.",
)
async def upload_evidence(
    request: Request, storage: Storage, settings: AppSettings, principal: CurrentPrincipal
) -> Response:
    # The OpenAPI declaration of the route (and its answer wherever `UploadFastPath` is not
    # installed); `store_upload` does the work.
    return await store_upload(request, storage, settings, principal)


async def store_upload(
    request: Request, storage: StorageBackend, settings: Settings, principal: Principal
) -> Response:
    """The upload, as a plain Starlette handler: `UploadFastPath` calls it without FastAPI's
    per-request machinery. Headers are read here rather than as FastAPI Header parameters
    (documented in UPLOAD_HEADERS) for the same reason."""
    idempotency_key = request.headers.get("idempotency-key")
    repr_digest = request.headers.get("repr-digest")
    content_digest = request.headers.get("content-digest")
    started = time.perf_counter()
    limits = UploadLimits(
        max_file_bytes=settings.max_upload_bytes,
        max_field_bytes=settings.max_metadata_bytes,
        text_fields=TEXT_FIELDS,
    )
    body_claim = (
        digests.sha256_from_field(content_digest, "Content-Digest") if content_digest else None
    )
    if idempotency_key is not None:
        validate_key(idempotency_key)  # refused before the body is read
    file_claims: dict[str, str] = {}
    if repr_digest and (claim := digests.sha256_from_field(repr_digest, "Repr-Digest")):
        file_claims["Repr-Digest"] = claim
    received = await receive_upload(
        request, storage.stage, limits, hash_body=body_claim is not None
    )
    body = received.file
    try:
        engagement_id, file_name, metadata = _form_fields(received)
        if received.fields.get(SHA256_FIELD, "").strip():  # empty: absent, as metadata
            file_claims[SHA256_FIELD] = digests.sha256_from_hex(
                received.fields[SHA256_FIELD], SHA256_FIELD
            )
        expected = digests.agreed(file_claims)
        if body_claim is not None and body_claim != received.body_sha256:
            raise ApiError(
                400,
                "digest_mismatch",
                f"the request body has sha-256 {received.body_sha256} but Content-Digest says "
                f"{body_claim}; nothing was stored",
            )
    except BaseException:
        if body is not None:
            await in_thread(body.discard)
        raise
    assert body is not None
    outcome = await in_thread(
        _upload,
        storage,
        principal,
        body,
        engagement_id,
        file_name,
        metadata,
        expected,
        idempotency_key,
    )
    record = outcome.record
    request_context.note(engagement_id=record.engagement_id, evidence_id=record.id)
    if not outcome.replayed:
        metrics.UPLOAD_BYTES.labels(storage.name).observe(record.size_bytes)
        metrics.UPLOAD_DURATION.labels(storage.name).observe(time.perf_counter() - started)
    headers = {
        "Repr-Digest": digests.repr_digest(record.content_hash),
        # Relative (RFC 9110 allows it), and formatted: url_for walks the routes every time.
        "Location": f"{API_PREFIX}{router.prefix}/{record.engagement_id}/{record.id}",
    }
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    answer = UploadResponse(
        **record.model_dump(), replayed=outcome.replayed, duplicate_of=outcome.duplicate_of
    )
    # Serialised once, here: returned as a model, FastAPI would validate it again first.
    return Response(
        answer.model_dump_json(), status_code=201, media_type="application/json", headers=headers
    )


def _form_fields(received: ReceivedUpload) -> tuple[str, str, dict[str, Any] | None]:
    engagement_id = received.fields.get("engagement_id")
    if not engagement_id:
        raise invalid_request("missing form field 'engagement_id'")
    if received.file is None or received.file_name is None:
        raise invalid_request(f"missing form field '{FILE_FIELD}'")
    if received.file.size == 0:
        raise invalid_request("the file is empty")
    return engagement_id, received.file_name, _metadata(received.fields.get("metadata"))


def _metadata(text: str | None) -> dict[str, Any] | None:
    return decode_metadata(text) if text is not None and text.strip() else None


def _upload(
    storage: StorageBackend,
    principal: Principal,
    body: FileBody,
    engagement_id: str,
    file_name: str,
    metadata: dict[str, Any] | None,
    expected_sha256: str | None,
    idempotency_key: str | None,
) -> UploadOutcome:
    """All of an upload's remaining disk work, and its audit event, in one worker-thread trip."""
    try:
        staged = body.finish()
    except BaseException:
        body.discard()
        raise
    with refusals_recorded(storage, principal, "upload", engagement_id):
        outcome = storage.upload(  # consumes `staged`
            staged,
            engagement_id,
            file_name,
            metadata,
            expected_sha256=expected_sha256,
            idempotency_key=idempotency_key,
        )
    record_event(
        storage,
        principal,
        "upload",
        engagement_id,
        evidence_id=outcome.record.id,
        outcome="replayed" if outcome.replayed else "ok",
    )
    return outcome


@router.get(
    "/{engagement_id}",
    response_model=RecordPage,
    responses=error_responses(401, 422, 503),
    summary="List an engagement",
)
async def list_evidence(
    engagement_id: EngagementPath,
    storage: Storage,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the page before.")] = None,
    content_hash: Annotated[
        str | None, Query(description="Only records of the bytes with this SHA-256 (hex).")
    ] = None,
    include_withdrawn: Annotated[
        bool, Query(description="List withdrawn records (tombstones) too.")
    ] = False,
) -> Response:
    """Newest first: by `stored_at`, then `id`, both descending."""
    page = await in_thread(
        storage.list,
        engagement_id,
        limit=limit,
        cursor=cursor,
        content_hash=content_hash,
        include_withdrawn=include_withdrawn,
    )
    # Serialised here: FastAPI would validate the page again as RecordPage, and a tombstone's
    # fields would not survive that.
    return Response(page.model_dump_json(), media_type="application/json")


WITHDRAWN_RESPONSE: ResponseDocs = {
    410: {"model": WithdrawnBody, "description": "Withdrawn: the body holds the tombstone."}
}


@router.get(
    "/{engagement_id}/{evidence_id}",
    response_model=EvidenceRecord,
    responses=error_responses(401, 404, 422, 503) | WITHDRAWN_RESPONSE,
)
async def get_evidence(
    engagement_id: EngagementPath, evidence_id: str, storage: Storage
) -> EvidenceRecord:
    return await in_thread(storage.get, engagement_id, evidence_id)


class Withdrawal(BaseModel):
    reason: str = Field(
        min_length=1,
        max_length=MAX_REASON_CHARS,
        description="Why the record is withdrawn (kept in its tombstone and the audit trail).",
        examples=["uploaded to the wrong engagement"],
    )


@router.delete(
    "/{engagement_id}/{evidence_id}",
    response_model=Tombstone,
    responses=error_responses(
        400,
        401,
        404,
        409,
        422,
        503,
        meanings=NOT_JSON | {409: "`legal_hold`: the engagement is held."},
    ),
    summary="Withdraw a record: its bytes are removed, its record stays as a tombstone",
)
async def withdraw_evidence(
    engagement_id: EngagementPath,
    evidence_id: str,
    storage: Storage,
    principal: CurrentPrincipal,
    withdrawal: Annotated[Withdrawal, Body()],
) -> Tombstone:
    """Idempotent: withdrawing again answers the first withdrawal's tombstone. 409
    `legal_hold` while the engagement is held; 404 for an unknown id."""
    return await in_thread(
        _withdraw, storage, principal, engagement_id, evidence_id, withdrawal.reason
    )


def _withdraw(
    storage: StorageBackend,
    principal: Principal,
    engagement_id: str,
    evidence_id: str,
    reason: str,
) -> Tombstone:
    with refusals_recorded(storage, principal, "withdraw", engagement_id, evidence_id):
        tombstone = storage.withdraw(engagement_id, evidence_id, reason, principal.name)
        record_event(
            storage,
            principal,
            "withdraw",
            engagement_id,
            evidence_id=evidence_id,
            detail={"reason": reason},
            durably=True,  # a 200 means the trail has it
        )
    request_context.note(engagement_id=engagement_id, evidence_id=evidence_id)
    return tombstone


CONTENT_ANSWERS: ResponseDocs = {
    200: {"content": {"application/octet-stream": {}}, "description": "The bytes."},
    206: {"content": {"application/octet-stream": {}}, "description": "The range asked for."},
    304: {"description": "The client's copy (If-None-Match) is current."},
    416: {"description": "The range lies outside the file."},
}
CONTENT_RESPONSES = CONTENT_ANSWERS | error_responses(
    401,
    403,
    404,
    422,
    503,
    meanings={
        403: "`invalid_link`: a download link that was altered, has expired, or whose "
        "key is no longer configured."
    },
)

# Read from `request.headers` by `_content_answer`, declared here so the docs can send them.
CONTENT_PARAMETERS = [
    optional_parameter(
        "Range",
        "header",
        "One byte range, `bytes=<first>-[<last>]` or `bytes=-<suffix>`: 206.",
    ),
    optional_parameter(
        "If-None-Match",
        "header",
        'The ETag of the client\'s copy (`"<sha256>"`): 304 if it is current.',
    ),
    optional_parameter(
        "If-Range",
        "header",
        "With Range: the range only if the ETag still matches, else the whole file.",
    ),
] + [
    optional_parameter(
        name, "query", f"Part of a download link (`POST .../download-link`): {meaning}."
    )
    for name, meaning in (
        ("expires", "its expiry, unix seconds"),
        ("kid", "the name of the key it was issued to"),
        ("sig", "its signature"),
    )
]

# Content answers are for saving, never for rendering on this origin: evidence may be HTML.
CONTENT_SECURITY = {
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
}


@content_router.get(
    "/{engagement_id}/{evidence_id}/content",
    response_class=StreamingResponse,
    responses=CONTENT_RESPONSES | WITHDRAWN_RESPONSE,
    openapi_extra={"parameters": CONTENT_PARAMETERS},
    summary="The stored bytes; one byte range with Range, 304 with If-None-Match",
)
async def get_evidence_content(
    request: Request,
    engagement_id: EngagementPath,
    evidence_id: str,
    storage: Storage,
    principal: Reader,
) -> Response:
    """With a key, or without one through a download link (`POST .../download-link`)."""
    with refusals_recorded(storage, principal, "read", engagement_id, evidence_id):
        record = await in_thread(storage.get, engagement_id, evidence_id)
    answer = _content_answer(request, record)
    if answer.status_code == 304:
        return Response(status_code=304, headers=answer.headers)
    stream = await in_thread(_open_recorded, storage, principal, record, answer)
    return StreamingResponse(
        _chunks(stream, answer.byte_range.length),
        status_code=answer.status_code,
        media_type="application/octet-stream",
        headers=answer.headers,
    )


def _open_recorded(
    storage: StorageBackend, principal: Principal, record: EvidenceRecord, answer: _ContentAnswer
) -> BinaryIO:
    """Open the bytes and record the read, in one thread trip; the event is queued, so the
    download never waits for the audit trail's store (unless its queue is full: `admit`)."""
    storage.audit.admit()
    stream = storage.open(record, answer.byte_range.start)
    detail: dict[str, object] = {}
    if answer.status_code == 206:
        detail["range"] = answer.headers["Content-Range"]
    if principal.by_link:
        detail["by"] = "download link"
    record_event(
        storage,
        principal,
        "read",
        record.engagement_id,
        evidence_id=record.id,
        detail=detail or None,
    )
    return stream


@content_router.head(
    "/{engagement_id}/{evidence_id}/content",
    responses=CONTENT_RESPONSES | WITHDRAWN_RESPONSE,
    openapi_extra={"parameters": CONTENT_PARAMETERS},
    summary="The headers a GET of the bytes would get",
)
async def head_evidence_content(
    request: Request,
    engagement_id: EngagementPath,
    evidence_id: str,
    storage: Storage,
    principal: Reader,
) -> Response:
    record = await in_thread(storage.get, engagement_id, evidence_id)
    answer = _content_answer(request, record)
    return Response(
        status_code=answer.status_code,
        media_type=None if answer.status_code == 304 else "application/octet-stream",
        headers=answer.headers,
    )


class LinkRequest(BaseModel):
    expires_in: int = Field(
        default=300,
        ge=1,
        description="Seconds the link works for; at most LINK_MAX_SECONDS (longer is capped).",
        examples=[300],
    )


class DownloadLink(BaseModel):
    url: str = Field(
        description="The content URL with its signature, relative to this server: a browser "
        "can follow it (GET or HEAD) without a key until it expires."
    )
    expires_at: datetime | None = Field(
        description="When the link stops working; null where no key is needed (API_KEYS unset)."
    )


@router.post(
    "/{engagement_id}/{evidence_id}/download-link",
    response_model=DownloadLink,
    responses=error_responses(
        400,
        401,
        404,
        422,
        503,
        meanings=NOT_JSON | {503: "The backend cannot answer, or LINK_SIGNING_SECRET is not set."},
    )
    | WITHDRAWN_RESPONSE,
    summary="A short-lived link to the bytes, for a browser (like an S3 presigned URL)",
)
async def issue_download_link(
    engagement_id: EngagementPath,
    evidence_id: str,
    storage: Storage,
    settings: AppSettings,
    signer: Signer,
    principal: CurrentPrincipal,
    link: Annotated[LinkRequest | None, Body()] = None,
) -> DownloadLink:
    """Signed for the key that asks (its name is the link's `kid`, and the principal of every
    read through it in the audit trail). 404 for an unknown record, 410 for a withdrawn one."""
    record = await in_thread(storage.get, engagement_id, evidence_id)
    path = f"{API_PREFIX}{router.prefix}/{record.engagement_id}/{record.id}/content"
    if signer is None:
        if settings.auth_mode == "open_loopback":  # the plain URL needs no key
            return DownloadLink(url=path, expires_at=None)
        raise ApiError(
            503,
            "links_not_configured",
            "download links need LINK_SIGNING_SECRET set on the server (the same on every replica)",
        )
    signed = signer.sign(path, principal.name, (link or LinkRequest()).expires_in)
    return DownloadLink(url=signed.url, expires_at=datetime.fromtimestamp(signed.expires_at, UTC))


@dataclass(frozen=True)
class _ContentAnswer:
    status_code: int
    byte_range: ByteRange
    headers: dict[str, str]


def _content_answer(request: Request, record: EvidenceRecord) -> _ContentAnswer:
    """Status and headers for the content of `record` as this request asks for it."""
    etag = f'"{record.content_hash}"'
    headers = {
        "ETag": etag,
        "Repr-Digest": digests.repr_digest(record.content_hash),
        "Accept-Ranges": "bytes",
    }
    whole = ByteRange(0, record.size_bytes)
    if etag_matches(request.headers.get("if-none-match"), etag):
        return _ContentAnswer(304, whole, headers)
    headers |= {"Content-Disposition": content_disposition(record.file_name)} | CONTENT_SECURITY
    byte_range = requested_range(
        request.headers.get("range"), record.size_bytes, request.headers.get("if-range"), etag
    )
    if byte_range is None:
        return _ContentAnswer(200, whole, headers | {"Content-Length": str(record.size_bytes)})
    headers |= {
        "Content-Length": str(byte_range.length),
        "Content-Range": f"bytes {byte_range.start}-{byte_range.end}/{record.size_bytes}",
    }
    return _ContentAnswer(206, byte_range, headers)


def _chunks(stream: BinaryIO, length: int) -> Iterator[bytes]:
    """Starlette runs this sync iterator in the thread pool, chunk by chunk."""
    with stream:
        while length > 0:
            chunk = stream.read(min(length, CHUNK_BYTES))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


def content_disposition(file_name: str) -> str:
    """RFC 6266: an ASCII fallback plus the exact UTF-8 name."""
    fallback = "".join(
        char if char.isascii() and char.isprintable() and char not in '"\\' else "_"
        for char in file_name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe='')}"
