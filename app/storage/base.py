"""The one storage contract every backend implements (its record: `records`; its health
reports: `health`; client metadata as text: `metadata_json`).

A backend implements the protected hooks (`_commit`, `_remove`, `_put_back`, `_stored_size`,
`_engagements`, `_get`, `_list`, `_open`, `probes`); the public methods validate client input
once, so no backend can forget path safety. A write is two steps so the HTTP layer can stream a
body of unknown field order straight to disk: `stage()` gives a local file that hashes while it
is written, `commit()` makes it durable and findable. `write()` derives the one-call form from
those two. Longer than most modules because it is the whole contract, one class: a backend
author reads this file and nothing else of the shared code.
"""

from __future__ import annotations

import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, Self

from app.observability.metrics import observed
from app.sizes import CHUNK_BYTES
from app.storage.digest import Readable
from app.storage.errors import (
    DigestMismatch,
    EvidenceNotFound,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    InvalidInput,
    StorageUnavailable,
)
from app.storage.health import BackendHealth, Probe
from app.storage.idempotency import IdempotencyKeys, KeyBinding, KeyClaims, validate_key
from app.storage.metadata_json import decode_metadata, encode_metadata
from app.storage.names import (
    SHA256_HEX_PATTERN,
    clean_file_name,
    is_evidence_id,
    new_evidence_id,
    validate_engagement_id,
)
from app.storage.pagination import MAX_PAGE_SIZE
from app.storage.records import (
    MAX_EARLIER_COPIES,
    EvidenceRecord,
    RecordPage,
    UploadOutcome,
    earlier_copies,
    is_stored_at,
    utc_timestamp,
)
from app.storage.staging import StagedFile, StagingArea
from app.storage.write_intents import INTENTS_DIRECTORY, CommitSteps, WriteIntents

if TYPE_CHECKING:
    from app.settings import Settings

logger = logging.getLogger(__name__)

SHA256_HEX = re.compile(SHA256_HEX_PATTERN)
KEY_WAIT_SECONDS = 30.0  # how long a retry waits for the first attempt's record
# Errors caused by what the client sent, not by the backend: not counted as backend errors.
CLIENTS_FAULT = (
    InvalidInput,
    EvidenceNotFound,
    DigestMismatch,
    IdempotencyKeyReused,
    IdempotencyKeyInProgress,
)


class StorageBackend(ABC):
    """Where evidence bytes and their records live. See the module docstring."""

    name: ClassVar[str]
    # Request threads the API should allow (None: the API's default, 40). A backend whose
    # uploads wait on a remote service for a second or so sets more, or those waits would
    # cap how many uploads are in flight.
    request_threads: ClassVar[int | None] = None
    # True: the backend settles interrupted writes itself, off the startup path (a remote store
    # may not answer at startup, and startup must not wait for the SDK's retries).
    settles_in_background: ClassVar[bool] = False

    def __init__(self, staging_root: Path, key_claims: KeyClaims | None = None) -> None:
        """`key_claims`: where Idempotency-Keys are claimed; by default a table on this
        machine, which is right only while one machine serves the deployment."""
        self._staging = StagingArea(staging_root)
        self._intents = WriteIntents(
            staging_root.parent / INTENTS_DIRECTORY, staging_root, self._staging.owner
        )
        self.idempotency_keys: KeyClaims = key_claims or IdempotencyKeys(
            staging_root.parent / "idempotency.sqlite3", staging_root
        )

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Build the backend from `Settings`; raise `StorageMisconfigured` on bad targets."""

    @classmethod  # noqa: B027 (an optional hook: most backends have nothing to check)
    def preflight(cls, settings: Settings) -> None:
        """Refuse settings that cannot work, before the server starts and without changing
        anything (raises `StorageMisconfigured`); the constructor checks the same again."""

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
        *,
        evidence_id: str | None = None,
    ) -> EvidenceRecord:
        """Store the staged bytes for good and index them; the staged file is consumed.

        On return the bytes are durable and the record is findable. On error nothing is
        stored and the staged file is discarded.
        """
        try:
            record = EvidenceRecord(
                id=evidence_id or new_evidence_id(),
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

    def upload(
        self,
        staged: StagedFile,
        engagement_id: str,
        file_name: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_sha256: str | None = None,
        idempotency_key: str | None = None,
    ) -> UploadOutcome:
        """`commit` for a client's upload: refuses bytes that do not match the client's digest,
        stores at most one record per Idempotency-Key, and names earlier copies of the same
        bytes. The staged file is consumed."""
        with observed(self.name, "upload", CLIENTS_FAULT):
            return self._store_upload(
                staged, engagement_id, file_name, metadata, expected_sha256, idempotency_key
            )

    def _store_upload(
        self,
        staged: StagedFile,
        engagement_id: str,
        file_name: str,
        metadata: Mapping[str, Any] | None,
        expected_sha256: str | None,
        idempotency_key: str | None,
    ) -> UploadOutcome:
        try:
            validate_engagement_id(engagement_id)
            clean_file_name(file_name)
            if expected_sha256 is not None and expected_sha256 != staged.content_hash:
                raise DigestMismatch(
                    f"the file received has sha-256 {staged.content_hash} but the client sent "
                    f"{expected_sha256}; nothing was stored"
                )
            if idempotency_key is None:
                record = self.commit(staged, engagement_id, file_name, metadata)
                replayed = False
            else:
                record, replayed = self._commit_once(
                    staged, validate_key(idempotency_key), engagement_id, file_name, metadata
                )
        finally:
            staged.discard()
        return UploadOutcome(
            record=record, replayed=replayed, duplicate_of=self._earlier_copies(record)
        )

    def _commit_once(
        self,
        staged: StagedFile,
        key: str,
        engagement_id: str,
        file_name: str,
        metadata: Mapping[str, Any] | None,
    ) -> tuple[EvidenceRecord, bool]:
        """Commit under `key` unless it already names a record: (record, replayed)."""
        wanted = KeyBinding(
            engagement_id, staged.content_hash, new_evidence_id(), self._staging.owner
        )
        deadline = time.monotonic() + KEY_WAIT_SECONDS
        while True:
            binding = self.idempotency_keys.claim(key, wanted)
            if binding == wanted:
                try:
                    stored = self.commit(
                        staged, engagement_id, file_name, metadata, evidence_id=wanted.evidence_id
                    )
                except BaseException:
                    self.idempotency_keys.release(key, wanted.evidence_id)
                    raise
                return stored, False
            if not binding.matches(engagement_id, staged.content_hash):
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was already used for other content or another "
                    "engagement; send a new key for a new upload"
                )
            first = self._get(binding.engagement_id, binding.evidence_id)
            if first is not None:
                return first, True
            if self.idempotency_keys.is_abandoned(binding):
                self.idempotency_keys.release(key, binding.evidence_id)  # died before storing
                continue
            if time.monotonic() >= deadline:
                raise IdempotencyKeyInProgress(
                    "an upload with this Idempotency-Key is still being stored; retry shortly"
                )
            time.sleep(self.idempotency_keys.poll_seconds)

    def _earlier_copies(self, record: EvidenceRecord) -> list[str] | None:
        try:
            page = self._list(
                record.engagement_id, MAX_EARLIER_COPIES + 1, None, record.content_hash
            )
        except StorageUnavailable:
            return None  # the record is stored; only this courtesy lookup failed
        return earlier_copies(record, [(other.stored_at, other.id) for other in page.items])

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
            if record.metadata_json:
                decode_metadata(record.metadata_json)
        except InvalidInput as error:
            raise InvalidInput(f"metadata of {record.id}: {error}") from None
        staged = self._stage_record_bytes(record, stream)
        try:
            return self._commit(staged, record.model_copy(update={"volume_path": ""}))
        finally:
            staged.discard()

    def put_back(self, record: EvidenceRecord, stream: Readable) -> None:
        """Store again the bytes of a record this backend lists but whose file is gone (removed
        behind its back): a migration's repair. Never replaces a file that is there."""
        staged = self._stage_record_bytes(record, stream)
        try:
            self._put_back(staged, record)
        finally:
            staged.discard()

    def stored_sizes(self, records: Sequence[EvidenceRecord]) -> dict[str, int | None]:
        """The size of each record's file as the store holds it now, by id (None: missing):
        what "the target holds it" means to a migration, checked rather than assumed."""
        with observed(self.name, "stat", CLIENTS_FAULT):
            return {record.id: self._stored_size(record) for record in records}

    def _stage_record_bytes(self, record: EvidenceRecord, stream: Readable) -> StagedFile:
        """The stream staged and sealed, refused unless it hashes to the record."""
        staged = self.stage()
        try:
            while chunk := stream.read(CHUNK_BYTES):
                staged.write(chunk)
            if (staged.content_hash, staged.size) != (record.content_hash, record.size_bytes):
                raise InvalidInput(
                    f"the bytes of {record.id} do not match its record: sha256 "
                    f"{staged.content_hash} ({staged.size} bytes), recorded "
                    f"{record.content_hash} ({record.size_bytes} bytes)"
                )
            staged.seal()
        except BaseException:
            staged.discard()
            raise
        return staged

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
            while chunk := stream.read(CHUNK_BYTES):
                staged.write(chunk)
        except BaseException:
            staged.discard()
            raise
        return self.commit(staged, engagement_id, file_name, metadata)

    def get(self, engagement_id: str, evidence_id: str) -> EvidenceRecord:
        validate_engagement_id(engagement_id)
        with observed(self.name, "get", CLIENTS_FAULT):
            record = self._get(engagement_id, evidence_id) if is_evidence_id(evidence_id) else None
        if record is None:
            raise EvidenceNotFound(f"no evidence {evidence_id!r} in engagement {engagement_id!r}")
        return record

    def list(
        self,
        engagement_id: str,
        *,
        limit: int = 100,
        cursor: str | None = None,
        content_hash: str | None = None,
    ) -> RecordPage:
        """Newest first (`stored_at`, then `id`, both descending): stable under inserts.
        With `content_hash`, only the records of those exact bytes."""
        validate_engagement_id(engagement_id)
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        if content_hash is not None and not SHA256_HEX.fullmatch(content_hash):
            raise InvalidInput("content_hash must be a SHA-256 in 64 lowercase hex digits")
        with observed(self.name, "list", CLIENTS_FAULT):
            return self._list(engagement_id, limit, cursor, content_hash)

    def open(self, record: EvidenceRecord, start: int = 0) -> BinaryIO:
        """The stored bytes from offset `start` as a readable stream; the caller closes it.
        A backend's stream that cannot seek is read past `start` (bounded memory)."""
        with observed(self.name, "open", CLIENTS_FAULT):
            stream = self._open(record)
        if start:
            try:
                _skip(stream, start)
            except BaseException:
                stream.close()
                raise
        return stream

    def engagements(self) -> Sequence[str]:
        """Every engagement with evidence, sorted (migrations walk them)."""
        return sorted(set(self._engagements()))

    def bulk(self) -> AbstractContextManager[None]:
        """Wrap many writes in a row; a backend may batch their indexing until the end."""
        return nullcontext()

    def startup(self) -> None:
        """Called once when the service starts: clears leftovers of interrupted writes."""
        self._staging.sweep_stale()
        if not self.settles_in_background:
            self.settle_interrupted_writes()

    # -- the crash protocol (`write_intents`): every backend's `_commit` runs inside it -------

    def _write_intent(self, record: EvidenceRecord) -> AbstractContextManager[CommitSteps]:
        """Wrap placing `record`'s file at its `volume_path` and indexing it; the backend
        marks each step done on the `CommitSteps` it gets (see `WriteIntents.covering`)."""
        return self._intents.covering(record, self._remove)

    def retry_removals(self) -> None:
        """Try again to remove the files of this process's unacknowledged writes (a backend
        whose store can be briefly unreachable calls it from time to time)."""
        self._intents.retry_removals(self._remove)

    def settle_interrupted_writes(self) -> None:
        """Intents of dead processes: the file stays if its record is findable, else it goes."""
        self._intents.settle(self._get, self._remove)

    def close(self) -> None:
        self._intents.close()
        self.idempotency_keys.close()
        self._staging.close()

    # -- hooks each backend implements --------------------------------------------------------

    @abstractmethod
    def _commit(self, staged: StagedFile, record: EvidenceRecord) -> EvidenceRecord:
        """Make the sealed staged bytes durable and the record findable.

        Every field of `record` is final except `volume_path`, which the backend fills in;
        then it places the file and indexes the record inside `_write_intent(record)`.
        """

    @abstractmethod
    def _remove(self, path: str) -> None:
        """Remove the file at `path` (a `volume_path`) if it is there: a write that was never
        acknowledged. Raises `StorageError` if the store cannot be asked now."""

    @abstractmethod
    def _put_back(self, staged: StagedFile, record: EvidenceRecord) -> None:
        """Place the sealed staged bytes at `record.volume_path`, where no file is; durable on
        return. The record is already indexed."""

    @abstractmethod
    def _stored_size(self, record: EvidenceRecord) -> int | None:
        """Bytes of the record's file in the store, None if it is missing."""

    @abstractmethod
    def _engagements(self) -> Iterable[str]: ...

    @abstractmethod
    def _get(self, engagement_id: str, evidence_id: str) -> EvidenceRecord | None: ...

    @abstractmethod
    def _list(
        self, engagement_id: str, limit: int, cursor: str | None, content_hash: str | None
    ) -> RecordPage: ...

    @abstractmethod
    def _open(self, record: EvidenceRecord) -> BinaryIO: ...

    @property
    @abstractmethod
    def store_location(self) -> str:
        """Where the evidence lives, for operators (startup line, health detail); no secrets."""

    @abstractmethod
    def probes(self) -> Sequence[Probe]:
        """Each part of the backend as its own probe, essential or not: the one health hook.
        Cheap and bounded in time: load balancers call `check` every few seconds."""

    def check(self) -> BackendHealth:
        """Every probe at once, each on its own thread (a probe waiting on a timeout does not
        delay the others); never raises."""
        probes = list(self.probes())
        with ThreadPoolExecutor(max_workers=max(1, len(probes))) as pool:
            return BackendHealth(checks=list(pool.map(Probe.check, probes)))


def _skip(stream: BinaryIO, count: int) -> None:
    if stream.seekable():
        stream.seek(count)
        return
    while count > 0:
        chunk = stream.read(min(count, CHUNK_BYTES))
        if not chunk:
            raise StorageUnavailable("the stored file is shorter than its record says")
        count -= len(chunk)
