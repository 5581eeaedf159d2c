"""Every error the API answers with, mapped to a status and one JSON shape, in one place.

Body: `{"error": "<code>", "detail": "<what went wrong, for a person>"}`. Unexpected errors
become a bare 500 whose detail says nothing about internals (or secrets); they are logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.observability.request_context import current_request_id
from app.storage.errors import (
    DigestMismatch,
    EvidenceExists,
    EvidenceNotFound,
    EvidenceWithdrawn,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    InvalidInput,
    LegalHoldActive,
    StorageError,
    StorageMisconfigured,
    StorageUnavailable,
)
from app.storage.records import Tombstone

logger = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    error: str
    detail: str
    request_id: str | None = Field(
        default=None, description="Also in the X-Request-ID header and the request's log lines."
    )


class WithdrawnBody(ErrorBody):
    """A 410: the record was withdrawn; its tombstone says when, by whom and why."""

    tombstone: Tombstone


class ApiError(Exception):
    """An error raised by the HTTP layer itself (request shape, auth, limits)."""

    def __init__(
        self, status_code: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.code = code
        self.detail = detail
        self.headers = headers


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, "unauthorized", detail, {"WWW-Authenticate": "Bearer"})


def payload_too_large(detail: str) -> ApiError:
    return ApiError(413, "payload_too_large", detail)


def invalid_request(detail: str) -> ApiError:
    return ApiError(422, "invalid_request", detail)


def malformed_request(detail: str) -> ApiError:
    return ApiError(400, "malformed_request", detail)


_STORAGE_STATUS: list[tuple[type[StorageError], int, str]] = [
    (EvidenceNotFound, 404, "not_found"),
    (EvidenceWithdrawn, 410, "withdrawn"),
    (LegalHoldActive, 409, "legal_hold"),
    (EvidenceExists, 409, "conflict"),
    (DigestMismatch, 400, "digest_mismatch"),
    (IdempotencyKeyReused, 409, "idempotency_key_reused"),
    (IdempotencyKeyInProgress, 409, "idempotency_key_in_progress"),
    (InvalidInput, 422, "invalid_request"),
    (StorageUnavailable, 503, "storage_unavailable"),
    (StorageMisconfigured, 503, "storage_misconfigured"),
]

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "malformed_request"}

# What each error status means wherever it is not said more exactly (`error_responses`).
_ERROR_MEANINGS = {
    400: "Malformed request: the multipart syntax, or digests that disagree with the bytes.",
    401: "No valid API key (`Authorization: Bearer <key>`).",
    403: "The key lacks the role this route needs.",
    404: "No such record.",
    409: "Conflict with the stored state.",
    413: "Over MAX_UPLOAD_BYTES or MAX_METADATA_BYTES.",
    415: "Not multipart/form-data.",
    422: "A missing or invalid field, path or query parameter.",
    503: "The backend cannot take it now; the detail says why.",
}

# The 400 a route with a JSON body gives for a body that does not parse.
NOT_JSON = {400: "The body is not valid JSON."}

# Each route lists only the errors it can give, so "Try it out" and generated clients see
# what can really happen (checked by tests/reliability/test_schema_fuzzing.py).
ResponseDocs = dict[int | str, dict[str, Any]]


def error_responses(*statuses: int, meanings: dict[int, str] | None = None) -> ResponseDocs:
    """OpenAPI responses for `statuses`, each with the JSON error body; `meanings` say what a
    status means on this route where the general meaning is too vague."""
    meanings = meanings or {}
    return {
        status: {"model": ErrorBody, "description": meanings.get(status, _ERROR_MEANINGS[status])}
        for status in statuses
    }


def error_response(
    status_code: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """`{"error", "detail", "request_id"}`: the id finds the request's log lines."""
    body = {"error": code, "detail": detail, "request_id": current_request_id()}
    return JSONResponse(body, status_code=status_code, headers=headers)


def api_error_response(error: ApiError) -> JSONResponse:
    return error_response(error.status_code, error.code, error.detail, error.headers)


def error_code(error: StorageError) -> str:
    """The `error` code the API answers `error` with (also an audit event's outcome)."""
    return next(
        (code for kind, _, code in _STORAGE_STATUS if isinstance(error, kind)), "internal_error"
    )


def storage_error_response(error: StorageError) -> JSONResponse:
    for kind, status_code, code in _STORAGE_STATUS:
        if isinstance(error, kind):
            if status_code >= 500:
                logger.error("storage error: %s", error)
            if isinstance(error, EvidenceWithdrawn):
                body = WithdrawnBody(
                    error=code,
                    detail=str(error),
                    request_id=current_request_id(),
                    tombstone=error.tombstone,  # type: ignore[arg-type]
                )
                return JSONResponse(body.model_dump(), status_code=status_code)
            return error_response(status_code, code, str(error))
    logger.error("unmapped storage error: %s", error)
    return error_response(500, "internal_error", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return api_error_response(error)

    @app.exception_handler(StorageError)
    async def _storage_error(_: Request, error: StorageError) -> JSONResponse:
        return storage_error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        return error_response(422, "invalid_request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, "http_error")
        return error_response(error.status_code, code, str(error.detail), error.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=error)
        return error_response(500, "internal_error", "internal error")
