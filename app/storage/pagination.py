"""Opaque keyset cursors: a page boundary is the last record's (`stored_at`, `id`).

Keyset (not offset) pagination keeps pages stable while new evidence arrives and costs the
same at page 1 and page 1,000 on every backend.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from app.storage.errors import InvalidCursor
from app.storage.names import is_evidence_id
from app.storage.records import EvidenceRecord, RecordPage, is_stored_at

Row = TypeVar("Row")

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


def cut_page(
    rows: Sequence[Row],
    limit: int,
    position: Callable[[Row], tuple[str, str]],
    more: bool | None = None,
) -> tuple[list[Row], str | None]:
    """The page's items and the cursor after them, from up to `limit + 1` rows read (an extra
    row says there is a next page, unless `more` says it from the rows as read); `position`
    is a row's (time, id)."""
    items = list(rows[:limit])
    more = len(rows) > limit if more is None else more
    return items, encode_cursor(*position(items[-1])) if more and items else None


def record_page(rows: Sequence[EvidenceRecord], limit: int) -> RecordPage:
    """A page of records, newest first, read `limit + 1` at a time."""
    items, cursor = cut_page(rows, limit, lambda record: (record.stored_at, record.id))
    return RecordPage(items=items, next_cursor=cursor)
