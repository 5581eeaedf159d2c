"""The one storage contract every backend implements, and the record it stores.

A backend implements the protected hooks (`_commit`, `_get`, `_list`, `_open`, `check`); the
public methods validate client input once, so no backend can forget path safety. A write is
two steps so the HTTP layer can stream a body of unknown field order straight to disk:
`stage()` gives a local file that hashes while it is written, `commit()` makes it durable and
findable. `write()` derives the one-call form from those two.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, Self

from pydantic import BaseModel, Field

from app.storage.digest import Readable
from app.storage.errors import EvidenceNotFound, InvalidInput
from app.storage.names import (
    clean_file_name,
    is_evidence_id,
    new_evidence_id,
    validate_engagement_id,
)
from app.storage.pagination import MAX_PAGE_SIZE, is_stored_at
from app.storage.staging import StagedFile, StagingArea

if TYPE_CHECKING:
    from app.config import Settings

COPY_CHUNK_BYTES = 1024 * 1024


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


class RecordPage(BaseModel):
    items: list[EvidenceRecord]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class BackendHealth(BaseModel):
    reachable: bool
    details: dict[str, Any] = Field(default_factory=dict)


def utc_timestamp(moment: datetime | None = None) -> str:
    """Fixed-width ISO-8601 UTC (default: now), so text order is time order in every store."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_metadata(metadata: Mapping[str, Any] | None) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise InvalidInput("metadata must be a JSON object")
    return json.dumps(dict(metadata), ensure_ascii=False, separators=(",", ":"))


class StorageBackend(ABC):
    """Where evidence bytes and their records live. See the module docstring."""

    name: ClassVar[str]

    def __init__(self, staging_root: Path) -> None:
        self._staging = StagingArea(staging_root)

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Build the backend from `Settings`; raise `StorageMisconfigured` on bad targets."""

    # -- public API: validates, then calls the backend's hook ---------------------------------

    def stage(self) -> StagedFile:
        """A fresh local file to stream an upload into; discard it if the upload fails."""
        return self._staging.new_file()

    def commit(
        self,
        staged: StagedFile,
        engagement_id: str,
        file_name: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> EvidenceRecord:
        """Store the staged bytes for good and index them; the staged file is consumed.

        On return the bytes are durable and the record is findable. On error nothing is
        stored and the staged file is discarded.
        """
        try:
            record = EvidenceRecord(
                id=new_evidence_id(),
                engagement_id=validate_engagement_id(engagement_id),
                file_name=clean_file_name(file_name),
                volume_path="",
                content_hash=staged.content_hash,
                size_bytes=staged.size,
                stored_at=utc_timestamp(),
                metadata_json=encode_metadata(metadata),
            )
            staged.seal()
            return self._commit(staged, record)
        finally:
            staged.discard()

    def restore(self, record: EvidenceRecord, stream: Readable) -> EvidenceRecord:
        """Store a record copied from another backend as it was: same id, time, name and
        metadata (migrations). The bytes must hash to the record's `content_hash`."""
        validate_engagement_id(record.engagement_id)
        if clean_file_name(record.file_name) != record.file_name:
            raise InvalidInput(f"file name {record.file_name!r} is not one kmflow stores")
        if not is_evidence_id(record.id):
            raise InvalidInput(f"evidence id {record.id!r} is not 32 hex characters")
        if not is_stored_at(record.stored_at):
            raise InvalidInput(f"stored_at {record.stored_at!r} is not a kmflow UTC timestamp")
        try:
            encode_metadata(json.loads(record.metadata_json) if record.metadata_json else None)
        except ValueError as error:
            raise InvalidInput(f"metadata of {record.id} is not a JSON object: {error}") from None
        staged = self.stage()
        try:
            while chunk := stream.read(COPY_CHUNK_BYTES):
                staged.write(chunk)
            if (staged.content_hash, staged.size) != (record.content_hash, record.size_bytes):
                raise InvalidInput(
                    f"the bytes of {record.id} do not match its record: sha256 "
                    f"{staged.content_hash} ({staged.size} bytes), recorded "
                    f"{record.content_hash} ({record.size_bytes} bytes)"
                )
            staged.seal()
            return self._commit(staged, record.model_copy(update={"volume_path": ""}))
        finally:
            staged.discard()

    def write(
        self,
        engagement_id: str,
        file_name: str,
        stream: Readable,
        metadata: Mapping[str, Any] | None = None,
    ) -> EvidenceRecord:
        """Store a whole stream in one call (migrations, scripts); same guarantees as commit."""
        validate_engagement_id(engagement_id)
        clean_file_name(file_name)
        staged = self.stage()
        try:
            while chunk := stream.read(COPY_CHUNK_BYTES):
                staged.write(chunk)
        except BaseException:
            staged.discard()
            raise
        return self.commit(staged, engagement_id, file_name, metadata)

    def get(self, engagement_id: str, evidence_id: str) -> EvidenceRecord:
        validate_engagement_id(engagement_id)
        record = self._get(engagement_id, evidence_id) if is_evidence_id(evidence_id) else None
        if record is None:
            raise EvidenceNotFound(f"no evidence {evidence_id!r} in engagement {engagement_id!r}")
        return record

    def list(
        self, engagement_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> RecordPage:
        """Newest first (`stored_at`, then `id`, both descending): stable under inserts."""
        validate_engagement_id(engagement_id)
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        return self._list(engagement_id, limit, cursor)

    def open(self, record: EvidenceRecord) -> BinaryIO:
        """The stored bytes as a readable stream; the caller closes it."""
        return self._open(record)

    def engagements(self) -> Sequence[str]:
        """Every engagement with evidence, sorted (migrations walk them)."""
        return sorted(set(self._engagements()))

    def bulk(self) -> AbstractContextManager[None]:
        """Wrap many writes in a row; a backend may batch their indexing until the end."""
        return nullcontext()

    def startup(self) -> None:
        """Called once when the service starts: clears leftovers of interrupted writes."""
        self._staging.sweep_stale()

    def close(self) -> None:
        self._staging.close()

    # -- hooks each backend implements --------------------------------------------------------

    @abstractmethod
    def _commit(self, staged: StagedFile, record: EvidenceRecord) -> EvidenceRecord:
        """Make the sealed staged bytes durable and the record findable.

        Every field of `record` is final except `volume_path`, which the backend fills in.
        """

    @abstractmethod
    def _engagements(self) -> Iterable[str]: ...

    @abstractmethod
    def _get(self, engagement_id: str, evidence_id: str) -> EvidenceRecord | None: ...

    @abstractmethod
    def _list(self, engagement_id: str, limit: int, cursor: str | None) -> RecordPage: ...

    @abstractmethod
    def _open(self, record: EvidenceRecord) -> BinaryIO: ...

    @abstractmethod
    def check(self) -> BackendHealth:
        """Whether the backend can serve requests now; must not raise."""
