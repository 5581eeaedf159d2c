"""Opaque keyset cursors: a page boundary is the last record's (`stored_at`, `id`).

Keyset (not offset) pagination keeps pages stable while new evidence arrives and costs the
same at page 1 and page 1,000 on every backend.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from app.storage.errors import InvalidCursor

MAX_PAGE_SIZE = 1000
# What kmflow itself writes: `utc_timestamp()` and `new_evidence_id()`. A cursor holding
# anything else was not issued here, and nothing else ever reaches a query.
_STORED_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_ID = re.compile(r"[0-9a-f]{32}")


def is_stored_at(value: str) -> bool:
    """True for a timestamp as `utc_timestamp()` writes it."""
    return _STORED_AT.fullmatch(value) is not None


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
        and _STORED_AT.fullmatch(stored_at)
        and _ID.fullmatch(evidence_id)
    ):
        raise InvalidCursor("cursor is not one this service issued")
    return stored_at, evidence_id
