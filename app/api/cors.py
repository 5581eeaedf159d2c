"""CORS for a front-end on another origin (CORS_ORIGINS, exact origins only): what its
requests may send, and the answers' headers its script may read: the upload's Location and
digest, a replay, a range, the request id. The evidence page is same-origin and needs none."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

CORS_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE"]
CORS_REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Repr-Digest",
    "Content-Digest",
    "Range",
    "If-None-Match",
    "If-Range",
    "X-Request-ID",
]
CORS_EXPOSED_HEADERS = [
    "Location",
    "Repr-Digest",
    "X-Request-ID",
    "Idempotent-Replayed",
    "Content-Range",
    "Content-Disposition",
    "ETag",
    "Retry-After",
]

PREFLIGHT_CACHE_SECONDS = 600


def add_cors(app: FastAPI, origins: list[str]) -> None:
    """Nothing at all without origins: no layer on any request."""
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=PREFLIGHT_CACHE_SECONDS,
        )
