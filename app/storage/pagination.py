"""Opaque keyset cursors: a page boundary is the last record's (`stored_at`, `id`).

Keyset (not offset) pagination keeps pages stable while new evidence arrives and costs the
same at page 1 and page 1,000 on every backend.
"""

from __future__ import annotations

import base64
import binascii
import json

from app.storage.errors import InvalidCursor
from app.storage.names import is_evidence_id
from app.storage.records import is_stored_at

MAX_PAGE_SIZE = 1000


def encode_cursor(stored_at: str, evidence_id: str) -> str:
    raw = json.dumps([stored_at, evidence_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """Return (stored_at, id) of the last record of the previous page."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stored_at, evidence_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as error:
        raise InvalidCursor("cursor is not one this service issued") from error
    if not (
        isinstance(stored_at, str)
        and isinstance(evidence_id, str)
        and is_stored_at(stored_at)  # what kmflow writes: a cursor holding anything else
        and is_evidence_id(evidence_id)  # was not issued here, and never reaches a query
    ):
        raise InvalidCursor("cursor is not one this service issued")
    return stored_at, evidence_id
