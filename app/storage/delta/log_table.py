"""One Delta table under the base, as kmflow handles every table it keeps there: opened once per
process, read from a snapshot refreshed only when a newer log entry exists, written with
retried, idempotent commits, fsynced on a local base, maintained and, for a purge, expunged.

`evidence_metadata` (`table.EvidenceTable`) adds its paged reads; the lifecycle's tables
(`lifecycle_tables`) are plain instances with their own schema.

Reads keep one snapshot per process and refresh it only when the next log entry exists (one
`stat` or `HEAD`): a refresh lists the whole `_delta_log` directory on a local filesystem,
which costs about 1 ms per 1,000 retained versions, so quiet tables are never refreshed. A
snapshot that can no longer be read (another process expunged the files or log entries it
points at) is dropped and the table opened afresh, once, before a read fails.

Appends are idempotent: each carries a Delta `txn` action (this process's app id, a batch
sequence number), so after an error whose outcome is unknown the table itself says whether
the batch landed, and a retry never commits a row twice. Merges insert only rows whose key
the table lacks, so they are idempotent by the key.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import unquote

from arro3.core import Array, Schema, Table
from deltalake import (
    CommitProperties,
    DeltaTable,
    PostCommitHookProperties,
    QueryBuilder,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import Transaction

from app.storage.delta.location import LOG_DIR, DeltaLocation
from app.storage.errors import (
    CommitOutcomeUnknown,
    InvalidCursor,
    InvalidInput,
    StorageUnavailable,
)
from app.storage.fsync import fsync_directory, fsync_file

logger = logging.getLogger(__name__)

# A commit that keeps losing races is retried with jittered backoff for this long.
COMMIT_DEADLINE_SECONDS = 30.0
DELTA_RS_COMMIT_RETRIES = 50

# Checkpoints and log cleanup run on kmflow's maintenance policy, never inside an upload.
NO_COMMIT_HOOKS = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)

# Compaction merges small files into files of about this size (~1,500 rows of evidence_metadata
# with delta-rs's default ZSTD). A first page reads the newest one or two, so they are kept
# small enough to read in about a millisecond; larger targets made list latency grow with the
# engagement.
COMPACT_TARGET_BYTES = 128 * 1024

APPEND_ONLY = "delta.appendOnly"
LOG_RETENTION = "delta.logRetentionDuration"
DEFAULT_LOG_RETENTION = "interval 30 days"  # Delta's own default


class LogFiles(Protocol):
    """What a table needs of the base's storage (`files.EvidenceFiles`), by path relative to
    the base."""

    def exists(self, relative: str) -> bool: ...

    def names_under(self, prefix: str) -> list[str]: ...

    def remove(self, relative: str) -> None: ...


class DeltaLogTable:
    """One process's handle on the table `name` under the base; thread-safe."""

    def __init__(
        self,
        location: DeltaLocation,
        name: str,
        schema: Schema,
        *,
        partition_by: Sequence[str] = (),
        properties: Mapping[str, str] | None = None,
        files: LogFiles,
    ) -> None:
        self.location = location
        self.name = name
        self.uri = f"{location.base_uri}/{name}"
        self.schema = schema
        self._partition_by = list(partition_by)
        self._properties = dict(properties or {})
        self._options = location.storage_options()
        self._files = files
        self._log = f"{name}/{LOG_DIR}"
        self._app_id = f"kmflow-{uuid.uuid4().hex}"
        self._batches = 0
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._reader: DeltaTable | None = None
        self._writer: DeltaTable | None = None

    # -- opening -----------------------------------------------------------------------------

    def ensure_exists(self) -> None:
        """Create the table unless it exists; safe when several workers start at once."""
        try:
            DeltaTable.create(
                self.uri,
                self.schema,
                mode="ignore",
                partition_by=self._partition_by or None,
                name=self.name,
                configuration=self._properties or None,
                storage_options=self._options,
                commit_properties=CommitProperties(max_commit_retries=DELTA_RS_COMMIT_RETRIES),
            )
        except (DeltaError, OSError) as error:
            # Lost a creation race: fine if the winner's table is there now.
            if not DeltaTable.is_deltatable(self.uri, self._options):
                raise StorageUnavailable(f"cannot create the {self.name} table") from error
        if self.location.local_root is not None and self.open().version() == 0:
            self._sync_local_versions(0, 0)

    def open(self, version: int | None = None) -> DeltaTable:
        """A new handle on the table (at `version`, or the latest)."""
        try:
            return DeltaTable(self.uri, version=version, storage_options=self._options)
        except TableNotFoundError as error:
            if version is not None:
                raise InvalidInput(
                    f"version {version} is not in the {self.name} table's retained history"
                ) from error
            raise StorageUnavailable(f"no {self.name} table at the base path") from error
        except (DeltaError, OSError) as error:
            if version is not None:
                raise InvalidInput(
                    f"version {version} is not in the {self.name} table's retained history"
                ) from error
            raise StorageUnavailable(f"cannot open the {self.name} table") from error

    def _entry(self, version: int) -> str:
        return f"{self._log}/{version:020d}.json"

    def _refresh(self, table: DeltaTable) -> DeltaTable:
        """`table` brought to the latest version (cheaply a no-op when nothing was committed),
        or a fresh handle if the log was cut past it (a purge's `expunge` removes entries
        older than its checkpoint). The next entry is then missing as on a quiet table: a
        writer taking that for current would commit a version number already used, a reader
        would miss every commit since. So a missing next entry is followed by a look at the
        snapshot's own (a second `stat` or `HEAD`, only while the table is quiet)."""
        if self._files.exists(self._entry(table.version() + 1)):
            table.update_incremental()
            return table
        if not self._files.exists(self._entry(table.version())):
            logger.info("%s: log cut past version %d; reopening", self.name, table.version())
            return self.open()
        return table

    @contextmanager
    def reading(self) -> Iterator[DeltaTable]:
        """The process's read snapshot, brought up to date; held under the read lock. A
        snapshot that cannot be brought up to date is replaced by a fresh one."""
        with self._read_lock, delta_errors("read"):
            if self._reader is not None:
                try:
                    self._reader = self._refresh(self._reader)
                except (DeltaError, OSError) as error:
                    logger.info("reopening %s: its snapshot is gone (%s)", self.name, error)
                    self._reader = None
            if self._reader is None:
                self._reader = self.open()
            yield self._reader

    def forget_snapshot(self) -> None:
        """Drop the read snapshot (a read of it failed): the next read opens the table."""
        with self._read_lock:
            self._reader = None

    def version(self, *, verify: bool = False) -> int:
        """The latest version; `verify` opens the table afresh, so a broken table shows."""
        if verify:
            with delta_errors("open"):
                return self.open().version()
        with self.reading() as table:
            return table.version()

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The table's commits, newest first (`DeltaTable.history`)."""
        with delta_errors("read"):
            return self.open().history(limit)

    def query(self, sql: str, *others: DeltaLogTable) -> Table:
        """Run `sql` over this table and `others`, each registered under its name, from
        their current snapshots; retried once on fresh snapshots if a snapshot went stale."""
        for attempt in (1, 2):
            builder = QueryBuilder()
            for table in (self, *others):
                with table.reading() as snapshot:
                    builder.register(table.name, snapshot)
            try:
                return run_query(builder, sql)
            except StorageUnavailable:
                if attempt == 2:
                    raise
                for table in (self, *others):
                    table.forget_snapshot()
        raise AssertionError("unreachable")

    # -- writing -----------------------------------------------------------------------------

    def append_batch(self, data: Table) -> tuple[int, int]:
        """Commit `data` as one table version; returns (version before, version after).

        Retries lost commit races with backoff. Raises `CommitOutcomeUnknown` when the
        store fails so that whether the rows landed cannot be told, and `StorageUnavailable`
        when they certainly did not.
        """
        with self._write_lock:
            self._batches += 1
            sequence = self._batches
            commit = CommitProperties(
                app_transactions=[Transaction(app_id=self._app_id, version=sequence)],
                max_commit_retries=DELTA_RS_COMMIT_RETRIES,
            )
            deadline = time.monotonic() + COMMIT_DEADLINE_SECONDS
            for attempt in itertools.count(1):
                writer = self._open_writer()
                before = writer.version()
                try:
                    write_deltalake(
                        writer,
                        data,
                        mode="append",
                        commit_properties=commit,
                        post_commithook_properties=NO_COMMIT_HOOKS,
                    )
                except CommitFailedError as error:
                    if self._landed(sequence):
                        break
                    if time.monotonic() > deadline:
                        raise StorageUnavailable(f"the {self.name} table is too busy") from error
                    logger.debug("commit race lost (attempt %d); retrying", attempt)
                    time.sleep(min(0.5, 0.005 * 2**attempt) * random.uniform(0.5, 1.5))  # noqa: S311
                except (DeltaError, OSError) as error:
                    if self._landed(sequence):
                        break
                    raise StorageUnavailable(
                        f"could not commit to the {self.name} table"
                    ) from error
                else:
                    break
            assert self._writer is not None
            after = self._writer.version()
        if self.location.local_root is not None:
            self._sync_local_versions(before + 1, after)
        return before, after

    def merge_new(self, data: Table, key: str) -> None:
        """Insert the rows of `data` whose `key` the table does not hold yet (idempotent by
        the key; a concurrent merge of the same key is retried by delta-rs and then finds
        it)."""
        with self._write_lock, delta_errors("merge"):
            writer = self._open_writer()
            before = writer.version()
            (
                writer.merge(
                    data,
                    predicate=f"t.{key} = s.{key}",
                    source_alias="s",
                    target_alias="t",
                    commit_properties=CommitProperties(max_commit_retries=DELTA_RS_COMMIT_RETRIES),
                    post_commithook_properties=NO_COMMIT_HOOKS,
                )
                .when_not_matched_insert_all()
                .execute()
            )
            after = writer.version()
        if self.location.local_root is not None and after > before:
            self._sync_local_versions(before + 1, after)

    def delete(self, predicate: str) -> int:
        """Delete the rows matching `predicate` (fixed SQL of the caller); returns the version
        after. An append-only table is opened for the delete and closed again at once (a
        delete interrupted in between leaves it open: the next purge closes it)."""
        with self._write_lock, delta_errors("delete"):
            writer = self._open_writer()
            before = writer.version()
            append_only = self._properties.get(APPEND_ONLY) == "true"
            if append_only:
                self._set_properties(writer, {APPEND_ONLY: "false"})
            writer.delete(
                predicate,
                commit_properties=CommitProperties(max_commit_retries=DELTA_RS_COMMIT_RETRIES),
                post_commithook_properties=NO_COMMIT_HOOKS,
            )
            if append_only:
                self._set_properties(writer, {APPEND_ONLY: "true"})
            after = writer.version()
        if self.location.local_root is not None and after > before:
            self._sync_local_versions(before + 1, after)
        return after

    def _set_properties(self, writer: DeltaTable, properties: dict[str, str]) -> None:
        writer.alter.set_table_properties(
            properties,
            commit_properties=CommitProperties(max_commit_retries=DELTA_RS_COMMIT_RETRIES),
        )

    def _open_writer(self) -> DeltaTable:
        try:
            if self._writer is None:
                self._writer = self.open()
            else:
                self._writer = self._refresh(self._writer)
        except StorageUnavailable:
            self._writer = None
            raise
        except (DeltaError, OSError) as error:
            self._writer = None
            raise StorageUnavailable(f"cannot open the {self.name} table") from error
        return self._writer

    def _landed(self, sequence: int) -> bool:
        """Whether batch `sequence` of this process is in the table (asks the log)."""
        try:
            assert self._writer is not None
            self._writer.update_incremental()
            landed = (self._writer.transaction_version(self._app_id) or 0) >= sequence
        except (DeltaError, OSError) as error:
            self._writer = None
            raise CommitOutcomeUnknown(f"the {self.name} table cannot be read back") from error
        return landed

    # -- maintenance -------------------------------------------------------------------------

    def compact(self) -> dict[str, Any] | None:
        """Merge small files; None when a concurrent compaction won (nothing to do then)."""
        with delta_errors("compact"):
            table = self.open()
            before = table.version()
            try:
                metrics: dict[str, Any] = table.optimize.compact(
                    target_size=COMPACT_TARGET_BYTES,
                    max_concurrent_tasks=1,
                    post_commithook_properties=NO_COMMIT_HOOKS,
                    commit_properties=CommitProperties(max_commit_retries=DELTA_RS_COMMIT_RETRIES),
                )
            except CommitFailedError:
                logger.info("compaction skipped: a concurrent one removed the same files")
                return None
            if self.location.local_root is not None and table.version() > before:
                self._sync_local_versions(before + 1, table.version())
            return metrics

    def checkpoint(self) -> int:
        """Write a checkpoint of the latest version, then drop log entries past retention."""
        with delta_errors("checkpoint"):
            table = self.open()
            self._checkpoint(table)
            table.cleanup_metadata()
            return table.version()

    def _checkpoint(self, table: DeltaTable) -> None:
        table.create_checkpoint()
        if self.location.local_root is not None:
            log = self.location.local_root / self.name / LOG_DIR
            checkpoint = log / f"{table.version():020d}.checkpoint.parquet"
            if checkpoint.exists():
                fsync_file(checkpoint)
            fsync_file(log / "_last_checkpoint")
            fsync_directory(log)

    def expunge(self, log_grace_seconds: int) -> dict[str, object]:
        """After a purge's delete: no data file still holds a deleted row, and no older
        version can be read. Every data file no longer in the latest version is vacuumed at
        once (no retention), the log is cut at a new checkpoint and every older checkpoint
        removed. Log entries younger than `log_grace_seconds` stay, so that a replica
        committing at this very moment never reuses a version number the cut freed; without
        a checkpoint below them they cannot be read as a version (their statistics still name
        the first and last ids of the files they added, until the log's retention removes
        them). Time travel before this point ends, for every engagement: the risk a purge
        takes (docs/operations.md). Readers of an older snapshot reopen (`_refresh`)."""
        with self._write_lock, delta_errors("expunge"):
            table = self.open()
            removed = table.vacuum(
                retention_hours=0,
                dry_run=False,
                enforce_retention_duration=False,
                full=True,
                post_commithook_properties=NO_COMMIT_HOOKS,
            )
            table.update_incremental()
            retention = table.metadata().configuration.get(LOG_RETENTION)
            self._set_properties(table, {LOG_RETENTION: f"interval {log_grace_seconds} seconds"})
            self._checkpoint(table)
            checkpointed = table.version()
            time.sleep(0.01)  # entries written this very millisecond are not older than "now"
            table.cleanup_metadata()
            old_checkpoints = [
                name
                for name in self._files.names_under(self._log)
                if ".checkpoint" in name and int(name.rsplit("/", 1)[-1][:20]) < checkpointed
            ]
            for name in old_checkpoints:
                self._files.remove(name)
            self._set_properties(table, {LOG_RETENTION: retention or DEFAULT_LOG_RETENTION})
            if self.location.local_root is not None:
                self._sync_local_versions(checkpointed + 1, table.version())
            self._writer = None
            return {
                "version": table.version(),
                "oldest_readable_version": checkpointed,
                "data_files_vacuumed": len(removed),
                "checkpoints_removed": len(old_checkpoints),
            }

    # -- local durability --------------------------------------------------------------------

    def _sync_local_versions(self, first: int, last: int) -> None:
        """fsync the log entries `first..last` and the data files they add.

        delta-rs writes local files without fsync; a `201` promises that the row survives
        power loss, as the local backend's does.
        """
        assert self.location.local_root is not None
        root = self.location.local_root / self.name
        log = root / LOG_DIR
        directories = {log}
        for version in range(first, last + 1):
            entry = log / f"{version:020d}.json"
            for line in entry.read_text(encoding="utf-8").splitlines():
                added = json.loads(line).get("add") if line.strip() else None
                if added:
                    data_file = root / unquote(added["path"])
                    fsync_file(data_file)
                    directories.add(data_file.parent)
            fsync_file(entry)
        directories.add(root)
        for directory in directories:
            fsync_directory(directory)


@contextmanager
def delta_errors(action: str) -> Iterator[None]:
    """deltalake reports store failures as DeltaError or OSError: a 503 to the client."""
    try:
        yield
    except TableNotFoundError as error:
        raise StorageUnavailable(f"a table is missing at the base path ({action})") from error
    except (DeltaError, OSError) as error:
        # The store's message (URLs, paths) goes to the log, not to the client.
        logger.warning("Delta table %s failed: %s", action, error)
        raise StorageUnavailable(f"Delta table {action} failed") from error


def run_query(query: QueryBuilder, sql: str) -> Table:
    with delta_errors("query"):
        batches = query.execute(sql)
    try:
        return batches.read_all()
    except Exception as error:  # the result stream raises a bare Exception for engine errors
        # (a data file gone under a stale snapshot, a store that failed mid-read)
        logger.warning("Delta query failed while reading its result: %s", error)
        raise StorageUnavailable("Delta table query failed") from error


def rows_of(table: Table, columns: Sequence[str]) -> list[dict[str, Any]]:
    """A query result as one dict per row."""
    values = [table.column(name).to_pylist() for name in columns]
    return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]


def arrow_rows(schema: Schema, rows: Sequence[Mapping[str, Any]]) -> Table:
    """Rows (dicts) as an Arrow table of `schema`."""
    arrays = [Array([row[name] for row in rows], schema.field(name).type) for name in schema.names]
    return Table.from_arrays(arrays, schema=schema)


def sql_text(value: str) -> str:
    """A SQL string literal (DataFusion takes no parameters). Values reaching here are
    validated ids, yet quote them anyway."""
    if any(ord(char) < 32 for char in value):
        raise InvalidInput("value contains control characters")
    return "'" + value.replace("'", "''") + "'"


def cursor_text(value: str) -> str:
    try:
        return sql_text(value)
    except InvalidInput as error:
        raise InvalidCursor("cursor is not one this service issued") from error
