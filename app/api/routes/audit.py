"""GET /api/v1/audit?engagement_id=...: an engagement's audit trail, oldest first, for keys
with the `audit` role."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.api.deps import Principal, Storage, require_api_key, require_role
from app.api.errors import error_responses
from app.api.threads import in_thread
from app.storage.audit import AuditPage
from app.storage.base import StorageBackend
from app.storage.names import ENGAGEMENT_ID_PATTERN, validate_engagement_id
from app.storage.pagination import MAX_PAGE_SIZE

router = APIRouter(
    tags=["audit"],
    dependencies=[Depends(require_api_key)],
    responses=error_responses(401, 403, 422, 503),
)

# How long a read of the trail waits for this process's own queued events to be stored.
FLUSH_SECONDS = 5.0


@router.get("/audit", response_model=AuditPage, summary="An engagement's audit trail")
async def read_audit(
    storage: Storage,
    principal: Annotated[Principal, require_role("audit")],
    engagement_id: Annotated[str, Query(pattern=f"^{ENGAGEMENT_ID_PATTERN}$")],
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the page before.")] = None,
) -> AuditPage:
    """Who uploaded, read, withdrew, held or purged what, and when: every event of the
    engagement, oldest first. Events this server recorded are stored before it answers;
    those of other replicas appear once their writer has stored them (within a second or
    so while the store answers)."""
    return await in_thread(_page, storage, engagement_id, limit, cursor)


def _page(storage: StorageBackend, engagement_id: str, limit: int, cursor: str | None) -> AuditPage:
    validate_engagement_id(engagement_id)
    storage.audit.flush(FLUSH_SECONDS)
    return storage.audit.store.page(engagement_id, limit, cursor)
