"""The evidence lifecycle's Delta tables beside `evidence_metadata`, with the Databricks
tables' columns (`app.storage.records`, `holds`, `audit`):

- `evidence_withdrawals`: one row per withdrawn record (merged by id: written once however
  often a withdrawal is retried), partitioned by engagement like the records;
- `engagement_holds`: one row per held engagement (merged by engagement; deleted on release);
- `evidence_audit`: the audit trail, appended in batches (idempotent: `DeltaLogTable.append`),
  partitioned by engagement and `delta.appendOnly`, compacted and checkpointed like
  `evidence_metadata`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from arro3.core import DataType, Field, Schema

from app.storage.audit import AUDIT_COLUMNS, AuditEvent, AuditPage, audit_page, unique_events
from app.storage.delta.location import DeltaLocation
from app.storage.delta.log_table import (
    APPEND_ONLY,
    LOG_RETENTION,
    DeltaLogTable,
    LogFiles,
    arrow_rows,
    cursor_text,
    rows_of,
    sql_text,
)
from app.storage.delta.maintenance import Lease, Maintenance, MaintenancePolicy
from app.storage.holds import HOLD_COLUMNS, Hold
from app.storage.pagination import decode_cursor
from app.storage.records import WITHDRAWAL_COLUMNS, Tombstone

WITHDRAWALS_TABLE = "evidence_withdrawals"
HOLDS_TABLE = "engagement_holds"
AUDIT_TABLE = "evidence_audit"
AUDIT_LEASE = f"_kmflow/maintenance.{AUDIT_TABLE}.lease"


def _text_schema(columns: Sequence[str], nullable: Iterable[str] = ()) -> Schema:
    optional = set(nullable)
    return Schema([Field(name, DataType.string(), name in optional) for name in columns])


def withdrawals_table(location: DeltaLocation, files: LogFiles) -> DeltaLogTable:
    return DeltaLogTable(
        location,
        WITHDRAWALS_TABLE,
        _text_schema(WITHDRAWAL_COLUMNS),
        partition_by=["engagement_id"],
        files=files,
    )


def record_withdrawal(table: DeltaLogTable, tombstone: Tombstone) -> None:
    row = {name: getattr(tombstone, name) for name in WITHDRAWAL_COLUMNS}
    table.merge_new(arrow_rows(table.schema, [row]), "id")


class DeltaHolds:
    """`engagement_holds`: read on every withdrawal (a small table, one file or so)."""

    def __init__(self, location: DeltaLocation, files: LogFiles) -> None:
        self.table = DeltaLogTable(location, HOLDS_TABLE, _text_schema(HOLD_COLUMNS), files=files)

    def get(self, engagement_id: str) -> Hold | None:
        result = self.table.query(
            f"SELECT {', '.join(HOLD_COLUMNS)} FROM {HOLDS_TABLE} "  # noqa: S608 - fixed names
            f"WHERE engagement_id = {sql_text(engagement_id)}"
        )
        rows = rows_of(result, HOLD_COLUMNS)
        return Hold(**min(rows, key=lambda row: row["held_at"])) if rows else None

    def place(self, hold: Hold) -> None:
        row = hold.model_dump()
        self.table.merge_new(arrow_rows(self.table.schema, [row]), "engagement_id")

    def release(self, engagement_id: str) -> None:
        self.table.delete(f"engagement_id = {sql_text(engagement_id)}")


class DeltaAuditStore:
    """`evidence_audit`, the backend's `AuditStore`."""

    def __init__(
        self,
        location: DeltaLocation,
        files: LogFiles,
        policy: MaintenancePolicy,
        lease: Lease,
        log_retention_days: int,
    ) -> None:
        self.table = DeltaLogTable(
            location,
            AUDIT_TABLE,
            _text_schema(AUDIT_COLUMNS, nullable=("evidence_id", "request_id", "detail")),
            partition_by=["engagement_id"],
            properties={
                APPEND_ONLY: "true",
                LOG_RETENTION: f"interval {log_retention_days} days",
                "delta.dataSkippingStatsColumns": "id,occurred_at",
                "delta.setTransactionRetentionDuration": "interval 7 days",
            },
            files=files,
        )
        self.maintenance = Maintenance(self.table, policy, lease, AUDIT_LEASE)

    def append(self, events: Sequence[AuditEvent]) -> None:
        rows = [event.model_dump() for event in events]
        before, after = self.table.append_batch(arrow_rows(self.table.schema, rows))
        self.maintenance.after_commit(before, after)

    def page(self, engagement_id: str, limit: int, cursor: str | None) -> AuditPage:
        conditions = [f"engagement_id = {sql_text(engagement_id)}"]
        if cursor is not None:
            occurred_at, event_id = decode_cursor(cursor)
            after, last = cursor_text(occurred_at), cursor_text(event_id)
            conditions.append(f"occurred_at >= {after} AND (occurred_at > {after} OR id > {last})")
        result = self.table.query(
            f"SELECT {', '.join(AUDIT_COLUMNS)} FROM {AUDIT_TABLE} "  # noqa: S608 - fixed names
            f"WHERE {' AND '.join(conditions)} ORDER BY occurred_at, id LIMIT {int(limit) + 1}"
        )
        rows = rows_of(result, AUDIT_COLUMNS)
        events = unique_events(AuditEvent(**row) for row in rows)
        return audit_page(events, limit, more=len(rows) > limit)

    def engagements(self) -> list[str]:
        result = self.table.query(f"SELECT DISTINCT engagement_id FROM {AUDIT_TABLE}")  # noqa: S608
        return [str(value) for value in result.column("engagement_id").to_pylist()]

    def close(self) -> None:
        self.maintenance.close()
