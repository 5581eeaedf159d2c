"""Evidence routes: upload, list an engagement, read one record, stream its bytes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import AppSettings, Storage, require_api_key
from app.api.errors import ERROR_RESPONSES, invalid_request
from app.api.file_body import FileBody
from app.api.multipart import FILE_FIELD, UploadLimits, receive_upload
from app.storage.base import EvidenceRecord, RecordPage, StorageBackend
from app.storage.pagination import MAX_PAGE_SIZE

router = APIRouter(
    prefix="/evidence",
    tags=["evidence"],
    dependencies=[Depends(require_api_key)],
    responses=ERROR_RESPONSES,
)

READ_CHUNK_BYTES = 1024 * 1024
TEXT_FIELDS = frozenset({"engagement_id", "metadata"})

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
                        "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
                    },
                    FILE_FIELD: {"type": "string", "format": "binary"},
                    "metadata": {
                        "type": "string",
                        "description": "Client metadata: a JSON object, as a string.",
                    },
                },
            }
        }
    },
}


@router.post(
    "/upload",
    status_code=201,
    response_model=EvidenceRecord,
    openapi_extra={"requestBody": UPLOAD_REQUEST_BODY},
    summary="Upload one evidence file (streamed; any part order)",
)
async def upload_evidence(
    request: Request, storage: Storage, settings: AppSettings
) -> EvidenceRecord:
    limits = UploadLimits(
        max_file_bytes=settings.max_upload_bytes,
        max_field_bytes=settings.max_metadata_bytes,
        text_fields=TEXT_FIELDS,
    )
    received = await receive_upload(request, storage.stage, limits)
    body = received.file
    try:
        engagement_id = received.fields.get("engagement_id")
        if not engagement_id:
            raise invalid_request("missing form field 'engagement_id'")
        if body is None or received.file_name is None:
            raise invalid_request(f"missing form field '{FILE_FIELD}'")
        if body.size == 0:
            raise invalid_request("the file is empty")
        metadata = _parse_metadata(received.fields.get("metadata"))
    except BaseException:
        if body is not None:
            await run_in_threadpool(body.discard)
        raise
    return await run_in_threadpool(
        _commit, storage, body, engagement_id, received.file_name, metadata
    )


def _commit(
    storage: StorageBackend,
    body: FileBody,
    engagement_id: str,
    file_name: str,
    metadata: dict[str, Any] | None,
) -> EvidenceRecord:
    """All of an upload's remaining disk work in one worker-thread trip."""
    try:
        staged = body.finish()
    except BaseException:
        body.discard()
        raise
    return storage.commit(staged, engagement_id, file_name, metadata)  # consumes `staged`


@router.get("/{engagement_id}", response_model=RecordPage, summary="List an engagement")
async def list_evidence(
    engagement_id: str,
    storage: Storage,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the page before.")] = None,
) -> RecordPage:
    """Newest first: by `stored_at`, then `id`, both descending."""
    return await run_in_threadpool(storage.list, engagement_id, limit=limit, cursor=cursor)


@router.get("/{engagement_id}/{evidence_id}", response_model=EvidenceRecord)
async def get_evidence(engagement_id: str, evidence_id: str, storage: Storage) -> EvidenceRecord:
    return await run_in_threadpool(storage.get, engagement_id, evidence_id)


@router.get(
    "/{engagement_id}/{evidence_id}/content",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def get_evidence_content(
    engagement_id: str, evidence_id: str, storage: Storage
) -> StreamingResponse:
    record = await run_in_threadpool(storage.get, engagement_id, evidence_id)
    stream = await run_in_threadpool(storage.open, record)
    return StreamingResponse(
        _chunks(stream),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(record.size_bytes),
            "Content-Disposition": content_disposition(record.file_name),
            "ETag": f'"{record.content_hash}"',
            "X-Content-Type-Options": "nosniff",
        },
    )


def _parse_metadata(text: str | None) -> dict[str, Any] | None:
    if text is None or not text.strip():
        return None
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as error:
        raise invalid_request(f"metadata is not valid JSON: {error.msg}") from None
    if not isinstance(metadata, dict):
        raise invalid_request("metadata must be a JSON object")
    return metadata


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    """Starlette runs this sync iterator in the thread pool, chunk by chunk."""
    with stream:
        while chunk := stream.read(READ_CHUNK_BYTES):
            yield chunk


def content_disposition(file_name: str) -> str:
    """RFC 6266: an ASCII fallback plus the exact UTF-8 name."""
    fallback = "".join(
        char if char.isascii() and char.isprintable() and char not in '"\\' else "_"
        for char in file_name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe='')}"
