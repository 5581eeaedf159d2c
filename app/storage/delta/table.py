"""The `evidence_metadata` Delta table: create, append, page, read as of a version, maintain.

Layout, chosen by measurement (docs/backends.md, "Delta Lake backend"):
- Partitioned by `engagement_id`: listing one engagement reads that engagement's files only,
  so its cost does not grow with the rest of the table.
- Append-only (`delta.appendOnly`): evidence rows are never updated (a withdrawal is a row of
  `evidence_withdrawals`, joined in reads); only a purge deletes, opening the table for its
  delete alone (`DeltaLogTable.delete`). Compaction (which changes no data) is allowed.
- Statistics only for `id` and `stored_at`, the columns reads prune on, which keeps each
  commit and checkpoint small.

Snapshots, idempotent appends, fsyncs and maintenance are every kmflow table's
(`log_table.DeltaLogTable`); this module adds the paged reads and their file statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from arro3.core import DataType, Field, Schema, Table
from deltalake import DeltaTable, QueryBuilder

from app.storage.delta.lifecycle_tables import WITHDRAWALS_TABLE, withdrawals_table
from app.storage.delta.location import TABLE_NAME, DeltaLocation
from app.storage.delta.log_table import (
    DeltaLogTable,
    LogFiles,
    arrow_rows,
    cursor_text,
    delta_errors,
    rows_of,
    run_query,
    sql_text,
)
from app.storage.errors import CommitOutcomeUnknown, StorageUnavailable
from app.storage.pagination import decode_cursor, record_page
from app.storage.records import (
    RECORD_COLUMNS,
    WITHDRAWN_FIELDS,
    EvidenceRecord,
    RecordPage,
    is_stored_at,
    record_from_columns,
)

__all__ = ["CommitOutcomeUnknown", "EvidenceTable"]

logger = logging.getLogger(__name__)

COLUMNS = RECORD_COLUMNS
SCHEMA = Schema(
    [
        Field(name, DataType.int64() if name == "size_bytes" else DataType.string(), nullable)
        for name, nullable in zip(COLUMNS, [False] * 7 + [True], strict=True)
    ]
)
PARTITION_COLUMN = "engagement_id"
# A record with its withdrawal, if any (null columns for a live record); `{engagement}` is
# the quoted engagement id, so the join reads that engagement's withdrawals only.
JOINED = (
    ", ".join(f"m.{name}" for name in COLUMNS)
    + ", "
    + ", ".join(f"w.{name}" for name in WITHDRAWN_FIELDS)
    + f" FROM {TABLE_NAME} AS m LEFT JOIN {WITHDRAWALS_TABLE} AS w"
    + " ON w.id = m.id AND w.engagement_id = {engagement}"
)
# The same where a base has no `evidence_withdrawals` yet (made by an earlier kmflow, read by a
# dry run, which creates nothing): no record can be withdrawn there.
UNJOINED = (
    ", ".join(f"m.{name}" for name in COLUMNS)
    + ", "
    + ", ".join(f"CAST(NULL AS VARCHAR) AS {name}" for name in WITHDRAWN_FIELDS)
    + f" FROM {TABLE_NAME} AS m"
)


def table_properties(log_retention_days: int) -> dict[str, str]:
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


class EvidenceTable(DeltaLogTable):
    """One process's handle on the table, and on `evidence_withdrawals` which its reads join;
    thread-safe. See the module docstring."""

    def __init__(
        self,
        location: DeltaLocation,
        files: LogFiles,
        log_retention_days: int = 30,
    ) -> None:
        super().__init__(
            location,
            TABLE_NAME,
            SCHEMA,
            partition_by=[PARTITION_COLUMN],
            properties=table_properties(log_retention_days),
            files=files,
        )
        self.withdrawals = withdrawals_table(location, files)
        self._stats_version = -1
        self._stats: dict[str, list[FileStats]] = {}
        self._withdrawn_version = -1
        self._withdrawn: dict[str, int] = {}
        self._withdrawals_exist = False

    def ensure_exists(self) -> None:
        super().ensure_exists()
        self.withdrawals.ensure_exists()
        self._withdrawals_exist = True

    def _joined(self, engagement_id: str) -> tuple[str, list[DeltaLogTable]]:
        """The SELECT list and FROM of a record with its withdrawal, and the tables it reads."""
        if not self._withdrawals_exist:
            self._withdrawals_exist = DeltaTable.is_deltatable(self.withdrawals.uri, self._options)
        if not self._withdrawals_exist:
            return UNJOINED, []
        return JOINED.format(engagement=sql_text(engagement_id)), [self.withdrawals]

    def warm_up(self) -> None:
        """Open the read and write handles and run one query, at startup.

        The query engine's first use costs ~20 MiB and tens of milliseconds once; paying it
        here keeps it out of the first request and shows at startup that reads work.
        """
        with self._write_lock:
            self._open_writer()
        self.page("kmflow-warm-up", 1, None)

    # -- reading -----------------------------------------------------------------------------

    def page(
        self,
        engagement_id: str,
        limit: int,
        cursor: str | None,
        content_hash: str | None = None,
        include_withdrawn: bool = False,
    ) -> RecordPage:
        conditions = [f"m.engagement_id = {sql_text(engagement_id)}"]
        if content_hash is not None:
            conditions.append(f"m.content_hash = {sql_text(content_hash)}")
        joined, others = self._joined(engagement_id)
        if not include_withdrawn and others:
            conditions.append("w.id IS NULL")
        cursor_at: str | None = None
        if cursor is not None:
            cursor_at, cursor_id = decode_cursor(cursor)
            at, last = cursor_text(cursor_at), cursor_text(cursor_id)
            conditions.append(f"m.stored_at <= {at} AND (m.stored_at < {at} OR m.id < {last})")
        # File statistics count every row of the engagement: no bound under another filter,
        # and tombstones left out make that many more rows to count.
        withdrawn = self._withdrawn_in(engagement_id) if others and not include_withdrawn else 0
        wanted = limit + 1 + withdrawn
        for attempt in (1, 2):
            query = QueryBuilder()
            with self.reading() as table:
                bound = (
                    None
                    if content_hash is not None
                    else self._lower_bound(table, engagement_id, wanted, cursor_at)
                )
                query.register(TABLE_NAME, table)
            for other in others:
                with other.reading() as snapshot:
                    query.register(other.name, snapshot)
            where = list(conditions)
            if bound is not None:
                where.append(f"m.stored_at >= {sql_text(bound)}")
            sql = (
                f"SELECT {joined} "
                f"WHERE {' AND '.join(where)} "
                f"ORDER BY m.stored_at DESC, m.id DESC LIMIT {int(limit) + 1}"
            )
            try:
                rows = _records(run_query(query, sql))
                break
            except StorageUnavailable:
                if attempt == 2:
                    raise
                self.forget_snapshot()  # stale after another process's purge: read afresh
                self.withdrawals.forget_snapshot()
        return record_page(rows, limit)

    def get(
        self, engagement_id: str, evidence_id: str, version: int | None = None
    ) -> EvidenceRecord | None:
        """One record (a tombstone if withdrawn), from the latest snapshot; or the row as
        the table held it at `version`, without its withdrawal."""
        condition = (
            f"m.engagement_id = {sql_text(engagement_id)} AND m.id = {sql_text(evidence_id)}"
        )
        if version is not None:
            with delta_errors("read"):
                query = QueryBuilder().register(TABLE_NAME, self.open(version))
            sql = f"SELECT {', '.join(f'm.{name}' for name in COLUMNS)} FROM {TABLE_NAME} AS m "  # noqa: S608
            rows = _records(run_query(query, sql + f"WHERE {condition}"))
            return rows[0] if rows else None
        joined, others = self._joined(engagement_id)
        rows = _records(self.query(f"SELECT {joined} WHERE {condition}", *others))
        return rows[0] if rows else None

    def engagements(self) -> list[str]:
        result = self.query(f"SELECT DISTINCT engagement_id FROM {TABLE_NAME}")  # noqa: S608
        return [str(value) for value in result.column("engagement_id").to_pylist()]

    def _withdrawn_in(self, engagement_id: str) -> int:
        """How many records of the engagement are withdrawn (counted once per version of
        `evidence_withdrawals`)."""
        with self.withdrawals.reading() as table:
            version = table.version()
        if version != self._withdrawn_version:
            result = self.withdrawals.query(
                f"SELECT engagement_id, COUNT(*) AS n FROM {WITHDRAWALS_TABLE} "  # noqa: S608
                "GROUP BY engagement_id"
            )
            counts = rows_of(result, ["engagement_id", "n"])
            self._withdrawn = {str(row["engagement_id"]): int(row["n"]) for row in counts}
            self._withdrawn_version = version
        return self._withdrawn.get(engagement_id, 0)

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
        Raises `CommitOutcomeUnknown` when whether they landed cannot be told."""
        return self.append_batch(_to_arrow(records))


def _records(table: Table) -> list[EvidenceRecord]:
    names = [*COLUMNS, *WITHDRAWN_FIELDS]
    present = [name for name in names if name in table.column_names]
    return [record_from_columns(row) for row in rows_of(table, present)]


def _to_arrow(records: Sequence[EvidenceRecord]) -> Table:
    return arrow_rows(SCHEMA, [record.model_dump() for record in records])


def _exact_timestamp(value: object) -> bool:
    """Statistics may be truncated; only a complete `stored_at` can bound a page."""
    return isinstance(value, str) and is_stored_at(value)
