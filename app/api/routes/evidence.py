"""Evidence routes: upload, list an engagement, read one record, stream its bytes (or a range),
withdraw a record. Uploads, content reads and withdrawals are recorded in the audit trail.

Longer than most modules: each route's OpenAPI text (built from the storage patterns) stays
beside the route it documents.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, BinaryIO
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from app.api import API_PREFIX, digests
from app.api.audit_events import record_event, refusals_recorded
from app.api.byte_ranges import ByteRange, etag_matches, requested_range
from app.api.deps import AppSettings, CurrentPrincipal, Principal, Storage, require_api_key
from app.api.errors import ERROR_RESPONSES, ApiError, WithdrawnBody, invalid_request
from app.api.file_body import FileBody
from app.api.multipart import FILE_FIELD, ReceivedUpload, UploadLimits, receive_upload
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

router = APIRouter(
    prefix="/evidence",
    tags=["evidence"],
    dependencies=[Depends(require_api_key)],
    responses=ERROR_RESPONSES,
)

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
                    "engagement_id": {
                        "type": "string",
                        "pattern": f"^{ENGAGEMENT_ID_PATTERN}$",
                    },
                    FILE_FIELD: {"type": "string", "format": "binary"},
                    "metadata": {
                        "type": "string",
                        "description": "Client metadata: a JSON object, as a string.",
                    },
                    SHA256_FIELD: {
                        "type": "string",
                        "pattern": f"^{SHA256_HEX_ANY_CASE_PATTERN}$",
                        "description": "The file's SHA-256 (hex); a mismatch stores nothing.",
                    },
                },
            }
        }
    },
}


UPLOAD_HEADERS = [
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": f"^{KEY_PATTERN_TEXT}$"},
        "description": "Retries with the same key return the first upload's record.",
    },
    {
        "name": "Repr-Digest",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "The file's digest, `sha-256=:<base64>:` (RFC 9530).",
    },
    {
        "name": "Content-Digest",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "The request body's digest, `sha-256=:<base64>:` (RFC 9530).",
    },
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
    openapi_extra={"requestBody": UPLOAD_REQUEST_BODY, "parameters": UPLOAD_HEADERS},
    summary="Upload one evidence file (streamed; any part order)",
)
async def upload_evidence(
    request: Request, storage: Storage, settings: AppSettings, principal: CurrentPrincipal
) -> Response:
    """The OpenAPI declaration of the route (and its answer wherever `UploadFastPath` is not
    installed); `store_upload` does the work."""
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
        if SHA256_FIELD in received.fields:
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


@router.get("/{engagement_id}", response_model=RecordPage, summary="List an engagement")
async def list_evidence(
    engagement_id: str,
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


WITHDRAWN_RESPONSE: dict[int | str, dict[str, Any]] = {
    410: {"model": WithdrawnBody, "description": "Withdrawn: the body holds the tombstone."}
}


@router.get(
    "/{engagement_id}/{evidence_id}", response_model=EvidenceRecord, responses=WITHDRAWN_RESPONSE
)
async def get_evidence(engagement_id: str, evidence_id: str, storage: Storage) -> EvidenceRecord:
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
    summary="Withdraw a record: its bytes are removed, its record stays as a tombstone",
)
async def withdraw_evidence(
    engagement_id: str,
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


CONTENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "The bytes."},
    206: {"content": {"application/octet-stream": {}}, "description": "The range asked for."},
    304: {"description": "The client's copy (If-None-Match) is current."},
    416: {"description": "The range lies outside the file."},
}


@router.get(
    "/{engagement_id}/{evidence_id}/content",
    response_class=StreamingResponse,
    responses=CONTENT_RESPONSES | WITHDRAWN_RESPONSE,
    summary="The stored bytes; one byte range with Range, 304 with If-None-Match",
)
async def get_evidence_content(
    request: Request,
    engagement_id: str,
    evidence_id: str,
    storage: Storage,
    principal: CurrentPrincipal,
) -> Response:
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
    detail = None
    if answer.status_code == 206:
        detail = {"range": answer.headers["Content-Range"]}
    record_event(
        storage, principal, "read", record.engagement_id, evidence_id=record.id, detail=detail
    )
    return stream


@router.head(
    "/{engagement_id}/{evidence_id}/content",
    responses=CONTENT_RESPONSES | WITHDRAWN_RESPONSE,
    summary="The headers a GET of the bytes would get",
)
async def head_evidence_content(
    request: Request, engagement_id: str, evidence_id: str, storage: Storage
) -> Response:
    record = await in_thread(storage.get, engagement_id, evidence_id)
    answer = _content_answer(request, record)
    return Response(
        status_code=answer.status_code,
        media_type=None if answer.status_code == 304 else "application/octet-stream",
        headers=answer.headers,
    )


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
    headers |= {
        "Content-Disposition": content_disposition(record.file_name),
        "X-Content-Type-Options": "nosniff",
    }
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
