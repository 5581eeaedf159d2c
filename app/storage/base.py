"""The one storage contract every backend implements (its record: `records`; its health
reports: `health`; client metadata as text: `metadata_json`; the evidence lifecycle's
`holds` and `audit`).

A backend implements the protected hooks (`_commit`, `_index`, `_remove`, `_put_back`,
`_stored_size`, `_engagements`, `_get`, `_list`, `_open`, `probes`; for the lifecycle
`_record_withdrawal`, `_hold`, `_place_hold`, `_release_hold`, `_audit_store`,
`_delete_engagement_rows`, `_expunge`, `_sweep_engagement`); the public methods validate
client input once, so no backend can forget path safety. A write is two steps so the HTTP
layer can stream a body of unknown field order straight to disk: `stage()` gives a local file
that hashes while it is written, `commit()` makes it durable and findable. `write()` derives
the one-call form from those two. Longer than most modules because it is the whole contract,
one class: a backend author reads this file and nothing else of the shared code.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, Self

from app.observability.metrics import observed
from app.sizes import CHUNK_BYTES
from app.storage.audit import AuditStore
from app.storage.audit_trail import AuditTrail
from app.storage.digest import Readable
from app.storage.errors import (
    DigestMismatch,
    EvidenceNotFound,
    EvidenceWithdrawn,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    InvalidInput,
    LegalHoldActive,
    StorageUnavailable,
)
from app.storage.health import BackendHealth, Facts, Probe
from app.storage.holds import Hold
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
    Tombstone,
    UploadOutcome,
    earlier_copies,
    is_stored_at,
    utc_timestamp,
    validate_reason,
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
    EvidenceWithdrawn,
    LegalHoldActive,
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
    # Seconds between two appends of the audit trail (`audit_trail`), unless someone waits for
    # an event: each append is a transaction (an fsync, a Delta commit, a warehouse statement),
    # and appends as fast as they complete cost small uploads an eighth of their throughput.
    audit_pace_seconds: ClassVar[float] = 0.1

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
        self._audit: AuditTrail | None = None
        self._audit_lock = threading.Lock()

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
            if isinstance(first, Tombstone):
                raise EvidenceWithdrawn(
                    f"the upload this Idempotency-Key names ({first.id}) has been withdrawn",
                    first,
                )
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
                record.engagement_id, MAX_EARLIER_COPIES + 1, None, record.content_hash, False
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

    def get(
        self, engagement_id: str, evidence_id: str, *, include_withdrawn: bool = False
    ) -> EvidenceRecord:
        """The record; a withdrawn one raises `EvidenceWithdrawn` (carrying its tombstone)
        unless `include_withdrawn`, when the `Tombstone` itself is returned."""
        validate_engagement_id(engagement_id)
        with observed(self.name, "get", CLIENTS_FAULT):
            record = self._get(engagement_id, evidence_id) if is_evidence_id(evidence_id) else None
        if record is None:
            raise EvidenceNotFound(f"no evidence {evidence_id!r} in engagement {engagement_id!r}")
        if isinstance(record, Tombstone) and not include_withdrawn:
            raise EvidenceWithdrawn(
                f"evidence {evidence_id} was withdrawn at {record.withdrawn_at} by "
                f"{record.withdrawn_by}; its bytes are no longer stored",
                record,
            )
        return record

    def list(
        self,
        engagement_id: str,
        *,
        limit: int = 100,
        cursor: str | None = None,
        content_hash: str | None = None,
        include_withdrawn: bool = False,
    ) -> RecordPage:
        """Newest first (`stored_at`, then `id`, both descending): stable under inserts.
        With `content_hash`, only the records of those exact bytes; tombstones only with
        `include_withdrawn`."""
        validate_engagement_id(engagement_id)
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        if content_hash is not None and not SHA256_HEX.fullmatch(content_hash):
            raise InvalidInput("content_hash must be a SHA-256 in 64 lowercase hex digits")
        with observed(self.name, "list", CLIENTS_FAULT):
            return self._list(engagement_id, limit, cursor, content_hash, include_withdrawn)

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

    # -- the evidence lifecycle: withdrawals, legal holds, the audit trail, purges ------------

    @property
    def audit(self) -> AuditTrail:
        """This process's writer of the backend's audit trail (built on first use)."""
        with self._audit_lock:
            if self._audit is None:
                self._audit = AuditTrail(self._audit_store(), pace_seconds=self.audit_pace_seconds)
            return self._audit

    def withdraw(
        self, engagement_id: str, evidence_id: str, reason: str, principal: str
    ) -> Tombstone:
        """Remove a record's bytes for good and keep its record as a tombstone. Idempotent:
        withdrawing a tombstone returns it as first withdrawn (and removes its file again,
        which finishes a withdrawal interrupted between its two steps)."""
        validate_engagement_id(engagement_id)
        validate_reason(reason)
        with observed(self.name, "withdraw", CLIENTS_FAULT):
            self._refuse_if_held(engagement_id, "withdrawn")
            record = self._get(engagement_id, evidence_id) if is_evidence_id(evidence_id) else None
            if record is None:
                raise EvidenceNotFound(
                    f"no evidence {evidence_id!r} in engagement {engagement_id!r}"
                )
            if not isinstance(record, Tombstone):
                # The tombstone first: a crash before the file goes leaves a withdrawn record
                # whose file the next withdrawal removes, never a live record without bytes.
                record = Tombstone(
                    **record.model_dump(),
                    withdrawn_at=utc_timestamp(),
                    withdrawn_by=principal,
                    withdrawal_reason=reason,
                )
                self._record_withdrawal(record)
            self._remove(record.volume_path)
        return record

    def hold(self, engagement_id: str) -> Hold | None:
        """The engagement's legal hold, if one is in force."""
        validate_engagement_id(engagement_id)
        with observed(self.name, "hold", CLIENTS_FAULT):
            return self._hold(engagement_id)

    def place_hold(self, engagement_id: str, reason: str, principal: str) -> Hold:
        """Hold the engagement: nothing of it may be withdrawn or purged until released.
        Idempotent: an engagement already held keeps the hold first placed."""
        validate_engagement_id(engagement_id)
        validate_reason(reason)
        with observed(self.name, "hold", CLIENTS_FAULT):
            held = self._hold(engagement_id)
            if held is None:
                self._place_hold(Hold(
                    engagement_id=engagement_id,
                    held_at=utc_timestamp(),
                    held_by=principal,
                    reason=reason,
                ))  # fmt: skip
                held = self._hold(engagement_id)  # two placed at once: the one stored
            if held is None:
                raise StorageUnavailable("the hold was placed but cannot be read back")
            return held

    def restore_hold(self, hold: Hold) -> None:
        """A hold copied from another backend (migrations), as it was placed."""
        validate_engagement_id(hold.engagement_id)
        validate_reason(hold.reason)
        self._place_hold(hold)

    def release_hold(self, engagement_id: str) -> Hold | None:
        """Lift the engagement's hold; returns the hold lifted (None: there was none)."""
        validate_engagement_id(engagement_id)
        with observed(self.name, "hold", CLIENTS_FAULT):
            held = self._hold(engagement_id)
            if held is not None:
                self._release_hold(engagement_id)
            return held

    def _refuse_if_held(self, engagement_id: str, what: str) -> None:
        held = self._hold(engagement_id)
        if held is not None:
            raise LegalHoldActive(
                f"engagement {engagement_id} is under legal hold (placed {held.held_at} by "
                f"{held.held_by}): nothing of it may be {what} until the hold is released"
            )

    def restore_tombstone(self, tombstone: Tombstone) -> None:
        """A tombstone copied from another backend (migrations), as it was: a record this
        backend does not hold is indexed as withdrawn, one it holds live is withdrawn (its
        file removed), one it holds withdrawn is left as it is."""
        validate_engagement_id(tombstone.engagement_id)
        if not is_evidence_id(tombstone.id):
            raise InvalidInput(f"evidence id {tombstone.id!r} is not 32 hex characters")
        validate_reason(tombstone.withdrawal_reason)
        held = self._get(tombstone.engagement_id, tombstone.id)
        if isinstance(held, Tombstone):
            return
        # The withdrawal first, as in `withdraw`: never a live record without bytes.
        self._record_withdrawal(tombstone)
        if held is None:
            self._index(tombstone.record)
        else:
            self._remove(held.volume_path)

    def delete_engagement_rows(self, engagement_id: str) -> dict[str, object]:
        """A purge's step: delete every row (records, tombstones) of the engagement."""
        validate_engagement_id(engagement_id)
        self._refuse_if_held(engagement_id, "purged")
        with observed(self.name, "purge", CLIENTS_FAULT):
            return self._delete_engagement_rows(engagement_id)

    def expunge(self) -> dict[str, object]:
        """A purge's last step: make deleted rows unrecoverable (Delta: VACUUM, and no log
        entry older than it; SQLite: overwrite and VACUUM). Returns what it did, per table."""
        with observed(self.name, "purge", CLIENTS_FAULT):
            return self._expunge()

    def sweep_engagement(self, engagement_id: str) -> Sequence[str]:
        """A purge's step: remove every file left under the engagement's directory (strays
        of interrupted writes included) and the directory; returns the paths removed."""
        validate_engagement_id(engagement_id)
        self._refuse_if_held(engagement_id, "purged")
        with observed(self.name, "purge", CLIENTS_FAULT):
            return self._sweep_engagement(engagement_id)

    def remove_file(self, record: EvidenceRecord) -> None:
        """A purge's step: remove a record's file (if it is there) before its row goes (the
        purge checks the hold before its steps, not for each file)."""
        self._remove(record.volume_path)

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
        """The audit events first (they go to the backend's store), then the backend's own
        parts (`_close_parts`), then the shared machinery."""
        if self._audit is not None:
            self._audit.close()
        self._close_parts()
        self._intents.close()
        self.idempotency_keys.close()
        self._staging.close()

    def _close_parts(self) -> None:  # noqa: B027 (an optional hook)
        """Stop and close what the backend itself opened."""

    # -- hooks each backend implements --------------------------------------------------------

    @abstractmethod
    def _commit(self, staged: StagedFile, record: EvidenceRecord) -> EvidenceRecord:
        """Make the sealed staged bytes durable and the record findable.

        Every field of `record` is final except `volume_path`, which the backend fills in;
        then it places the file and indexes the record inside `_write_intent(record)`.
        """

    @abstractmethod
    def _index(self, record: EvidenceRecord) -> None:
        """Make `record` findable without placing a file (a tombstone copied by a migration:
        its withdrawal is already recorded)."""

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
    def _get(self, engagement_id: str, evidence_id: str) -> EvidenceRecord | None:
        """The record, as a `Tombstone` if it was withdrawn; None if there is none."""

    @abstractmethod
    def _list(
        self,
        engagement_id: str,
        limit: int,
        cursor: str | None,
        content_hash: str | None,
        include_withdrawn: bool,
    ) -> RecordPage:
        """A page as `list` describes it; tombstones (as `Tombstone`) only if asked for."""

    @abstractmethod
    def _open(self, record: EvidenceRecord) -> BinaryIO: ...

    @abstractmethod
    def _record_withdrawal(self, tombstone: Tombstone) -> None:
        """Store the tombstone's withdrawal durably, once per id however often it is asked
        (a retry, two withdrawals at once): from then on `_get` and `_list` return the
        record as a `Tombstone`, even if its row has not reached the table yet."""

    @abstractmethod
    def _hold(self, engagement_id: str) -> Hold | None: ...

    @abstractmethod
    def _place_hold(self, hold: Hold) -> None:
        """Store the hold unless the engagement is held already (the first hold stays)."""

    @abstractmethod
    def _release_hold(self, engagement_id: str) -> None: ...

    @abstractmethod
    def _audit_store(self) -> AuditStore:
        """Where this backend keeps its audit trail (built once, by `audit`)."""

    @abstractmethod
    def _delete_engagement_rows(self, engagement_id: str) -> dict[str, object]:
        """Delete the engagement's rows of the record and withdrawal tables (and anything
        else holding its records: rows on their way to the table); idempotent. Returns facts
        for the deletion certificate (table versions)."""

    @abstractmethod
    def _expunge(self) -> dict[str, object]:
        """Make the deleted rows unrecoverable from the store; returns facts per table."""

    @abstractmethod
    def _sweep_engagement(self, engagement_id: str) -> Sequence[str]: ...

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
        delay the others), the audit trail's own last; never raises."""
        probes = [*self.probes(), Probe("audit trail stored", self._audit_stored, essential=False)]
        with ThreadPoolExecutor(max_workers=max(1, len(probes))) as pool:
            return BackendHealth(checks=list(pool.map(Probe.check, probes)))

    def _audit_stored(self, facts: Facts) -> str:
        """Not essential: evidence is still stored while its events wait (`audit_trail`)."""
        waiting = self._audit.waiting if self._audit is not None else 0
        facts["audit_events_waiting"] = waiting
        error = self._audit.last_error if self._audit is not None else None
        if waiting and error:
            raise StorageUnavailable(f"{waiting} audit event(s) waiting; last error: {error}")
        return f"{waiting} audit event(s) on their way"


def _skip(stream: BinaryIO, count: int) -> None:
    if stream.seekable():
        stream.seek(count)
        return
    while count > 0:
        chunk = stream.read(min(count, CHUNK_BYTES))
        if not chunk:
            raise StorageUnavailable("the stored file is shorter than its record says")
        count -= len(chunk)
