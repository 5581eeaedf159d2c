"""Evidence in Unity Catalog Volumes, tracked in the `evidence_metadata` Delta table.

Files: `/Volumes/{catalog}/{schema}/{volume}/evidence_store/{engagement_id}/{id}_{slug}`,
uploaded from the staged local file (seekable, so the SDK streams it; parts and parallelism
are capped so memory stays bounded), never overwriting. Rows: idempotent MERGEs through the SQL
Statement Execution API, shared by every upload in flight at the same time (`databricks_rows`):
a warehouse statement costs hundreds of milliseconds and a commit a second or more, so one
round carries the rows of all concurrent uploads in one MERGE and their duplicate lookups in
one SELECT, run side by side. If the warehouse cannot take the rows, the uploads still succeed
and the rows wait in a durable local outbox that a background thread drains as soon as the
warehouse answers, also after a restart. Records still in the outbox are served by id from it;
a listing needs the warehouse and answers 503 without it rather than a partial page.
"""

from __future__ import annotations

import logging
import posixpath
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.core import Config
from databricks.sdk.errors import NotFound, PermissionDenied, ResourceConflict, Unauthenticated
from databricks.sdk.errors.base import DatabricksError

from app.config import Settings
from app.observability import metrics
from app.storage.base import (
    BackendHealth,
    EvidenceRecord,
    Probe,
    RecordPage,
    StorageBackend,
    utc_timestamp,
)
from app.storage.databricks_rows import MetadataRows
from app.storage.databricks_sql import (
    COLUMNS,
    SqlValue,
    StatementRunner,
    create_table_statement,
    packed_row,
    quote_name,
    record_from_row,
)
from app.storage.errors import (
    EvidenceExists,
    StorageError,
    StorageMisconfigured,
    StorageUnavailable,
)
from app.storage.names import stored_file_name
from app.storage.outbox import MetadataOutbox
from app.storage.pagination import decode_cursor, encode_cursor
from app.storage.staging import StagedFile, owner_is_alive

logger = logging.getLogger(__name__)

VOLUME_DIRECTORY = "evidence_store"
# Multipart uploads (real workspaces, files >= 50 MiB) hold about part size x parallelism in
# memory; the SDK's defaults would allow 10 parts of up to 500 MiB in flight.
UPLOAD_PART_BYTES = 16 * 1024 * 1024
UPLOAD_PARALLELISM = 2
# Files larger than a part may go up in parts; at most this many at once, so however many
# request threads wait on uploads, parts in memory stay under 4 x 2 x 16 MiB.
LARGE_UPLOADS_AT_ONCE = 4
HEALTH_TIMEOUT_SECONDS = 5
# An upload waits at most this long for its round (its row in the table, its earlier copies);
# after that its row is left to the round or the background thread, so a slow or stopped
# warehouse never holds request threads for long.
INLINE_METADATA_SECONDS = 5.0
_TRANSPORT_ERRORS = (DatabricksError, requests.RequestException, TimeoutError)


@dataclass(frozen=True)
class VolumeFile:
    path: str  # the full /Volumes/... path
    relative_path: str  # below the evidence_store directory: <engagement_id>/<name>
    size: int
    modified_at: str  # ISO-8601 UTC


class DatabricksBackend(StorageBackend):
    name = "databricks"
    # An upload holds its request thread while its round commits (about a second on a real
    # warehouse): 40 threads would cap uploads in flight, and so rows per MERGE, at 40.
    request_threads = 160

    def __init__(
        self, settings: Settings, client: WorkspaceClient, probe_client: WorkspaceClient
    ) -> None:
        super().__init__(staging_root=settings.state_path.resolve() / "staging")
        catalog = settings.databricks_catalog
        schema = settings.databricks_schema
        volume = settings.databricks_volume
        self.volume_name = f"{catalog}.{schema}.{volume}"
        self.root = f"/Volumes/{catalog}/{schema}/{volume}/{VOLUME_DIRECTORY}"
        self.table_name = f"{catalog}.{schema}.evidence_metadata"
        self.table = quote_name(catalog, schema, "evidence_metadata")
        self.client = client
        self.probe_client = probe_client  # short timeouts: health answers fast in an outage
        self.sql = StatementRunner(
            client, settings.databricks_warehouse_id, settings.databricks_statement_timeout_seconds
        )
        self.outbox = MetadataOutbox(settings.state_path.resolve() / "databricks_outbox.sqlite3")
        self._retry_seconds = settings.databricks_outbox_retry_seconds
        self._table_ready = False
        self.rows = MetadataRows(
            sql=self.sql,
            table=self.table,
            outbox=self.outbox,
            owner=self._staging.owner,
            read=self._read,
            ensure_table=self._ensure_table,
            # Longer than a MERGE can take (statement timeout, then the SDK's own retries), so
            # a lease renewed when a round starts never ends under a live MERGE.
            claim_seconds=2 * self.sql.timeout + settings.databricks_retry_timeout_seconds + 30,
            wait_seconds=min(INLINE_METADATA_SECONDS, self.sql.timeout),
        )
        self._large_uploads = threading.BoundedSemaphore(LARGE_UPLOADS_AT_ONCE)
        # Unacknowledged uploads whose Volume file could not be removed yet, by id.
        self._withdrawals: dict[str, EvidenceRecord] = {}
        self._withdrawals_lock = threading.Lock()
        self._bulk = False
        # The earlier copies found by the round of the upload this thread committed last, for
        # `_earlier_copies` right after (the contract asks for them in a second call).
        self._found = threading.local()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._deliverer = threading.Thread(
            target=self._deliver_forever, name="kmflow-outbox", daemon=True
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> DatabricksBackend:
        return cls(
            settings,
            workspace_client(settings),
            workspace_client(settings, timeout_seconds=HEALTH_TIMEOUT_SECONDS),
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def startup(self) -> None:
        super().startup()
        self._remove_interrupted_uploads()
        try:
            self._ensure_table()
        except StorageUnavailable as error:
            self.rows.answering = False  # uploads queue their rows at once
            logger.warning("evidence_metadata not checked yet (will retry): %s", error)
        try:
            self.client.volumes.read(self.volume_name)
        except _TRANSPORT_ERRORS as error:
            logger.error("%s", self._files_error(error, "WRITE VOLUME"))
        self._deliverer.start()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        self.rows.close()  # after its round in progress; frees a delivery thread waiting on it
        if self._deliverer.is_alive():
            self._deliverer.join(timeout=30)
        self.outbox.close()
        super().close()

    def _remove_interrupted_uploads(self) -> None:
        """Files of uploads that never got their 201 (the process died mid-way) are removed."""
        for record, owner in self.outbox.uploads_in_flight():
            if owner_is_alive(self._staging.root, owner):
                continue
            try:
                committed = bool(self._read(
                    f"SELECT id FROM {self.table} WHERE id = :id", {"id": record.id}  # noqa: S608
                ))  # fmt: skip
            except StorageError as error:
                logger.warning("interrupted upload %s left for later: %s", record.id, error)
                continue
            if committed:  # its file is evidence stored under the same id: keep it
                self.outbox.remove([record.id])
            elif self._withdraw_upload(record):
                logger.info("removed the file of an interrupted upload: %s", record.volume_path)
        for owner in self.outbox.claim_holders():
            if not owner_is_alive(self._staging.root, owner):
                self.outbox.release_claims(owner)

    # -- writes ------------------------------------------------------------------------------------

    def _commit(self, staged: StagedFile, record: EvidenceRecord) -> EvidenceRecord:
        name = stored_file_name(record.id, record.file_name)
        record = record.model_copy(
            update={"volume_path": f"{self.root}/{record.engagement_id}/{name}"}
        )
        packed_row(record)  # a row the table cannot take is refused before anything is stored
        self._found.copies = None
        with self.rows.expecting(staged.size) as submit:
            try:
                self.outbox.begin_upload(record, self._staging.owner)
            except sqlite3.IntegrityError:
                raise EvidenceExists(f"record {record.id} is being stored already") from None
            try:
                self._upload(staged.path, record.volume_path, staged.size)
            except EvidenceExists:  # the file there is not ours: leave it
                self.outbox.remove([record.id])
                raise
            except BaseException:
                self._withdraw_upload(record)
                raise
            # The bytes are safe: from here on the row must reach the table.
            ticket = self.rows.queue(record, submit, find_copies=not self._bulk)
        if ticket is not None and not self._bulk:  # a migration's rows are not waited for
            self._found.copies = (record.id, self.rows.settle(ticket))
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

    def _upload(self, local_path: Path, volume_path: str, size: int) -> None:
        large = self._large_uploads if size > UPLOAD_PART_BYTES else nullcontext()
        try:
            with large:
                self.client.files.upload_from(
                    volume_path,
                    str(local_path),
                    overwrite=False,
                    part_size=UPLOAD_PART_BYTES,
                    use_parallel=True,
                    parallelism=UPLOAD_PARALLELISM,
                )
        except ResourceConflict as error:  # ALREADY_EXISTS: overwrite=False held
            raise EvidenceExists(
                f"{volume_path} is already in the Volume; nothing was replaced"
            ) from error
        except _TRANSPORT_ERRORS as error:
            raise self._files_error(error, "WRITE VOLUME") from error
        except TypeError as error:
            # databricks-sdk 0.162 raises TypeError while logging a non-JSON error answer to a
            # streamed upload (a proxy's HTML page, say): it is still a failed request.
            raise StorageUnavailable(f"Databricks Files API upload failed: {error}") from error

    def _withdraw_upload(self, record: EvidenceRecord) -> bool:
        """Remove the file of an upload that got no 201 (a failed or interrupted one may still
        have left it), then its outbox entry; False if Databricks could not be asked now: the
        delivery thread asks again until it can (and a restart would too)."""
        try:
            self.client.files.delete(record.volume_path)
        except NotFound:
            pass
        except _TRANSPORT_ERRORS as error:
            logger.warning("cannot remove the file of unacknowledged upload %s yet: %s",
                           record.id, error)  # fmt: skip
            with self._withdrawals_lock:
                self._withdrawals[record.id] = record
            return False
        self.outbox.remove([record.id])
        with self._withdrawals_lock:
            self._withdrawals.pop(record.id, None)
        return True

    def _retry_withdrawals(self) -> None:
        with self._withdrawals_lock:
            waiting = list(self._withdrawals.values())
        for record in waiting:
            if self._withdraw_upload(record):
                logger.info("removed the file of a failed upload: %s", record.volume_path)

    # -- metadata delivery -----------------------------------------------------------------------

    def _ensure_table(self) -> None:
        if not self._table_ready:
            self.sql.run(create_table_statement(self.table))
            self._table_ready = True

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
        """Deliver the row of a file already in the Volume (see databricks_backfill)."""
        packed_row(record)
        ticket = self.rows.index(record)
        if ticket is not None and not self._bulk:
            self.rows.settle(ticket)

    def _engagements(self) -> set[str]:
        rows = self._read(f"SELECT DISTINCT engagement_id FROM {self.table}")  # noqa: S608
        return {str(row[0]) for row in rows} | self.outbox.engagements()

    def known_ids(self) -> set[str]:
        """Every id in the table or on its way there."""
        rows = self._read(f"SELECT id FROM {self.table}")  # noqa: S608 - a quoted name only
        return {str(row[0]) for row in rows} | self.outbox.ids()

    def volume_files(self) -> Iterator[VolumeFile]:
        """Every file under the evidence directory, at any depth."""
        directories = [self.root]
        while directories:
            directory = directories.pop()
            try:
                entries = list(self.client.files.list_directory_contents(directory))
            except NotFound:
                continue
            except _TRANSPORT_ERRORS as error:
                raise self._files_error(error, "READ VOLUME") from error
            for entry in entries:
                path = (entry.path or "").rstrip("/")
                if entry.is_directory:
                    directories.append(path)
                    continue
                modified = datetime.fromtimestamp((entry.last_modified or 0) / 1000, UTC)
                yield VolumeFile(
                    path=path,
                    relative_path=path.removeprefix(self.root + "/"),
                    size=entry.file_size or 0,
                    modified_at=utc_timestamp(modified),
                )

    def _deliver_forever(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._retry_seconds)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._retry_withdrawals()
                self.rows.deliver_outbox()
            except (StorageError, sqlite3.Error) as error:
                logger.error("metadata outbox delivery failed, will retry: %s", error)
            except Exception:  # this thread must outlive any one failure: log, retry
                logger.exception("unexpected error in metadata outbox delivery, will retry")

    # -- reads -------------------------------------------------------------------------------------

    def _select(
        self, where: str, params: dict[str, str | int | None], limit: int
    ) -> list[EvidenceRecord]:
        # Only quoted names, fixed text and an int are formatted in; values are parameters.
        sql = (
            f"SELECT {', '.join(COLUMNS)} FROM {self.table} WHERE {where} "  # noqa: S608
            f"ORDER BY stored_at DESC, id DESC LIMIT {int(limit)}"
        )
        return [record_from_row(row) for row in self._read(sql, params)]

    def _read(self, sql: str, params: Mapping[str, SqlValue] | None = None) -> list[list[Any]]:
        """A query of the table; a table that does not exist yet (a fresh deployment, a dry
        run before the first write) holds no rows rather than failing."""
        if not self._table_ready:
            try:
                exists = self.client.tables.exists(self.table_name).table_exists
            except _TRANSPORT_ERRORS as error:
                raise StorageUnavailable(f"cannot look up {self.table_name}: {error}") from error
            if not exists:
                return []
            self._table_ready = True
        return self.sql.run(sql, params)

    def _get(self, engagement_id: str, evidence_id: str) -> EvidenceRecord | None:
        for record in self.outbox.queued_for(engagement_id):
            if record.id == evidence_id:
                return record
        rows = self._select(
            "id = :id AND engagement_id = :engagement_id",
            {"id": evidence_id, "engagement_id": engagement_id},
            1,
        )
        return rows[0] if rows else None

    def _list(
        self, engagement_id: str, limit: int, cursor: str | None, content_hash: str | None
    ) -> RecordPage:
        where = "engagement_id = :engagement_id"
        params: dict[str, str | int | None] = {"engagement_id": engagement_id}
        pending = self.outbox.queued_for(engagement_id)
        if content_hash is not None:
            where += " AND content_hash = :content_hash"
            params["content_hash"] = content_hash
            pending = [r for r in pending if r.content_hash == content_hash]
        if cursor is not None:
            stored_at, last_id = decode_cursor(cursor)
            where += " AND (stored_at < :stored_at OR (stored_at = :stored_at AND id < :id))"
            params |= {"stored_at": stored_at, "id": last_id}
            pending = [r for r in pending if (r.stored_at, r.id) < (stored_at, last_id)]
        merged = {record.id: record for record in self._select(where, params, limit + 1)}
        merged |= {record.id: record for record in pending}
        ordered = sorted(merged.values(), key=lambda r: (r.stored_at, r.id), reverse=True)
        items = ordered[:limit]
        more = len(ordered) > limit
        return RecordPage(
            items=items,
            next_cursor=encode_cursor(items[-1].stored_at, items[-1].id) if more else None,
        )

    def _open(self, record: EvidenceRecord) -> BinaryIO:
        if not posixpath.normpath(record.volume_path).startswith(self.root + "/"):
            raise StorageMisconfigured(f"record {record.id} points outside {self.root}")
        try:
            contents = self.client.files.download(record.volume_path).contents
        except _TRANSPORT_ERRORS as error:
            raise self._files_error(error, "READ VOLUME") from error
        if contents is None:
            raise StorageUnavailable(f"Databricks returned no content for {record.id}")
        return contents

    # -- health and errors -------------------------------------------------------------------------

    @property
    def store_location(self) -> str:
        return f"{self.client.config.host}{self.root}"

    def probes(self) -> list[Probe]:
        def volume_reachable() -> str:
            details = self._probe_volume()
            if not details["volume_reachable"]:
                raise StorageUnavailable(str(details.get("volume_error")))
            return self.volume_name

        def warehouse_running() -> str:
            details = self._probe_warehouse()
            if not details["warehouse_reachable"]:
                state = details.get("warehouse_state") or details.get("warehouse_error")
                raise StorageUnavailable(f"warehouse {details.get('warehouse_id')}: {state}")
            return f"warehouse {details['warehouse_id']} RUNNING"

        def metadata_delivered() -> str:
            pending, last_error = self.outbox.stats()
            metrics.PENDING_METADATA_ROWS.set(pending)
            # Rows in a round right now are on their way, not waiting on anything.
            if stalled := self.outbox.stalled():
                why = f"; last error: {last_error.splitlines()[0][:200]}" if last_error else ""
                raise StorageUnavailable(f"{stalled} metadata row(s) waiting for the table{why}")
            return f"no metadata rows waiting ({pending} on their way)"

        return [
            Probe("volume reachable", volume_reachable),
            Probe("warehouse running", warehouse_running, essential=False),
            Probe("metadata delivered", metadata_delivered, essential=False),
        ]

    def check(self) -> BackendHealth:
        """Volume and warehouse probed at once, with short timeouts; never discovers."""
        with ThreadPoolExecutor(max_workers=2) as pool:
            volume = pool.submit(self._probe_volume)
            warehouse = pool.submit(self._probe_warehouse)
            volume_details, warehouse_details = volume.result(), warehouse.result()
        pending, last_error = self.outbox.stats()
        metrics.PENDING_METADATA_ROWS.set(pending)
        details: dict[str, object] = {
            "volume": self.volume_name,
            **volume_details,
            **warehouse_details,
            "pending_metadata_rows": pending,
        }
        if last_error:
            details["last_metadata_error"] = last_error.splitlines()[0][:200]
        return BackendHealth(reachable=bool(volume_details["volume_reachable"]), details=details)

    def _probe_volume(self) -> dict[str, object]:
        try:
            self.probe_client.volumes.read(self.volume_name)
        except _TRANSPORT_ERRORS as error:
            message = str(self._files_error(error, "READ VOLUME"))
            return {"volume_reachable": False, "volume_error": message.splitlines()[0][:200]}
        return {"volume_reachable": True}

    def _probe_warehouse(self) -> dict[str, object]:
        warehouse_id = self.sql.known_warehouse_id
        if warehouse_id is None:
            return {"warehouse_reachable": False, "warehouse_error": "not discovered yet"}
        try:
            warehouse = self.probe_client.warehouses.get(warehouse_id)
        except _TRANSPORT_ERRORS as error:
            return {
                "warehouse_id": warehouse_id,
                "warehouse_reachable": False,
                "warehouse_error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}",
            }
        state = warehouse.state.value if warehouse.state else "UNKNOWN"
        return {
            "warehouse_id": warehouse_id,
            "warehouse_state": state,
            "warehouse_reachable": state == "RUNNING",
        }

    def _files_error(self, error: Exception, privilege: str) -> StorageError:
        """The runbook's troubleshooting cases as messages an operator can act on."""
        if isinstance(error, NotFound):
            return StorageMisconfigured(
                f"Unity Catalog volume {self.volume_name} or the file does not exist "
                f"(RESOURCE_DOES_NOT_EXIST). If the volume is missing, create it: "
                f"CREATE VOLUME IF NOT EXISTS {self.volume_name};"
            )
        if isinstance(error, PermissionDenied):
            return StorageMisconfigured(
                f"PERMISSION_DENIED: the service principal lacks {privilege} on volume "
                f"{self.volume_name}. Grant it: GRANT {privilege} ON VOLUME {self.volume_name} "
                "TO `kmflow-api`;"
            )
        if isinstance(error, Unauthenticated):
            return StorageMisconfigured(
                "Databricks rejected kmflow's credentials: check DATABRICKS_TOKEN"
            )
        return StorageUnavailable(f"Databricks Files API unavailable: {error}")


def workspace_client(settings: Settings, timeout_seconds: int | None = None) -> WorkspaceClient:
    """A client from DATABRICKS_HOST/DATABRICKS_TOKEN, or the SDK's own credential chain.

    `timeout_seconds` caps both the SDK's retries and each request (for health probes).
    """
    token = settings.databricks_token.get_secret_value() if settings.databricks_token else None
    try:
        config = Config(
            host=settings.databricks_host,
            token=token,
            retry_timeout_seconds=timeout_seconds or settings.databricks_retry_timeout_seconds,
            http_timeout_seconds=timeout_seconds or settings.databricks_http_timeout_seconds,
        )
    except ValueError as error:
        message = str(error).replace(token, "***") if token else str(error)
        raise StorageMisconfigured(
            "cannot configure Databricks authentication: set DATABRICKS_HOST and "
            f"DATABRICKS_TOKEN, or a profile the SDK can use ({message.splitlines()[0]})"
        ) from None
    return WorkspaceClient(config=config)
