"""Purge an engagement at its end: every file and row of it removed for good, and a deletion
certificate that says what was removed (`kmflow purge`).

The order makes it resumable and idempotent, whatever kills it:

1. refuse if the engagement is under legal hold (checked again before each removing step);
2. plan: every record of the engagement, withdrawn ones included, is written to the audit
   trail as a `purge`/`planned` event (id, content hash, size) and the trail is flushed
   before anything is removed. The audit trail is the backend's own shared store, so the plan
   survives the process, the machine and a rerun from elsewhere; a rerun plans what it finds
   and keeps what an interrupted run planned (events since the engagement's last completed
   purge);
3. remove every record's file, then sweep the engagement's directory (stray files of
   interrupted writes), so a file never outlives its row;
4. delete the rows (records, then tombstones; on Databricks also rows on their way);
5. expunge: make the deleted rows unrecoverable from the tables' files (Delta: VACUUM without
   retention and a cut log; Databricks: REORG ... APPLY (PURGE) and VACUUM; SQLite: VACUUM);
6. check: no record and no file of the engagement is left;
7. a `purge`/`completed` event carrying the certificate's SHA-256, then the certificate.

The audit trail itself stays: its events name ids and principals, never file names, metadata
or content, and they are the proof of who did what, the purge included.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from app.storage.audit import AuditEvent, audit_event
from app.storage.base import StorageBackend
from app.storage.errors import LegalHoldActive, StorageUnavailable
from app.storage.names import validate_engagement_id
from app.storage.records import EvidenceRecord, Tombstone, utc_timestamp, validate_reason
from app.storage.walk import all_events, all_records

PLANNED = "planned"
COMPLETED = "completed"
FLUSH_SECONDS = 120.0
CERTIFICATE_KIND = "kmflow engagement purge certificate"


@dataclass
class PlannedRecord:
    """What the certificate says of one record, as the plan wrote it to the audit trail."""

    id: str
    content_hash: str
    size_bytes: int
    stored_at: str
    withdrawn: bool

    @classmethod
    def of(cls, record: EvidenceRecord) -> PlannedRecord:
        return cls(
            record.id,
            record.content_hash,
            record.size_bytes,
            record.stored_at,
            isinstance(record, Tombstone),
        )

    def detail(self) -> dict[str, Any]:
        return {
            "content_hash": self.content_hash,
            "size_bytes": self.size_bytes,
            "stored_at": self.stored_at,
            "withdrawn": self.withdrawn,
        }

    @classmethod
    def from_event(cls, event: AuditEvent) -> PlannedRecord:
        detail = json.loads(event.detail or "{}")
        return cls(
            str(event.evidence_id),
            str(detail["content_hash"]),
            int(detail["size_bytes"]),
            str(detail["stored_at"]),
            bool(detail.get("withdrawn", False)),
        )


@dataclass
class PurgePlan:
    engagement_id: str
    records: list[EvidenceRecord]  # still in the backend
    earlier: dict[str, PlannedRecord]  # planned by an interrupted run
    started_at: str | None  # when the plan was first written (None: not yet)

    @property
    def planned(self) -> dict[str, PlannedRecord]:
        """Everything this purge removes: the earlier plan and what is found now."""
        found = {record.id: PlannedRecord.of(record) for record in self.records}
        return self.earlier | found

    def describe(self) -> str:
        planned = self.planned
        size = sum(entry.size_bytes for entry in planned.values())
        lines = [
            f"purge of {self.engagement_id}: {len(planned)} record(s), {size} bytes "
            f"({len(self.records)} still stored, {len(self.earlier)} planned by an earlier "
            "run)"
        ]
        lines += [
            f"  {entry.id}  sha256 {entry.content_hash}  {entry.size_bytes} bytes"
            + ("  (withdrawn)" if entry.withdrawn else "")
            for entry in sorted(planned.values(), key=lambda entry: entry.stored_at)
        ]
        return "\n".join(lines)


@dataclass
class PurgeOutcome:
    certificate: dict[str, Any]
    text: str = field(init=False)

    def __post_init__(self) -> None:
        self.text = json.dumps(self.certificate, indent=2, sort_keys=True)


def plan_purge(backend: StorageBackend, engagement_id: str) -> PurgePlan:
    """What a purge of the engagement would remove; changes nothing."""
    validate_engagement_id(engagement_id)
    records = list(all_records(backend, engagement_id, include_withdrawn=True))
    earlier: dict[str, PlannedRecord] = {}
    started_at: str | None = None
    for event in all_events(backend, engagement_id):
        if event.action != "purge":
            continue
        if event.outcome == COMPLETED:
            earlier, started_at = {}, None  # that purge is done; plans after it are new
        elif event.outcome == PLANNED and event.evidence_id is not None:
            earlier[event.evidence_id] = PlannedRecord.from_event(event)
            started_at = started_at or event.occurred_at
    return PurgePlan(engagement_id, records, earlier, started_at)


def purge(
    backend: StorageBackend,
    engagement_id: str,
    reason: str,
    principal: str,
    *,
    workers: int = 8,
    note: Callable[[str], None] = lambda message: None,
) -> PurgeOutcome:
    """Carry out the purge (see the module docstring); returns the certificate."""
    validate_engagement_id(engagement_id)
    validate_reason(reason)
    _refuse_if_held(backend, engagement_id)
    plan = plan_purge(backend, engagement_id)
    plan.started_at = plan.started_at or utc_timestamp()
    new = [record for record in plan.records if record.id not in plan.earlier]
    for record in new:
        backend.audit.record(
            audit_event(
                principal,
                "purge",
                engagement_id,
                evidence_id=record.id,
                outcome=PLANNED,
                detail=PlannedRecord.of(record).detail(),
            )
        )
    if not backend.audit.flush(FLUSH_SECONDS):
        raise StorageUnavailable(
            f"the purge's plan could not be written to the audit trail "
            f"({backend.audit.last_error}); nothing was removed"
        )
    planned = plan.planned
    note(f"planned {len(planned)} record(s) ({len(new)} new); removing their files")
    _refuse_if_held(backend, engagement_id)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(backend.remove_file, plan.records))
    strays = list(backend.sweep_engagement(engagement_id))
    note(f"files removed; {len(strays)} stray file(s) swept; deleting rows")
    deleted = backend.delete_engagement_rows(engagement_id)
    note("rows deleted; expunging them from the tables' files")
    expunged = backend.expunge()
    left = sum(1 for _ in all_records(backend, engagement_id, include_withdrawn=True))
    files_left = len(backend.sweep_engagement(engagement_id))
    if left or files_left:
        raise StorageUnavailable(
            f"after the purge {left} record(s) and {files_left} file(s) of {engagement_id} "
            "were still there (uploads during the purge?); run the purge again"
        )
    certificate = _certificate(backend, plan, planned, reason, principal, strays, deleted, expunged)
    digest = hashlib.sha256(_canonical(certificate)).hexdigest()
    backend.audit.record_durably(
        audit_event(
            principal,
            "purge",
            engagement_id,
            outcome=COMPLETED,
            detail={
                "reason": reason,
                "records": len(planned),
                "bytes": certificate["bytes"],
                "certificate_sha256": digest,
            },
        ),
        FLUSH_SECONDS,
    )
    certificate["certificate_sha256"] = digest
    return PurgeOutcome(certificate)


def _certificate(
    backend: StorageBackend,
    plan: PurgePlan,
    planned: dict[str, PlannedRecord],
    reason: str,
    principal: str,
    strays: list[str],
    deleted: dict[str, object],
    expunged: dict[str, object],
) -> dict[str, Any]:
    entries = sorted(planned.values(), key=lambda entry: (entry.stored_at, entry.id))
    return {
        "certificate": CERTIFICATE_KIND,
        "engagement_id": plan.engagement_id,
        "backend": backend.name,
        "store": backend.store_location,
        "reason": reason,
        "principal": principal,
        "started_at": plan.started_at,
        "completed_at": utc_timestamp(),
        "records": len(entries),
        "withdrawn_before_purge": sum(entry.withdrawn for entry in entries),
        "bytes": sum(entry.size_bytes for entry in entries),
        "resumed": bool(plan.earlier),
        "evidence": [
            {
                "id": entry.id,
                "content_hash": entry.content_hash,
                "size_bytes": entry.size_bytes,
                "stored_at": entry.stored_at,
            }
            for entry in entries
        ],
        "stray_files_removed": strays,
        "rows_deleted": deleted,
        "tables_expunged": expunged,
        "verified": {"records_left": 0, "files_left": 0},
        "audit_trail": "kept: its events name ids and principals only",
    }


def _canonical(certificate: dict[str, Any]) -> bytes:
    """The certificate as its digest is computed: sorted keys, no whitespace."""
    return json.dumps(certificate, sort_keys=True, separators=(",", ":")).encode()


def certificate_digest(certificate: dict[str, Any]) -> str:
    """The digest a certificate's `certificate_sha256` and its audit event must show."""
    body = {name: value for name, value in certificate.items() if name != "certificate_sha256"}
    return hashlib.sha256(_canonical(body)).hexdigest()


def _refuse_if_held(backend: StorageBackend, engagement_id: str) -> None:
    held = backend.hold(engagement_id)
    if held is not None:
        raise LegalHoldActive(
            f"engagement {engagement_id} is under legal hold (placed {held.held_at} by "
            f"{held.held_by}: {held.reason}); release it before purging"
        )
