"""The audit events the API records: one per upload, content read, withdrawal and hold change,
for the request's principal, whatever its outcome once the key was accepted.

Called on request threads (the backend's queue takes a lock). Refusals are recorded with
the error code the client gets (`legal_hold`, `withdrawn`, `not_found`, ...); requests naming
no valid engagement are not, as the trail is read per engagement (the request log has them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from app.api.deps import Principal
from app.api.errors import error_code
from app.storage.audit import OK, AuditAction, audit_event
from app.storage.base import StorageBackend
from app.storage.errors import StorageError
from app.storage.names import is_engagement_id, is_evidence_id


def record_event(
    storage: StorageBackend,
    principal: Principal,
    action: AuditAction,
    engagement_id: str,
    *,
    evidence_id: str | None = None,
    outcome: str = OK,
    detail: Mapping[str, Any] | None = None,
    durably: bool = False,
) -> None:
    """Queue the event; `durably`: return only once it is stored (actions that change
    evidence answer only when the trail has them)."""
    event = audit_event(
        principal.name,
        action,
        engagement_id,
        evidence_id=evidence_id,
        outcome=outcome,
        detail=detail,
    )
    if durably:
        storage.audit.record_durably(event)
    else:
        storage.audit.record(event)


@contextmanager
def refusals_recorded(
    storage: StorageBackend,
    principal: Principal,
    action: AuditAction,
    engagement_id: str,
    evidence_id: str | None = None,
) -> Iterator[None]:
    """Record the action's refusal if the block raises a StorageError (then re-raised)."""
    try:
        yield
    except StorageError as error:
        if is_engagement_id(engagement_id):
            record_event(
                storage,
                principal,
                action,
                engagement_id,
                # An id as the client sent it only if it is one: the trail holds no free text.
                evidence_id=evidence_id if evidence_id and is_evidence_id(evidence_id) else None,
                outcome=error_code(error),
            )
        raise
