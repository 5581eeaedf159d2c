"""The audit trail's event and the store each backend keeps it in.

One event per upload, content read, withdrawal, hold change and purge: who (the principal,
an API key's name or an operator), what, which engagement and record, the request, and how it
ended. The store is append-only in every backend (a SQLite table whose triggers refuse UPDATE
and DELETE; Delta tables with `delta.appendOnly`), and events are written in batches by
`audit_trail.AuditTrail`, off the request's path. Events name ids, never file names, metadata
or content, so the trail may outlive a purge of the engagement it describes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from app.observability.request_context import current_request_id
from app.storage.names import new_evidence_id
from app.storage.pagination import cut_page
from app.storage.records import utc_timestamp

AuditAction = Literal["upload", "read", "withdraw", "hold", "release", "purge"]
# The outcomes kmflow writes: `ok`, `replayed` (an upload's Idempotency-Key named an earlier
# upload), `planned` (a purge's line per record, written before anything is removed),
# `completed` (a purge), or the error code of a refusal (`legal_hold`, `withdrawn`, ...).
OK = "ok"


class AuditEvent(BaseModel):
    id: str = Field(description="Unique id of the event (32 hex characters).")
    occurred_at: str = Field(description="When it happened, ISO-8601 UTC.")
    principal: str = Field(description="Who: an API key's name, or the operator of a command.")
    action: AuditAction
    engagement_id: str
    evidence_id: str | None
    request_id: str | None = Field(description="The HTTP request's X-Request-ID, if any.")
    outcome: str = Field(description="`ok`, or what else happened (an error code).")
    detail: str | None = Field(description="A JSON object: the reason, a range, a digest.")


# The columns of every backend's `evidence_audit` table, in order.
AUDIT_COLUMNS: tuple[str, ...] = tuple(AuditEvent.model_fields)


class AuditPage(BaseModel):
    items: list[AuditEvent] = Field(description="Oldest first: by `occurred_at`, then `id`.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


def audit_event(
    principal: str,
    action: AuditAction,
    engagement_id: str,
    *,
    evidence_id: str | None = None,
    outcome: str = OK,
    detail: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """An event of now, tagged with the request being served (if any)."""
    return AuditEvent(
        id=new_evidence_id(),
        occurred_at=utc_timestamp(),
        principal=principal,
        action=action,
        engagement_id=engagement_id,
        evidence_id=evidence_id,
        request_id=current_request_id(),
        outcome=outcome,
        detail=json.dumps(dict(detail), sort_keys=True) if detail else None,
    )


class AuditStore(Protocol):
    """Where a backend keeps its audit events; append-only."""

    def append(self, events: Sequence[AuditEvent]) -> None:
        """Store `events` durably; storing an event again (a retry) keeps one copy as read."""

    def page(self, engagement_id: str, limit: int, cursor: str | None) -> AuditPage:
        """The engagement's events, oldest first, after `cursor`."""

    def engagements(self) -> Iterable[str]:
        """Every engagement with events (a migration copies their trails)."""


def audit_page(events: Sequence[AuditEvent], limit: int, more: bool | None = None) -> AuditPage:
    """A page of events, oldest first, read `limit + 1` at a time (`more`: whether the store
    had more rows than the page, where repeats were dropped from `events`)."""
    items, cursor = cut_page(events, limit, lambda event: (event.occurred_at, event.id), more)
    return AuditPage(items=items, next_cursor=cursor)


def unique_events(events: Iterable[AuditEvent]) -> list[AuditEvent]:
    """`events` in order without repeats of an id: a store whose appends are not idempotent
    (a blind append retried after an unknown outcome) may hold an event twice."""
    seen: set[str] = set()
    kept = []
    for event in events:
        if event.id not in seen:
            seen.add(event.id)
            kept.append(event)
    return kept
