"""The `evidence_metadata` Delta table: create, append, page, read as of a version, maintain.

Layout, chosen by measurement (docs/backends.md, "Delta Lake backend"):
- Partitioned by `engagement_id`: listing one engagement reads that engagement's files only,
  so its cost does not grow with the rest of the table.
- Append-only (`delta.appendOnly`): evidence rows are never updated or deleted; compaction
  (which changes no data) is still allowed.
- Statistics only for `id` and `stored_at`, the columns reads prune on, which keeps each
  commit and checkpoint small.

Reads keep one snapshot per process and refresh it only when the next log entry exists (one
`stat` or `HEAD`): a refresh lists the whole `_delta_log` directory on a local filesystem,
which costs about 1 ms per 1,000 retained versions, so quiet tables are never refreshed.

Appends are idempotent: each carries a Delta `txn` action (this process's app id, a batch
sequence number), so after an error whose outcome is unknown the table itself says whether
the batch landed, and a retry never commits a row twice.

One class for the one table, longer than most modules: its reads, appends and maintenance
share the snapshot, the writer and the transaction ids, so they are read together.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from arro3.core import Array, DataType, Field, Schema, Table
from deltalake import (
    CommitProperties,
    DeltaTable,
    PostCommitHookProperties,
    QueryBuilder,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import Transaction

from app.storage.delta.location import LOG_DIR, TABLE_NAME, DeltaLocation
from app.storage.errors import (
    CommitOutcomeUnknown,
    InvalidCursor,
    InvalidInput,
    StorageUnavailable,
)
from app.storage.fsync import fsync_directory, fsync_file
from app.storage.pagination import decode_cursor, encode_cursor
from app.storage.records import RECORD_COLUMNS, EvidenceRecord, RecordPage, is_stored_at

logger = logging.getLogger(__name__)

COLUMNS = RECORD_COLUMNS
SCHEMA = Schema(
    [
        Field(name, DataType.int64() if name == "size_bytes" else DataType.string(), nullable)
        for name, nullable in zip(COLUMNS, [False] * 7 + [True], strict=True)
    ]
)
PARTITION_COLUMN = "engagement_id"

# Compaction merges small files into files of about this size (~1,500 rows with delta-rs's
# default ZSTD). A first page reads the newest one or two, so they are kept small enough to
# read in about a millisecond; larger targets made list latency grow with the engagement.
COMPACT_TARGET_BYTES = 128 * 1024

# A commit that keeps losing races is retried with jittered backoff for this long.
COMMIT_DEADLINE_SECONDS = 30.0
DELTA_RS_COMMIT_RETRIES = 50

# Checkpoints and log cleanup run on kmflow's maintenance policy, never inside an upload.
NO_COMMIT_HOOKS = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)


def table_properties(log_retention_days: int) -> dict[str, str | None]:
    return {
        "delta.appendOnly": "true",
        "delta.dataSkippingStatsColumns": "id,stored_at",
        "delta.logRetentionDuration": f"interval {log_retention_days} days",
        # Writer ids of processes long gone need not stay in every checkpoint.
        "delta.setTransactionRetentionDuration": "interval 7 days",
    }


@dataclass(frozen=True)
class FileStats:
    """What the log says about one data file of a partition."""

    newest: str
    oldest: str
    rows: int


class EvidenceTable:
    """One process's handle on the table; thread-safe. See the module docstring."""

    def __init__(
        self,
        location: DeltaLocation,
        log_entry_exists: Callable[[str], bool],
        log_retention_days: int = 30,
    ) -> None:
        self.location = location
        self.uri = location.table_uri
        self._options = location.storage_options()
        self._log_entry_exists = log_entry_exists
        self._log_retention_days = log_retention_days
        self._app_id = f"kmflow-{uuid.uuid4().hex}"
        self._batches = 0
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._reader: DeltaTable | None = None
        self._writer: DeltaTable | None = None
        self._stats_version = -1
        self._stats: dict[str, list[FileStats]] = {}

    # -- opening -----------------------------------------------------------------------------

    def ensure_exists(self) -> None:
        """Create the table unless it exists; safe when several workers start at once."""
        try:
            DeltaTable.create(
                self.uri,
                SCHEMA,
                mode="ignore",
                partition_by=[PARTITION_COLUMN],
                name=TABLE_NAME,
                configuration=table_properties(self._log_retention_days),
                storage_options=self._options,
                commit_properties=CommitProperties(max_commit_retries=DELTA_RS_COMMIT_RETRIES),
            )
        except (DeltaError, OSError) as error:
            # Lost a creation race: fine if the winner's table is there now.
            if not DeltaTable.is_deltatable(self.uri, self._options):
                raise StorageUnavailable(f"cannot create the {TABLE_NAME} table") from error
        if self.location.local_root is not None and self.open().version() == 0:
            self._sync_local_versions(0, 0)

    def warm_up(self) -> None:
        """Open the read and write handles and run one query, at startup.

        The query engine's first use costs ~20 MiB and tens of milliseconds once; paying it
        here keeps it out of the first request and shows at startup that reads work.
        """
        with self._write_lock:
            self._open_writer()
        self.page("kmflow-warm-up", 1, None)

    def open(self, version: int | None = None) -> DeltaTable:
        """A new handle on the table (at `version`, or the latest)."""
        try:
            return DeltaTable(self.uri, version=version, storage_options=self._options)
        except TableNotFoundError as error:
            raise StorageUnavailable(f"no {TABLE_NAME} table at the base path") from error
        except (DeltaError, OSError) as error:
            if version is not None:
                raise InvalidInput(
                    f"version {version} is not in the table's retained history"
                ) from error
            raise StorageUnavailable(f"cannot open the {TABLE_NAME} table") from error

    def _next_version_exists(self, table: DeltaTable) -> bool:
        return self._log_entry_exists(f"{TABLE_NAME}/{LOG_DIR}/{table.version() + 1:020d}.json")

    def _refresh(self, table: DeltaTable, *, always: bool = False) -> None:
        """Bring `table` to the latest version (cheaply a no-op when nothing was committed)."""
        if always or self._next_version_exists(table):
            table.update_incremental()

    @contextmanager
    def _reading(self) -> Iterator[DeltaTable]:
        """The process's read snapshot, brought up to date; held under the read lock."""
        with self._read_lock, _delta_errors("read"):
            if self._reader is None:
                self._reader = self.open()
            else:
                self._refresh(self._reader)
            yield self._reader

    def version(self, *, verify: bool = False) -> int:
        """The latest version; `verify` opens the table afresh, so a broken table shows."""
        if verify:
            with _delta_errors("open"):
                return self.open().version()
        with self._reading() as table:
            return table.version()

    # -- reading -----------------------------------------------------------------------------

    def page(
        self, engagement_id: str, limit: int, cursor: str | None, content_hash: str | None = None
    ) -> RecordPage:
        conditions = [f"engagement_id = {_sql_text(engagement_id)}"]
        if content_hash is not None:
            conditions.append(f"content_hash = {_sql_text(content_hash)}")
        cursor_at: str | None = None
        if cursor is not None:
            cursor_at, cursor_id = decode_cursor(cursor)
            at, last = _cursor_text(cursor_at), _cursor_text(cursor_id)
            conditions.append(f"stored_at <= {at} AND (stored_at < {at} OR id < {last})")
        with self._reading() as table:
            # File statistics count every row of the engagement: no bound under another filter.
            bound = (
                None
                if content_hash is not None
                else self._lower_bound(table, engagement_id, limit + 1, cursor_at)
            )
            query = QueryBuilder().register(TABLE_NAME, table)
        if bound is not None:
            conditions.append(f"stored_at >= {_sql_text(bound)}")
        sql = (
            f"SELECT {', '.join(COLUMNS)} FROM {TABLE_NAME} WHERE {' AND '.join(conditions)} "  # noqa: S608
            f"ORDER BY stored_at DESC, id DESC LIMIT {int(limit) + 1}"
        )
        rows = _records(_run(query, sql))
        items = rows[:limit]
        more = len(rows) > limit
        next_cursor = encode_cursor(items[-1].stored_at, items[-1].id) if more else None
        return RecordPage(items=items, next_cursor=next_cursor)

    def get(
        self, engagement_id: str, evidence_id: str, version: int | None = None
    ) -> EvidenceRecord | None:
        """One record, from the latest snapshot or as the table was at `version`."""
        if version is None:
            with self._reading() as table:
                query = QueryBuilder().register(TABLE_NAME, table)
        else:
            with _delta_errors("read"):
                query = QueryBuilder().register(TABLE_NAME, self.open(version))
        sql = (
            f"SELECT {', '.join(COLUMNS)} FROM {TABLE_NAME} "  # noqa: S608
            f"WHERE engagement_id = {_sql_text(engagement_id)} AND id = {_sql_text(evidence_id)}"
        )
        rows = _records(_run(query, sql))
        return rows[0] if rows else None

    def engagements(self) -> list[str]:
        with self._reading() as table:
            query = QueryBuilder().register(TABLE_NAME, table)
        result = _run(query, f"SELECT DISTINCT engagement_id FROM {TABLE_NAME}")  # noqa: S608
        return [str(value) for value in result.column("engagement_id").to_pylist()]

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The table's commits, newest first (`DeltaTable.history`)."""
        with _delta_errors("read"):
            return self.open().history(limit)

    def _lower_bound(
        self, table: DeltaTable, engagement_id: str, wanted: int, cursor_at: str | None
    ) -> str | None:
        """A `stored_at` that the newest `wanted` rows of the page are known to reach.

        From the log's per-file statistics alone: newest files first, count the rows that
        certainly qualify until there are `wanted`; every row of the page is then at least
        as new as the oldest row of those files. The query adds `stored_at >= bound`, which
        lets DataFusion skip every older file, so a page costs the same however large the
        engagement grows. None (no bound, read the partition) when statistics are missing.
        """
        files = self._partition_stats(table).get(engagement_id)
        if not files:
            return None
        bound: str | None = None
        counted = 0
        for file in sorted(files, key=lambda file: file.newest, reverse=True):
            if cursor_at is not None and file.oldest > cursor_at:
                continue  # entirely newer than the cursor: nothing of it is on this page
            bound = file.oldest if bound is None else min(bound, file.oldest)
            if cursor_at is None or file.newest < cursor_at:
                counted += file.rows
            if counted >= wanted:
                return bound
        return None

    def _partition_stats(self, table: DeltaTable) -> dict[str, list[FileStats]]:
        """Per-engagement file statistics of the snapshot, computed once per version."""
        if self._stats_version == table.version():
            return self._stats
        actions = table.get_add_actions(flatten=True)
        names = set(actions.column_names)
        needed = {f"partition.{PARTITION_COLUMN}", "min.stored_at", "max.stored_at"}
        stats: dict[str, list[FileStats]] = {}
        if needed <= names:
            columns = zip(
                actions.column(f"partition.{PARTITION_COLUMN}").to_pylist(),
                actions.column("max.stored_at").to_pylist(),
                actions.column("min.stored_at").to_pylist(),
                actions.column("num_records").to_pylist(),
                strict=True,
            )
            unusable: set[str] = set()
            for engagement, newest, oldest, rows in columns:
                if _exact_timestamp(newest) and _exact_timestamp(oldest) and rows is not None:
                    stats.setdefault(engagement, []).append(FileStats(newest, oldest, rows))
                else:
                    unusable.add(engagement)
            for engagement in unusable:
                stats.pop(engagement, None)
        self._stats, self._stats_version = stats, table.version()
        return stats

    # -- writing -----------------------------------------------------------------------------

    def append(self, records: Sequence[EvidenceRecord]) -> tuple[int, int]:
        """Commit `records` as one table version; returns (version before, version after).

        Retries lost commit races with backoff. Raises `CommitOutcomeUnknown` when the
        store fails so that whether the rows landed cannot be told, and `StorageUnavailable`
        when they certainly did not.
        """
        data = _to_arrow(records)
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
                        raise StorageUnavailable("the metadata table is too busy") from error
                    logger.debug("commit race lost (attempt %d); retrying", attempt)
                    time.sleep(min(0.5, 0.005 * 2**attempt) * random.uniform(0.5, 1.5))  # noqa: S311
                except (DeltaError, OSError) as error:
                    if self._landed(sequence):
                        break
                    raise StorageUnavailable("could not commit to the metadata table") from error
                else:
                    break
            assert self._writer is not None
            after = self._writer.version()
        if self.location.local_root is not None:
            self._sync_local_versions(before + 1, after)
        return before, after

    def _open_writer(self) -> DeltaTable:
        try:
            if self._writer is None:
                self._writer = self.open()
            else:
                self._refresh(self._writer)
        except StorageUnavailable:
            self._writer = None
            raise
        except (DeltaError, OSError) as error:
            self._writer = None
            raise StorageUnavailable("cannot open the metadata table") from error
        return self._writer

    def _landed(self, sequence: int) -> bool:
        """Whether batch `sequence` of this process is in the table (asks the log)."""
        try:
            assert self._writer is not None
            self._writer.update_incremental()
            landed = (self._writer.transaction_version(self._app_id) or 0) >= sequence
        except (DeltaError, OSError) as error:
            self._writer = None
            raise CommitOutcomeUnknown("the metadata table cannot be read back") from error
        return landed

    # -- maintenance -------------------------------------------------------------------------

    def compact(self) -> dict[str, Any] | None:
        """Merge small files; None when a concurrent compaction won (nothing to do then)."""
        with _delta_errors("compact"):
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
        with _delta_errors("checkpoint"):
            table = self.open()
            table.create_checkpoint()
            if self.location.local_root is not None:
                log = self.location.local_root / TABLE_NAME / LOG_DIR
                checkpoint = log / f"{table.version():020d}.checkpoint.parquet"
                if checkpoint.exists():
                    fsync_file(checkpoint)
                fsync_file(log / "_last_checkpoint")
                fsync_directory(log)
            table.cleanup_metadata()
            return table.version()

    # -- local durability --------------------------------------------------------------------

    def _sync_local_versions(self, first: int, last: int) -> None:
        """fsync the log entries `first..last` and the data files they add.

        delta-rs writes local files without fsync; a `201` promises that the row survives
        power loss, as the local backend's does.
        """
        assert self.location.local_root is not None
        root = self.location.local_root / TABLE_NAME
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
def _delta_errors(action: str) -> Iterator[None]:
    """deltalake reports store failures as DeltaError or OSError: a 503 to the client."""
    try:
        yield
    except TableNotFoundError as error:
        raise StorageUnavailable(f"no {TABLE_NAME} table at the base path") from error
    except (DeltaError, OSError) as error:
        # The store's message (URLs, paths) goes to the log, not to the client.
        logger.warning("metadata table %s failed: %s", action, error)
        raise StorageUnavailable(f"metadata table {action} failed") from error


def _run(query: QueryBuilder, sql: str) -> Table:
    with _delta_errors("query"):
        return query.execute(sql).read_all()


def _records(table: Table) -> list[EvidenceRecord]:
    columns = [table.column(name).to_pylist() for name in COLUMNS]
    return [
        EvidenceRecord(**dict(zip(COLUMNS, values, strict=True)))
        for values in zip(*columns, strict=True)
    ]


def _to_arrow(records: Sequence[EvidenceRecord]) -> Table:
    rows = [record.model_dump() for record in records]
    arrays = [Array([row[name] for row in rows], SCHEMA.field(name).type) for name in COLUMNS]
    return Table.from_arrays(arrays, schema=SCHEMA)


def _sql_text(value: str) -> str:
    """A SQL string literal. Values reaching here are validated ids, yet quote them anyway."""
    if any(ord(char) < 32 for char in value):
        raise InvalidInput("value contains control characters")
    return "'" + value.replace("'", "''") + "'"


def _cursor_text(value: str) -> str:
    try:
        return _sql_text(value)
    except InvalidInput as error:
        raise InvalidCursor("cursor is not one this service issued") from error


def _exact_timestamp(value: object) -> bool:
    """Statistics may be truncated; only a complete `stored_at` can bound a page."""
    return isinstance(value, str) and is_stored_at(value)
