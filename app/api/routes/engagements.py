"""Legal holds: GET/PUT/DELETE /api/v1/engagements/{engagement_id}/hold, for keys with the
`audit` role. While an engagement is held, withdrawals and purges of it are refused with 409
`legal_hold`; uploads and reads go on. Every change is recorded in the audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, Field

from app.api.audit_events import record_event, refusals_recorded
from app.api.deps import Principal, Storage, require_api_key, require_role
from app.api.errors import NOT_JSON, error_responses
from app.api.parameters import EngagementPath
from app.api.threads import in_thread
from app.observability import request_context
from app.storage.audit import AuditAction
from app.storage.base import StorageBackend
from app.storage.holds import Hold, HoldStatus
from app.storage.records import MAX_REASON_CHARS

router = APIRouter(
    prefix="/engagements",
    tags=["legal hold"],
    dependencies=[Depends(require_api_key)],
    responses=error_responses(401, 403, 422, 503),
)

Auditor = Annotated[Principal, require_role("audit")]


class HoldRequest(BaseModel):
    reason: str = Field(
        min_length=1,
        max_length=MAX_REASON_CHARS,
        description="Why the engagement is held (a dispute, a regulator's request).",
        examples=["litigation hold: matter 2026-114"],
    )


@router.get("/{engagement_id}/hold", response_model=HoldStatus, summary="The engagement's hold")
async def get_hold(
    engagement_id: EngagementPath, storage: Storage, principal: Auditor
) -> HoldStatus:
    hold = await in_thread(storage.hold, engagement_id)
    return _status(engagement_id, hold)


@router.put(
    "/{engagement_id}/hold",
    response_model=HoldStatus,
    responses=error_responses(400, meanings=NOT_JSON),
    summary="Place a legal hold (idempotent: a held engagement keeps its first hold)",
)
async def place_hold(
    engagement_id: EngagementPath,
    storage: Storage,
    principal: Auditor,
    hold: Annotated[HoldRequest, Body()],
) -> HoldStatus:
    return await in_thread(_change, storage, principal, engagement_id, hold.reason)


@router.delete(
    "/{engagement_id}/hold",
    response_model=HoldStatus,
    summary="Release the legal hold (idempotent: answers held=false either way)",
)
async def release_hold(
    engagement_id: EngagementPath, storage: Storage, principal: Auditor
) -> HoldStatus:
    return await in_thread(_change, storage, principal, engagement_id, None)


def _change(
    storage: StorageBackend, principal: Principal, engagement_id: str, reason: str | None
) -> HoldStatus:
    """Place (with a reason) or release (None) the hold, and record it durably."""
    request_context.note(engagement_id=engagement_id)
    action: AuditAction = "hold" if reason is not None else "release"
    detail: dict[str, object]
    with refusals_recorded(storage, principal, action, engagement_id):
        if reason is not None:
            hold: Hold | None = storage.place_hold(engagement_id, reason, principal.name)
            detail = {"reason": reason}
        else:
            released = storage.release_hold(engagement_id)
            hold, detail = None, {"released": released is not None}
        record_event(storage, principal, action, engagement_id, detail=detail, durably=True)
    return _status(engagement_id, hold)


def _status(engagement_id: str, hold: Hold | None) -> HoldStatus:
    return HoldStatus(engagement_id=engagement_id, held=hold is not None, hold=hold)
