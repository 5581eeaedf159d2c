"""Evidence in Unity Catalog Volumes, tracked in the `evidence_metadata` Delta table.

Files: in the Volume (`volume`), uploaded before their row is written. Rows: idempotent
MERGEs through the SQL Statement Execution API, shared by every upload in flight at the same
time (`rows`): a warehouse statement costs hundreds of milliseconds and a commit a second or
more, so one round carries the rows of all concurrent uploads in one MERGE and their duplicate
lookups in one SELECT, run side by side. If the warehouse cannot take the rows, the uploads
still succeed and the rows wait in a durable local outbox that a background thread drains as
soon as the warehouse answers, also after a restart. Records still in the outbox are served by
id from it; a listing needs the warehouse and answers 503 without it rather than a partial
page. Longer than most modules: it wires those parts together and owns the upload's order of
steps and the delivery thread, which only make sense read together.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO

from databricks.sdk import WorkspaceClient

from app.observability import metrics
from app.storage.base import StorageBackend
from app.storage.databricks.claims import CLAIMS_TABLE, ClaimsTable
from app.storage.databricks.client import (
    TRANSPORT_ERRORS,
    LazyWorkspaceClient,
    lazy_workspace_client,
)
from app.storage.databricks.lifecycle_sql import (
    WITHDRAWN_SELECT,
    DatabricksAuditStore,
    DatabricksLifecycle,
    withdrawal_join,
)
from app.storage.databricks.outbox import MetadataOutbox
from app.storage.databricks.pending import PENDING_DIRECTORY, PendingRows
from app.storage.databricks.rows import MetadataRows
from app.storage.databricks.sql import (
    COLUMNS,
    MAX_STATEMENT_PARAMETERS,
    SqlValue,
    StatementRunner,
    create_table_statement,
    packed_row,
    quote_name,
    record_from_row,
)
from app.storage.databricks.volume import UNREACHABLE, Volume, VolumeFile
from app.storage.errors import (
    StorageError,
    StorageUnavailable,
)
from app.storage.health import Facts, Probe
from app.storage.holds import Hold
from app.storage.names import stored_file_name
from app.storage.pagination import decode_cursor, record_page
from app.storage.records import (
    EvidenceRecord,
    RecordPage,
    Tombstone,
    record_from_columns,
)
from app.storage.staging import StagedFile, owner_is_alive

if TYPE_CHECKING:
    from app.settings import Settings

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 5
# An INLINE statement result may hold 25 MiB, counted the warehouse's way (databricks-sdk
# `service/sql.py`, "Limits and limitations"); kmflow asks for EXTERNAL_LINKS above this much
# of its own estimate, and reads ids in pages far below it.
INLINE_RESULT_BUDGET_BYTES = 16 * 1024 * 1024
IDS_PER_PAGE = 100_000
# An upload waits at most this long for its round (its row in the table, its earlier copies);
# after that its row is left to the round or the background thread, so a slow or stopped
# warehouse never holds request threads for long.
INLINE_METADATA_SECONDS = 5.0
# Startup waits at most this long for its checks of the workspace (interrupted uploads, the
# table, the volume), then serves while they go on: an outage must not hold it (nor make an
# orchestrator's startup probe restart it) for the SDK's whole retry budget.
STARTUP_WAIT_SECONDS = 5.0
# Not outages: a SQL warehouse that auto-stopped when idle is started by the next statement sent
# to it (serverless in seconds, pro and classic in minutes); until it runs, rows wait.
WAREHOUSE_STATE_NOTES = {
    "STOPPED": "stopped (auto-stop when idle): it starts on the next statement; metadata rows "
    "wait in the outbox until it runs",
    "STARTING": "starting: metadata rows wait in the outbox until it runs",
}


class DatabricksBackend(StorageBackend):
    name = "databricks"
    # An upload holds its request thread while its round commits (about a second on a real
    # warehouse): 40 threads would cap uploads in flight, and so rows per MERGE, at 40.
    request_threads = 160
    settles_in_background = True  # on the delivery thread: see `startup`
    # An INSERT into evidence_audit is a statement and a commit (a second or more): one every
    # two seconds or so carries every event of that time, and a warehouse slot stays free.
    audit_pace_seconds = 2.0

    def __init__(
        self, settings: Settings, client: WorkspaceClient, probe_client: WorkspaceClient
    ) -> None:
        catalog = settings.databricks_catalog
        schema = settings.databricks_schema
        volume = settings.databricks_volume
        self.sql = StatementRunner(
            client, settings.databricks_warehouse_id, settings.databricks_statement_timeout_seconds
        )
        staging_root = settings.state_path.resolve() / "staging"
        # Idempotency-Keys hold for every replica: claimed in a table beside the metadata.
        self.claims = ClaimsTable(self.sql, quote_name(catalog, schema, CLAIMS_TABLE), staging_root)
        super().__init__(staging_root=staging_root, key_claims=self.claims)
        self.volume = Volume(
            client,
            probe_client,
            catalog,
            schema,
            volume,
            client_id=settings.databricks_client_id,
            credentials=settings.databricks_credentials,
        )
        self.volume_name = self.volume.name
        self.root = self.volume.root
        self.table_name = f"{catalog}.{schema}.evidence_metadata"
        self.table = quote_name(catalog, schema, "evidence_metadata")
        self.lifecycle = DatabricksLifecycle(self.sql, catalog, schema, self.table)
        self.audit_store = DatabricksAuditStore(self.lifecycle, self._tables_for_writing)
        self._joined = withdrawal_join(self.table, self.lifecycle.withdrawals)
        self._unjoined = withdrawal_join(self.table, None)
        # Both may be LazyWorkspaceClients (see from_settings): built on first use.
        self.client = client
        self.probe_client = probe_client  # short timeouts: health answers fast in an outage
        self._host = settings.databricks_host
        self.outbox = MetadataOutbox(settings.state_path.resolve() / "databricks_outbox.sqlite3")
        self._retry_seconds = settings.databricks_outbox_retry_seconds
        self._table_ready = False  # evidence_metadata and the lifecycle's tables exist
        self._lifecycle_ready = False  # the lifecycle's tables exist
        # Longer than a MERGE can take (statement timeout, then the SDK's own retries), so a
        # lease renewed when a round starts never ends under a live MERGE.
        longest_merge = 2 * self.sql.timeout + settings.databricks_retry_timeout_seconds + 10
        self.rows = MetadataRows(
            sql=self.sql,
            table=self.table,
            withdrawals=self.lifecycle.withdrawals,
            outbox=self.outbox,
            owner=self._staging.owner,
            read=self._read,
            ensure_table=self._ensure_table,
            claim_seconds=longest_merge + 20,
            wait_seconds=min(INLINE_METADATA_SECONDS, self.sql.timeout),
        )
        self.pending = PendingRows(
            client=client,
            directory=f"/Volumes/{catalog}/{schema}/{volume}/{PENDING_DIRECTORY}",
            claims=self.claims,
            owner=self._staging.owner,
            staging_root=staging_root,
            has_rows=self._rows_held,
            merge=self.rows.merge,
            grace_seconds=longest_merge,
        )
        self._bulk = False
        # REORG and VACUUM of a large table take minutes, not a statement's usual seconds.
        self._maintenance_timeout = max(600.0, self.sql.timeout)
        # A result row at its largest, as JSON: the metadata (escaped) and the other columns.
        self._max_row_bytes = 2 * settings.max_metadata_bytes + 8 * 1024
        # The earlier copies found by the round of the upload this thread committed last, for
        # `_earlier_copies` right after (the contract asks for them in a second call).
        self._found = threading.local()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._checked = threading.Event()  # the startup checks are done (or failed)
        self._deliverer = threading.Thread(
            target=self._deliver_forever, name="kmflow-outbox", daemon=True
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> DatabricksBackend:
        """Builds no client yet: building one calls the workspace (see LazyWorkspaceClient)."""
        return cls(
            settings,
            lazy_workspace_client(settings),
            lazy_workspace_client(settings, timeout_seconds=HEALTH_TIMEOUT_SECONDS),
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def startup(self) -> None:
        """Starts the delivery thread, whose first work is the startup checks; waits for them
        at most STARTUP_WAIT_SECONDS. Each check already tolerated an unreachable workspace,
        but only after the SDK's retry budget (a minute by default, per call): a Databricks
        outage held startup that long, and an orchestrator waiting for it restarted the pod."""
        super().startup()
        self._deliverer.start()
        if not self._checked.wait(STARTUP_WAIT_SECONDS):
            logger.warning(
                "Databricks has not answered the startup checks within %.0f s: serving "
                "meanwhile; they go on in the background",
                STARTUP_WAIT_SECONDS,
            )

    def _startup_checks(self) -> None:
        self.settle_interrupted_writes()
        self._release_dead_claims()
        try:
            self._ensure_table()
        except StorageError as error:
            self.rows.answering = False  # uploads queue their rows at once
            logger.warning("evidence_metadata not checked yet (will retry): %s", error)
        try:
            self.client.volumes.read(self.volume_name)
        except TRANSPORT_ERRORS as error:
            logger.error("%s", self.volume.error(error, "WRITE VOLUME"))
        except StorageError as error:  # no client yet: the next use builds one
            logger.error("%s", error)

    def _close_parts(self) -> None:
        self._stopping.set()
        self._wake.set()
        self.rows.close()  # after its round in progress; frees a delivery thread waiting on it
        if self._deliverer.is_alive():
            self._deliverer.join(timeout=30)
        self.outbox.close()

    def _release_dead_claims(self) -> None:
        """Outbox rows a dead process was delivering may be delivered by others now."""
        for owner in self.outbox.claim_holders():
            if not owner_is_alive(self._staging.root, owner):
                self.outbox.release_claims(owner)

    # -- writes ------------------------------------------------------------------------------------

    def _commit(self, staged: StagedFile, record: EvidenceRecord) -> EvidenceRecord:
        name = stored_file_name(record.id, record.file_name)
        record = record.model_copy(
            update={"volume_path": self.volume.path_of(record.engagement_id, name)}
        )
        packed_row(record)  # a row the table cannot take is refused before anything is stored
        self._found.copies = None
        with self.rows.expecting(staged.size) as submit, self._write_intent(record) as steps:
            self._upload(staged, record)
            steps.placed = True
            # The bytes are safe: from here on the row must reach the table.
            ticket = self.rows.queue(record, submit, find_copies=not self._bulk)
            steps.indexed = True
        if self._bulk:  # a migration's rows are not waited for (see `bulk`)
            return record
        if ticket is not None:
            self._found.copies = (record.id, self.rows.settle(ticket))
        if ticket is None or not ticket.job.delivered:
            # Not in the table yet: durable where every replica finds it before the 201, and
            # no longer this machine's to deliver (see `pending`).
            self.pending.write(record, ticket.done if ticket is not None else None)
            self.outbox.remove([record.id])
        return record

    def _earlier_copies(self, record: EvidenceRecord) -> list[str] | None:
        """Found by the upload's own round when it was just stored; a replayed upload looks
        them up in a round of its own. Only while the warehouse answers: in an outage the
        lookup would hold an upload whose bytes are already safe, to say nothing useful."""
        found, self._found.copies = getattr(self._found, "copies", None), None
        if found is not None and found[0] == record.id:
            copies: list[str] | None = found[1]
            return copies
        return self.rows.copies_of(record)

    def _upload(self, staged: StagedFile, record: EvidenceRecord) -> None:
        self.volume.upload(staged, record.volume_path, has_row=lambda: self._has_row(record.id))

    def _has_row(self, evidence_id: str) -> bool:
        """Whether the table holds a row for the id; True when that cannot be told now, so
        a caller that would take the file leaves it instead."""
        try:
            return bool(
                self._read(
                    f"SELECT 1 FROM {self.table} WHERE id = :id LIMIT 1",  # noqa: S608 - quoted
                    {"id": evidence_id},
                )
            )
        except StorageError as error:
            logger.warning("cannot tell whether %s has a row: %s", evidence_id, error)
            return True

    def _index(self, record: EvidenceRecord) -> None:
        self.index_existing(record)

    def _remove(self, path: str) -> None:
        try:
            self.volume.remove(path)
        except UNREACHABLE as error:
            raise StorageUnavailable(f"Databricks Files API unavailable: {error}") from error

    # -- metadata delivery -----------------------------------------------------------------------

    def _ensure_table(self) -> None:
        """`evidence_metadata` and the lifecycle's tables beside it (once per process)."""
        if not self._table_ready:
            for statement in [
                create_table_statement(self.table),
                *self.lifecycle.create_statements(),
            ]:
                self.sql.run(statement)
            self._table_ready = self._lifecycle_ready = True

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Many writes in a row (migration, backfill): their rows are not waited for one by
        one; the rounds take them as they come, as many per MERGE as the limits allow.

        On exit every queued row is delivered; if the warehouse does not take them all, that
        is an error the caller reports (the rows stay safe in the outbox).
        """
        self._bulk = True
        try:
            yield
        finally:
            self._bulk = False
        self.rows.wait_idle()
        if pending := self.rows.deliver_outbox():
            raise StorageUnavailable(
                f"{pending} evidence_metadata row(s) still queued: the warehouse did not take "
                "them; kmflow delivers them when it answers (or rerun this command)"
            )

    def index_existing(self, record: EvidenceRecord) -> None:
        """Deliver the row of a file already in the Volume (see `backfill`)."""
        packed_row(record)
        ticket = self.rows.index(record)
        if ticket is not None and not self._bulk:
            self.rows.settle(ticket)

    def _engagements(self) -> set[str]:
        rows = self._read(f"SELECT DISTINCT engagement_id FROM {self.table}")  # noqa: S608
        return {str(row[0]) for row in rows} | self.outbox.engagements()

    def known_ids(self) -> set[str]:
        """Every id in the table or on its way there, read in pages by id: one SELECT of
        every id would pass the 25 MiB an INLINE result may hold near a million rows. Pending
        rows in the Volume count: a backfill must not index their files without the
        client's metadata the pending record holds."""
        known = self.outbox.ids() | self.pending.ids()
        after = ""
        while True:
            rows = self._read(
                f"SELECT id FROM {self.table} WHERE id > :after "  # noqa: S608 - quoted name
                f"ORDER BY id LIMIT {IDS_PER_PAGE}",
                {"after": after},
            )
            known.update(str(row[0]) for row in rows)
            if len(rows) < IDS_PER_PAGE:
                return known
            after = str(rows[-1][0])

    def volume_files(self) -> Iterator[VolumeFile]:
        return self.volume.files()

    def _deliver_forever(self) -> None:
        try:
            self._startup_checks()
        except Exception:  # logged; the loop below still delivers
            logger.exception("unexpected error in kmflow's startup checks of Databricks")
        finally:
            self._checked.set()
        while not self._stopping.is_set():
            self._wake.wait(self.rows.retry_seconds(self._retry_seconds))
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.retry_removals()
                self.rows.deliver_outbox()
                self.pending.deliver()  # after the outbox, on this thread: never beside it
            except (StorageError, sqlite3.Error) as error:
                logger.error("metadata outbox delivery failed, will retry: %s", error)
            except Exception:  # this thread must outlive any one failure: log, retry
                logger.exception("unexpected error in metadata outbox delivery, will retry")

    # -- reads -------------------------------------------------------------------------------------

    def _select(
        self, where: str, params: dict[str, str | int | None], limit: int
    ) -> list[EvidenceRecord]:
        """Records (`m`) with their withdrawals (`w`), newest first."""
        # Only quoted names, fixed text and an int are formatted in; values are parameters.
        sql = (
            f"SELECT {', '.join(f'm.{name}' for name in COLUMNS)}, {WITHDRAWN_SELECT} "  # noqa: S608
            f"FROM {self._joined if self._lifecycle_ready else self._unjoined} WHERE {where} "
            f"ORDER BY m.stored_at DESC, m.id DESC LIMIT {int(limit)}"
        )
        # A page that could pass what an INLINE result may hold comes as EXTERNAL_LINKS.
        large = limit * self._max_row_bytes > INLINE_RESULT_BUDGET_BYTES
        return [record_from_row(row) for row in self._read(sql, params, large=large)]

    def _read(
        self, sql: str, params: Mapping[str, SqlValue] | None = None, *, large: bool = False
    ) -> list[list[Any]]:
        """A query of the tables; where `evidence_metadata` does not exist yet (a fresh
        deployment, a dry run before the first write) it holds no rows rather than failing.
        Where it exists, the lifecycle's tables are made beside it first."""
        if not self._tables_exist():
            return []
        return self.sql.run(sql, params, large=large)

    def _tables_exist(self) -> bool:
        """Whether `evidence_metadata` exists (a table not made yet holds no rows), learning
        whether the lifecycle's tables do: until they exist, reads join an empty stand-in,
        since a read (a dry run) creates nothing; a write makes them (`_tables_for_writing`).
        Asked of Unity Catalog, not the warehouse: it answers while a warehouse is stopped."""
        if self._table_ready:
            return True
        try:
            missing = [
                name
                for name in (self.table_name, *self.lifecycle.table_names)
                if not self.client.tables.exists(name).table_exists
            ]
        except TRANSPORT_ERRORS as error:
            raise StorageUnavailable(f"cannot look up {self.table_name}: {error}") from error
        if self.table_name in missing:
            return False
        self._lifecycle_ready = self._table_ready = not missing
        return True

    def _tables_for_writing(self) -> None:
        """Every table, made where missing (once per process)."""
        if not (self._tables_exist() and self._lifecycle_ready):
            self._ensure_table()

    def _get(self, engagement_id: str, evidence_id: str) -> EvidenceRecord | None:
        for record in self.outbox.queued_for(engagement_id):
            if record.id == evidence_id:
                return self._with_withdrawals([record])[0]
        failure: StorageUnavailable | None = None
        try:
            rows = self._select(
                "m.id = :id AND m.engagement_id = :engagement_id",
                {"id": evidence_id, "engagement_id": engagement_id},
                1,
            )
        except StorageUnavailable as error:
            rows, failure = [], error  # the warehouse is down: a pending record is still found
        if rows:
            return rows[0]
        # Acknowledged by any replica while the warehouse did not take its row.
        pending = self.pending.read(evidence_id)
        if pending is not None and pending.engagement_id == engagement_id:
            return pending if failure is not None else self._with_withdrawals([pending])[0]
        if failure is not None:
            raise failure
        return None

    def _with_withdrawals(self, records: list[EvidenceRecord]) -> list[EvidenceRecord]:
        """Records not in the table yet (outbox, pending), as tombstones where withdrawn:
        a record may be withdrawn before its row arrives."""
        if not records or not self._lifecycle_ready:
            return records
        found = self.lifecycle.withdrawals_of([record.id for record in records])
        return [
            record_from_columns(record.model_dump() | found[record.id])
            if record.id in found
            else record
            for record in records
        ]

    def rows_waiting(self) -> int:
        """Rows acknowledged or copied but not in the table yet: in this machine's outbox and
        in the Volume's pending directory."""
        return self.outbox.stats()[0] + self.pending.count(self.client)

    def wait_until_delivered(self, timeout: float) -> bool:
        """For operators' scripts and tests: True once no row waits for the table."""
        deadline = time.monotonic() + timeout
        while self.rows_waiting() and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.2)
        return self.rows_waiting() == 0

    def _rows_held(self, evidence_ids: Sequence[str]) -> set[str]:
        """Which of the ids the table holds."""
        held: set[str] = set()
        for start in range(0, len(evidence_ids), MAX_STATEMENT_PARAMETERS):
            chunk = evidence_ids[start : start + MAX_STATEMENT_PARAMETERS]
            params: dict[str, SqlValue] = {f"id_{n}": i for n, i in enumerate(chunk)}
            marks = ", ".join(f":id_{n}" for n in range(len(chunk)))
            rows = self._read(f"SELECT id FROM {self.table} WHERE id IN ({marks})", params)  # noqa: S608
            held.update(str(row[0]) for row in rows)
        return held

    def _list(
        self,
        engagement_id: str,
        limit: int,
        cursor: str | None,
        content_hash: str | None,
        include_withdrawn: bool,
    ) -> RecordPage:
        where = "m.engagement_id = :engagement_id"
        params: dict[str, str | int | None] = {"engagement_id": engagement_id}
        pending = self.outbox.queued_for(engagement_id) + self.pending.written_here(engagement_id)
        if content_hash is not None:
            where += " AND m.content_hash = :content_hash"
            params["content_hash"] = content_hash
            pending = [r for r in pending if r.content_hash == content_hash]
        if not include_withdrawn:
            where += " AND w.id IS NULL"
        if cursor is not None:
            stored_at, last_id = decode_cursor(cursor)
            where += " AND (m.stored_at < :stored_at OR (m.stored_at = :stored_at AND m.id < :id))"
            params |= {"stored_at": stored_at, "id": last_id}
            pending = [r for r in pending if (r.stored_at, r.id) < (stored_at, last_id)]
        pending = self._with_withdrawals(pending)
        if not include_withdrawn:
            pending = [r for r in pending if not isinstance(r, Tombstone)]
        merged = {record.id: record for record in self._select(where, params, limit + 1)}
        merged |= {record.id: record for record in pending}
        ordered = sorted(merged.values(), key=lambda r: (r.stored_at, r.id), reverse=True)
        return record_page(ordered, limit)

    def _open(self, record: EvidenceRecord) -> BinaryIO:
        return self.volume.open(record)

    def _put_back(self, staged: StagedFile, record: EvidenceRecord) -> None:
        self._upload(staged, record)

    def _stored_size(self, record: EvidenceRecord) -> int | None:
        return self.volume.size(record.volume_path)

    # -- the evidence lifecycle: tables beside evidence_metadata (`lifecycle_sql`) -----------

    def _record_withdrawal(self, tombstone: Tombstone) -> None:
        self._tables_for_writing()
        self.lifecycle.record_withdrawal(tombstone)

    def _hold(self, engagement_id: str) -> Hold | None:
        exists = self._tables_exist() and self._lifecycle_ready
        return self.lifecycle.hold(engagement_id) if exists else None

    def _place_hold(self, hold: Hold) -> None:
        self._tables_for_writing()
        self.lifecycle.place_hold(hold)

    def _release_hold(self, engagement_id: str) -> None:
        if self._tables_exist() and self._lifecycle_ready:
            self.lifecycle.release_hold(engagement_id)

    def _audit_store(self) -> DatabricksAuditStore:
        return self.audit_store

    def _delete_engagement_rows(self, engagement_id: str) -> dict[str, object]:
        """Rows in the tables, rows on their way (this machine's outbox, pending records in
        the Volume from any replica)."""
        queued = [record.id for record in self.outbox.queued_for(engagement_id)]
        self.outbox.remove(queued)
        pending = self.pending.remove_engagement(engagement_id)
        self._tables_for_writing()
        self.lifecycle.delete_engagement(engagement_id)
        return {"queued_rows_removed": len(queued), "pending_records_removed": pending}

    def _expunge(self) -> dict[str, object]:
        self._tables_for_writing()
        return self.lifecycle.expunge(self._maintenance_timeout)

    def _sweep_engagement(self, engagement_id: str) -> list[str]:
        try:
            return self.volume.remove_tree(f"{self.root}/{engagement_id}")
        except UNREACHABLE as error:
            raise StorageUnavailable(f"Databricks Files API unavailable: {error}") from error

    def stored_sizes(self, records: Sequence[EvidenceRecord]) -> dict[str, int | None]:
        return self.volume.sizes(records)

    # -- health and errors -------------------------------------------------------------------------

    @property
    def store_location(self) -> str:
        """Never builds a client (it is logged at startup): the configured host, else the
        SDK's once a client exists."""
        host = self._host
        if host is None and isinstance(self.client, LazyWorkspaceClient):
            built = self.client.built()
            host = built.config.host if built is not None else None
        return f"{host or '(the SDK credential chain host)'}{self.root}"

    def probes(self) -> list[Probe]:
        def volume_reachable(facts: Facts) -> str:
            facts["volume"] = self.volume_name
            facts.update(self.volume.probe())
            if not facts["volume_reachable"]:
                raise StorageUnavailable(str(facts.get("volume_error")))
            return self.volume_name

        def warehouse_running(facts: Facts) -> str:
            facts.update(self._probe_warehouse())
            if not facts["warehouse_reachable"]:
                state = facts.get("warehouse_state") or facts.get("warehouse_error")
                note = f" ({facts['warehouse_detail']})" if "warehouse_detail" in facts else ""
                raise StorageUnavailable(f"warehouse {facts.get('warehouse_id')}: {state}{note}")
            return f"warehouse {facts['warehouse_id']} RUNNING"

        def metadata_delivered(facts: Facts) -> str:
            in_volume = self.pending.count(self.probe_client)
            queued, last_error = self.outbox.stats()
            facts["pending_metadata_rows"] = queued + in_volume
            metrics.PENDING_METADATA_ROWS.set(queued + in_volume)
            if last_error:
                facts["last_metadata_error"] = last_error.splitlines()[0][:200]
            if refused := self.rows.refused:
                facts["metadata_refused"] = refused[:300]
            # Rows in a round right now are on their way, not waiting on anything.
            last_error = last_error or self.pending.last_error
            # Rows acknowledged while the warehouse did not take them wait in the Volume.
            if stalled := self.outbox.stalled() + in_volume:
                if refused:  # not an outage: someone has to act
                    why = f"; the warehouse refuses them until fixed: {refused[:300]}"
                elif last_error:
                    why = f"; last error: {last_error.splitlines()[0][:200]}"
                else:
                    why = ""
                raise StorageUnavailable(f"{stalled} metadata row(s) waiting for the table{why}")
            return f"no metadata rows waiting ({queued} on their way)"

        return [
            Probe("volume reachable", volume_reachable),
            Probe("warehouse running", warehouse_running, essential=False),
            Probe("metadata delivered", metadata_delivered, essential=False),
        ]

    def _probe_warehouse(self) -> dict[str, object]:
        warehouse_id = self.sql.known_warehouse_id
        if warehouse_id is None:
            return {"warehouse_reachable": False, "warehouse_error": "not discovered yet"}
        try:
            warehouse = self.probe_client.warehouses.get(warehouse_id)
        except UNREACHABLE as error:
            return {
                "warehouse_id": warehouse_id,
                "warehouse_reachable": False,
                "warehouse_error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}",
            }
        state = warehouse.state.value if warehouse.state else "UNKNOWN"
        details: dict[str, object] = {
            "warehouse_id": warehouse_id,
            "warehouse_state": state,
            "warehouse_reachable": state == "RUNNING",  # runs statements right now
        }
        if note := WAREHOUSE_STATE_NOTES.get(state):
            details["warehouse_detail"] = note
        return details
