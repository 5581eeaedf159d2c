"""Evidence files plus an `evidence_metadata` Delta Lake table (delta-rs), locally or on S3.

Layout under `DELTA_BASE_PATH`: `evidence_store/<engagement_id>/<id>_<slug>` holds the files
and `evidence_metadata/` the table, whose columns are the Databricks table's, so rows move
between the two unchanged. A record's `volume_path` is its file's path relative to the base,
so a base can be copied or moved (to another disk, to S3) without rewriting a row.

A commit, inside the contract's write intent (`write_intents`): make the file durable under its
final name, then append the row to the table (shared with concurrent uploads by
`GroupCommit`). If the append certainly failed, the file is removed; if its outcome is unknown
(`CommitOutcomeUnknown`) the file stays and the next startup asks the table, removing the file
only if no row points at it. The table's own upkeep is `Maintenance`'s job.

Idempotency-Key claims live where the evidence does: on an object-store base, one object
per key beside the table (`ObjectStoreKeyClaims`), so every replica sharing the base claims
against the others; on a local base, in the SQLite table under STATE_PATH (one machine).

What a replica keeps on its own disk (STATE_PATH) on an object-store base: nothing that an
acknowledged upload needs. A `201` is sent only after the file's PUT completed and the table
version holding its row was committed on the store (`GroupCommit.submit` returns once its
batch is in the log); by then its staging file and its intent are gone. The staging
directory holds uploads in flight; an intent (in STATE_PATH/intents) outlives its commit only
when the outcome was unknown (a 503, never a 201), and serves only to remove, at the next
startup on the same STATE_PATH, a file that no row points at. A replica that loses its
STATE_PATH therefore loses no record: at worst such a file stays in `evidence_store/`
unlisted, and the keys it had claimed are taken over once their lease ends.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import deltalake  # noqa: F401  (the registry turns a missing package into an install hint)
from obstore.exceptions import BaseError as ObjectStoreError

from app.storage.base import StorageBackend
from app.storage.delta.files import EvidenceFiles, LocalFiles, ObjectStoreFiles
from app.storage.delta.lifecycle_tables import DeltaAuditStore, DeltaHolds, record_withdrawal
from app.storage.delta.location import FILES_PREFIX, TABLE_NAME, DeltaLocation
from app.storage.delta.log_table import sql_text
from app.storage.delta.maintenance import (
    LEASE_NAME,
    LEASE_SECONDS,
    Maintenance,
    MaintenancePolicy,
)
from app.storage.delta.object_store_key_claims import ObjectStoreKeyClaims
from app.storage.delta.table import EvidenceTable
from app.storage.errors import (
    StorageMisconfigured,
    StorageUnavailable,
)
from app.storage.group_commit import GroupCommit
from app.storage.health import Facts, Probe, free_disk
from app.storage.holds import Hold
from app.storage.names import stored_file_name
from app.storage.records import EvidenceRecord, RecordPage, Tombstone
from app.storage.staging import StagedFile

if TYPE_CHECKING:
    from app.settings import Settings

logger = logging.getLogger(__name__)


def open_evidence_table(settings: Settings) -> EvidenceTable:
    """The table alone, for the CLI's history and time-travel commands."""
    location = DeltaLocation.parse(settings.delta_base_path)
    return EvidenceTable(location, _files_for(location), settings.delta_log_retention_days)


class DeltaLakeBackend(StorageBackend):
    name = "delta"

    def __init__(
        self,
        location: DeltaLocation,
        staging_root: Path,
        policy: MaintenancePolicy | None = None,
        log_retention_days: int = 30,
        purge_log_grace_seconds: int = 300,
    ) -> None:
        files = _files_for(location)
        claims = (
            ObjectStoreKeyClaims(files.store, staging_root)
            if isinstance(files, ObjectStoreFiles)
            else None  # a local base: one machine, the SQLite table under STATE_PATH
        )
        super().__init__(staging_root, claims)
        self.location = location
        self.files = files
        self.table = EvidenceTable(location, self.files, log_retention_days)
        policy = policy or MaintenancePolicy()
        self.maintenance = Maintenance(self.table, policy, self.files.lease)
        self.holds = DeltaHolds(location, self.files)
        self.audit_store = DeltaAuditStore(
            location, self.files, policy, self.files.lease, log_retention_days
        )
        self._group = GroupCommit(self._append)
        self._purge_log_grace_seconds = purge_log_grace_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> DeltaLakeBackend:
        return cls(
            DeltaLocation.parse(settings.delta_base_path),
            settings.state_path.resolve() / "staging",
            MaintenancePolicy(settings.delta_compact_every, settings.delta_checkpoint_every),
            settings.delta_log_retention_days,
            settings.delta_purge_log_grace_seconds,
        )

    def startup(self) -> None:
        self.table.ensure_exists()
        self.holds.table.ensure_exists()
        self.audit_store.table.ensure_exists()
        self.table.warm_up()
        super().startup()

    def _close_parts(self) -> None:
        self.audit_store.close()
        self.maintenance.close()

    # -- the contract ------------------------------------------------------------------------

    def _commit(self, staged: StagedFile, record: EvidenceRecord) -> EvidenceRecord:
        name = stored_file_name(record.id, record.file_name)
        relative = f"{FILES_PREFIX}/{record.engagement_id}/{name}"
        record = record.model_copy(update={"volume_path": relative})
        with self._write_intent(record) as steps:
            with _store_errors():
                self.files.place(staged, relative)
            steps.placed = True
            self._group.submit(record)
            steps.indexed = True
        return record

    def _index(self, record: EvidenceRecord) -> None:
        self._group.submit(record)

    def _remove(self, path: str) -> None:
        with _store_errors():
            self.files.remove(path)

    def _put_back(self, staged: StagedFile, record: EvidenceRecord) -> None:
        with _store_errors():
            self.files.place(staged, record.volume_path)

    def _stored_size(self, record: EvidenceRecord) -> int | None:
        with _store_errors():
            return self.files.size(record.volume_path)

    def stored_sizes(self, records: Sequence[EvidenceRecord]) -> dict[str, int | None]:
        with _store_errors():
            sizes = self.files.sizes([record.volume_path for record in records])
        return {record.id: sizes[record.volume_path] for record in records}

    def _get(self, engagement_id: str, evidence_id: str) -> EvidenceRecord | None:
        return self.table.get(engagement_id, evidence_id)

    def _engagements(self) -> list[str]:
        return self.table.engagements()

    def get_as_of(
        self, engagement_id: str, evidence_id: str, version: int
    ) -> EvidenceRecord | None:
        """The record as the table held it at `version` (None if it was not there yet)."""
        return self.table.get(engagement_id, evidence_id, version)

    def _list(
        self,
        engagement_id: str,
        limit: int,
        cursor: str | None,
        content_hash: str | None,
        include_withdrawn: bool,
    ) -> RecordPage:
        return self.table.page(engagement_id, limit, cursor, content_hash, include_withdrawn)

    def _open(self, record: EvidenceRecord) -> BinaryIO:
        with _store_errors():
            return self.files.open(record.volume_path)

    # -- the evidence lifecycle: tables beside evidence_metadata (`lifecycle_tables`) ----------

    def _record_withdrawal(self, tombstone: Tombstone) -> None:
        record_withdrawal(self.table.withdrawals, tombstone)

    def _hold(self, engagement_id: str) -> Hold | None:
        return self.holds.get(engagement_id)

    def _place_hold(self, hold: Hold) -> None:
        self.holds.place(hold)

    def _release_hold(self, engagement_id: str) -> None:
        self.holds.release(engagement_id)

    def _audit_store(self) -> DeltaAuditStore:
        return self.audit_store

    def _delete_engagement_rows(self, engagement_id: str) -> dict[str, object]:
        predicate = f"engagement_id = {sql_text(engagement_id)}"
        with self._maintenance_paused():
            return {
                table.name: {"version_after_delete": table.delete(predicate)}
                for table in (self.table, self.table.withdrawals)
            }

    def _expunge(self) -> dict[str, object]:
        with self._maintenance_paused():
            return {
                table.name: table.expunge(self._purge_log_grace_seconds)
                for table in (self.table, self.table.withdrawals)
            }

    def _sweep_engagement(self, engagement_id: str) -> list[str]:
        with _store_errors():
            return self.files.remove_tree(f"{FILES_PREFIX}/{engagement_id}")

    @contextmanager
    def _maintenance_paused(self) -> Iterator[None]:
        """Hold the maintenance lease (waiting for it, up to its term), so no compaction of
        any process rewrites the files a purge deletes and vacuums (deltalake 1.6.6 does not
        detect that race: see `maintenance`)."""
        deadline = time.monotonic() + LEASE_SECONDS
        while True:
            with self.files.lease(LEASE_NAME, LEASE_SECONDS) as held:
                if held:
                    yield
                    return
            if time.monotonic() > deadline:
                raise StorageUnavailable("the table's maintenance lease was not free for a purge")
            time.sleep(1.0)

    @property
    def store_location(self) -> str:
        return self.location.base_uri

    def probes(self) -> list[Probe]:
        def table_readable(facts: Facts) -> str:
            facts.update(base=self.location.base_uri, table=TABLE_NAME)
            facts["table_version"] = self.table.version(verify=True)
            return f"{TABLE_NAME} at version {facts['table_version']}"

        probes = [Probe("table readable", table_readable)]
        root = self.location.local_root
        if root is not None:

            def store_writable(facts: Facts) -> str:
                if not os.access(root, os.W_OK):
                    raise StorageMisconfigured("DELTA_BASE_PATH is not writable")
                return "base writable"

            probes += [
                Probe("store writable", store_writable),
                Probe("free disk", lambda facts: free_disk(root), essential=False),
            ]
        return probes

    # -- internals ---------------------------------------------------------------------------

    def _append(self, records: Sequence[EvidenceRecord]) -> None:
        """`GroupCommit`'s flush: one table version for a batch of uploads."""
        before, after = self.table.append(records)
        self.maintenance.after_commit(before, after)


def _files_for(location: DeltaLocation) -> EvidenceFiles:
    if location.local_root is not None:
        return LocalFiles(location.local_root)
    assert location.object_url is not None
    return ObjectStoreFiles(
        location.object_url, location.storage_options().get("aws_conditional_put")
    )


@contextmanager
def _store_errors() -> Iterator[None]:
    """Object-store failures (network, permissions) become `StorageUnavailable` (a 503)."""
    try:
        yield
    except ObjectStoreError as error:
        logger.warning("object store request failed: %s", error)
        raise StorageUnavailable(f"object store: {type(error).__name__}") from error
