"""Evidence on the local filesystem with an embedded SQLite index; the default backend.

Layout: `<LOCAL_STORAGE_PATH>/<engagement_id>/<id>_<slug>` holds exactly the evidence files
(so the runbook's `find ./evidence_store -type f` inventory is exact) and the store's identity
link; the index and in-flight uploads live under `STATE_PATH`, which must be on the same
filesystem so a commit is a rename. The index knows its store (`store_identity`).

A commit: fsync the staged file, record a write intent (the contract's crash protocol), link
into place, fsync the directory, then insert the record.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from app.storage.audit import AuditEvent, AuditPage
from app.storage.base import StorageBackend
from app.storage.errors import EvidenceExists, StorageMisconfigured, StorageUnavailable
from app.storage.fsync import (
    SharedDirectorySync,
    fsync_directory,
    link_into_place,
    remove_tree,
)
from app.storage.health import Facts, Probe, free_disk
from app.storage.holds import Hold
from app.storage.local import store_identity
from app.storage.local.index import SqliteIndex
from app.storage.names import stored_file_name
from app.storage.records import EvidenceRecord, RecordPage, Tombstone
from app.storage.staging import StagedFile

if TYPE_CHECKING:
    from app.settings import Settings

logger = logging.getLogger(__name__)


class LocalBackend(StorageBackend):
    name = "local"

    def __init__(self, store_path: Path, state_path: Path) -> None:
        self.store = store_path.resolve()
        state = state_path.resolve()
        if state.is_relative_to(self.store) or self.store.is_relative_to(state):
            raise StorageMisconfigured(
                f"STATE_PATH ({state}) and LOCAL_STORAGE_PATH ({self.store}) must not contain "
                "each other: the store holds evidence files only"
            )
        # Before anything is created: a foreign index changes nothing on disk.
        self._identity = store_identity.check(self.store, state)
        self.store.mkdir(parents=True, exist_ok=True)
        super().__init__(staging_root=state / "staging")
        if os.stat(self.store).st_dev != os.stat(self._staging.root).st_dev:
            self._staging.close()
            raise StorageMisconfigured(
                f"STATE_PATH ({state}) must be on the same filesystem as "
                f"LOCAL_STORAGE_PATH ({self.store}) so that writes are atomic renames"
            )
        self.index = SqliteIndex(state / store_identity.INDEX_FILE)
        self._directory_sync = SharedDirectorySync()

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBackend:
        return cls(settings.local_storage_path, settings.state_path)

    @classmethod
    def preflight(cls, settings: Settings) -> None:
        store_identity.check(settings.local_storage_path.resolve(), settings.state_path.resolve())

    def startup(self) -> None:
        """Binds store and index first: the cleanup below removes files from the store."""
        marker = store_identity.mark(self.store, self._identity)
        bound = self.index.bind(marker, str(self.store))
        if bound.identity != marker:  # another process bound the index in between
            raise store_identity.ForeignIndex(
                f"the index at {self.index.db.path.parent} belongs to the store at "
                f"{bound.store_path}, not to {self.store}"
            )
        super().startup()

    def _close_parts(self) -> None:
        self.index.close()

    def _commit(self, staged: StagedFile, record: EvidenceRecord) -> EvidenceRecord:
        relative = f"{record.engagement_id}/{stored_file_name(record.id, record.file_name)}"
        record = record.model_copy(update={"volume_path": relative})
        target = self.store / relative
        directory = target.parent
        if not directory.is_dir():
            directory.mkdir(exist_ok=True)
            fsync_directory(self.store)
        with self._write_intent(record) as steps:
            link_into_place(staged.path, target)  # never over an existing file
            steps.placed = True
            self._directory_sync.sync(directory)
            try:
                self.index.insert(record)
            except sqlite3.IntegrityError:
                raise EvidenceExists(f"record {record.id} is already stored") from None
            steps.indexed = True
        return record

    def _index(self, record: EvidenceRecord) -> None:
        try:
            self.index.insert(record)
        except sqlite3.IntegrityError:
            raise EvidenceExists(f"record {record.id} is already stored") from None

    def _remove(self, path: str) -> None:
        target = self._file_at(path)
        if target.exists():
            target.unlink(missing_ok=True)
            fsync_directory(target.parent)  # a withdrawal is durable when it answers

    def _engagements(self) -> list[str]:
        return self.index.engagements()

    def _get(self, engagement_id: str, evidence_id: str) -> EvidenceRecord | None:
        return self.index.get(engagement_id, evidence_id)

    def _list(
        self,
        engagement_id: str,
        limit: int,
        cursor: str | None,
        content_hash: str | None,
        include_withdrawn: bool,
    ) -> RecordPage:
        return self.index.page(engagement_id, limit, cursor, content_hash, include_withdrawn)

    def _open(self, record: EvidenceRecord) -> BinaryIO:
        try:
            return self._file_of(record).open("rb")
        except FileNotFoundError as error:
            raise StorageUnavailable(f"the file of record {record.id} is missing") from error

    def _put_back(self, staged: StagedFile, record: EvidenceRecord) -> None:
        target = self._file_of(record)
        if not target.parent.is_dir():
            target.parent.mkdir()
            fsync_directory(self.store)
        link_into_place(staged.path, target)
        self._directory_sync.sync(target.parent)

    # -- the evidence lifecycle: all in the index's database -----------------------------------

    def _record_withdrawal(self, tombstone: Tombstone) -> None:
        self.index.record_withdrawal(tombstone)

    def _hold(self, engagement_id: str) -> Hold | None:
        return self.index.hold(engagement_id)

    def _place_hold(self, hold: Hold) -> None:
        self.index.place_hold(hold)

    def _release_hold(self, engagement_id: str) -> None:
        self.index.release_hold(engagement_id)

    def _audit_store(self) -> SqliteAuditStore:
        return SqliteAuditStore(self.index)

    def _delete_engagement_rows(self, engagement_id: str) -> dict[str, object]:
        deleted = self.index.delete_engagement(engagement_id)
        return {table: {"rows_deleted": count} for table, count in deleted.items()}

    def _expunge(self) -> dict[str, object]:
        self.index.expunge()
        return {"index": "free pages and write-ahead log overwritten (VACUUM)"}

    def _sweep_engagement(self, engagement_id: str) -> list[str]:
        return remove_tree(self.store / engagement_id, self.store)

    def _stored_size(self, record: EvidenceRecord) -> int | None:
        try:
            return self._file_of(record).stat().st_size
        except FileNotFoundError:
            return None

    def _file_of(self, record: EvidenceRecord) -> Path:
        return self._file_at(record.volume_path)

    def _file_at(self, volume_path: str) -> Path:
        path = (self.store / volume_path).resolve()
        if not path.is_relative_to(self.store):
            raise StorageMisconfigured(f"{volume_path!r} points outside the store")
        return path

    @property
    def store_location(self) -> str:
        return str(self.store)

    def probes(self) -> list[Probe]:
        def index_readable(facts: Facts) -> str:
            self.index.ping()
            return "SQLite index answers"

        def store_writable(facts: Facts) -> str:
            for directory in (self.store, self._staging.root):
                if not os.access(directory, os.W_OK):
                    raise StorageMisconfigured(f"{directory} is not writable")
            return "store and staging writable"

        return [
            Probe("index readable", index_readable),
            Probe("store writable", store_writable),
            Probe("free disk", lambda facts: free_disk(self.store), essential=False),
        ]


class SqliteAuditStore:
    """The local backend's audit trail: `evidence_audit` in the index's database."""

    def __init__(self, index: SqliteIndex) -> None:
        self._index = index

    def append(self, events: Sequence[AuditEvent]) -> None:
        self._index.append_audit(events)

    def page(self, engagement_id: str, limit: int, cursor: str | None) -> AuditPage:
        return self._index.audit_page(engagement_id, limit, cursor)

    def engagements(self) -> Iterable[str]:
        return self._index.audit_engagements()
