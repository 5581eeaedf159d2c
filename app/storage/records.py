"""The record kmflow stores for each evidence file, and what the API returns about it.

Every backend stores exactly these fields (the columns of the runbook's `evidence_metadata`
table), so a record moves between backends unchanged. A withdrawn record is a `Tombstone`:
the same row, joined with its withdrawal (kept in a table of its own, `evidence_withdrawals`,
so the runbook's table keeps the runbook's columns).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, SerializeAsAny

from app.storage.errors import InvalidInput

MAX_EARLIER_COPIES = 10  # `duplicate_of` names at most this many, newest first


class EvidenceRecord(BaseModel):
    """One stored evidence file: the columns of the runbook's `evidence_metadata` table."""

    id: str = Field(description="Unique id of this stored copy (32 hex characters).")
    engagement_id: str
    file_name: str = Field(description="The client's file name, verbatim (never a path).")
    volume_path: str = Field(description="Where the bytes live in the backend's storage.")
    content_hash: str = Field(description="SHA-256 of the bytes, lowercase hex.")
    size_bytes: int
    stored_at: str = Field(description="When kmflow had all the bytes, ISO-8601 UTC.")
    metadata_json: str | None = Field(description="The client's metadata object as JSON.")


# The record's fields in order: the columns of every backend's metadata table.
RECORD_COLUMNS: tuple[str, ...] = tuple(EvidenceRecord.model_fields)

MAX_REASON_CHARS = 1000


class Tombstone(EvidenceRecord):
    """A withdrawn record: its bytes are gone from storage, its provenance (hash, size, name,
    times) stays, with who withdrew it, when and why."""

    withdrawn_at: str = Field(description="When the record was withdrawn, ISO-8601 UTC.")
    withdrawn_by: str = Field(description="The principal (API key name) who withdrew it.")
    withdrawal_reason: str = Field(description="Why, as the principal gave it.")

    @property
    def record(self) -> EvidenceRecord:
        """The row as stored in `evidence_metadata`."""
        return EvidenceRecord(**{name: getattr(self, name) for name in RECORD_COLUMNS})


# What a tombstone adds to its record; with the record's id and engagement, the columns of
# every backend's `evidence_withdrawals` table.
WITHDRAWN_FIELDS: tuple[str, ...] = ("withdrawn_at", "withdrawn_by", "withdrawal_reason")
WITHDRAWAL_COLUMNS: tuple[str, ...] = ("id", "engagement_id", *WITHDRAWN_FIELDS)


def record_from_columns(values: Mapping[str, Any]) -> EvidenceRecord:
    """A record from a row of `evidence_metadata` joined with its withdrawal, if any: the
    withdrawal's columns (WITHDRAWAL_COLUMNS) are null for a live record."""
    if values.get("withdrawn_at") is None:
        return EvidenceRecord(**{name: values[name] for name in RECORD_COLUMNS})
    return Tombstone(**{name: values[name] for name in (*RECORD_COLUMNS, *WITHDRAWN_FIELDS)})


def validate_reason(reason: str) -> str:
    """A reason a person gave (a withdrawal, a hold, a purge): kept verbatim, so bounded and
    free of control characters (it lands in tables, logs and certificates)."""
    if not reason.strip():
        raise InvalidInput("a reason is required")
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidInput(f"the reason is longer than {MAX_REASON_CHARS} characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in reason):
        raise InvalidInput("the reason may not contain control characters (newlines, tabs)")
    return reason


class RecordPage(BaseModel):
    # SerializeAsAny: a tombstone in a listing keeps its withdrawal fields.
    items: list[SerializeAsAny[EvidenceRecord]] = Field(
        description="Records; with `include_withdrawn`, tombstones too (they carry "
        "`withdrawn_at`, `withdrawn_by` and `withdrawal_reason`)."
    )
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class UploadOutcome(BaseModel):
    """What an upload did: the record, and what a client needs to know about it."""

    record: EvidenceRecord
    replayed: bool = Field(
        description="True when the Idempotency-Key named an earlier upload: this is its record "
        "and nothing new was stored."
    )
    duplicate_of: list[str] | None = Field(
        description="Earlier records of this engagement with the same bytes, newest first "
        f"(at most {MAX_EARLIER_COPIES}); null if they could not be looked up just now."
    )


def earlier_copies(record: EvidenceRecord, candidates: Iterable[tuple[str, str]]) -> list[str]:
    """`duplicate_of`: the ids among (stored_at, id) `candidates` (records with the same bytes
    in the same engagement) stored before `record`, newest first, at most MAX_EARLIER_COPIES."""
    key = (record.stored_at, record.id)
    earlier = sorted({other for other in candidates if other < key}, reverse=True)
    return [other_id for _, other_id in earlier[:MAX_EARLIER_COPIES]]


# What `utc_timestamp` writes, and so the only `stored_at` kmflow accepts back (a cursor, a
# migrated record).
STORED_AT_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z"
_STORED_AT = re.compile(STORED_AT_PATTERN)


def is_stored_at(value: str) -> bool:
    """True for a timestamp as `utc_timestamp()` writes it."""
    return _STORED_AT.fullmatch(value) is not None


def utc_timestamp(moment: datetime | None = None) -> str:
    """Fixed-width ISO-8601 UTC (default: now), so text order is time order in every store."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
