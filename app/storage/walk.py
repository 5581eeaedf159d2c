"""Every page of a listing, followed to its end: an engagement's records, an engagement's
audit trail. For the procedures that need all of them (migrations, purges), read lazily so
an engagement of any size walks in flat memory."""

from __future__ import annotations

from collections.abc import Iterator

from app.storage.audit import AuditEvent
from app.storage.base import StorageBackend
from app.storage.pagination import MAX_PAGE_SIZE
from app.storage.records import EvidenceRecord


def all_records(
    backend: StorageBackend, engagement_id: str, *, include_withdrawn: bool = False
) -> Iterator[EvidenceRecord]:
    """Newest first, as `StorageBackend.list` pages them."""
    cursor = None
    while True:
        page = backend.list(
            engagement_id,
            limit=MAX_PAGE_SIZE,
            cursor=cursor,
            include_withdrawn=include_withdrawn,
        )
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def all_events(backend: StorageBackend, engagement_id: str) -> Iterator[AuditEvent]:
    """The engagement's audit trail as the backend has stored it, oldest first."""
    cursor = None
    while True:
        page = backend.audit.store.page(engagement_id, MAX_PAGE_SIZE, cursor)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
