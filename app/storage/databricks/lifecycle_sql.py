"""The evidence lifecycle's tables beside `evidence_metadata`, and every SQL text they take:
`evidence_withdrawals` (tombstones), `engagement_holds` and `evidence_audit` (append-only),
and a purge's DELETEs and the maintenance that makes them final.

The rule of `sql`: values travel as named parameters; only backtick-quoted names (validated
by Settings), marker names made up here and Python ints are formatted into the text.

Statements per operation, on a warehouse where each costs hundreds of milliseconds and a
commit a second or more: a withdrawal is a SELECT of its hold, one of its record, and one
MERGE; a hold change one statement; audit events one INSERT per batch of up to 255 events,
shared by every request of the batch (`audit_trail`), never one per request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

from app.storage.audit import AUDIT_COLUMNS, AuditEvent, AuditPage, audit_page, unique_events
from app.storage.databricks.sql import (
    FIELD_SEPARATOR,
    MAX_STATEMENT_PARAMETERS,
    SqlValue,
    StatementRunner,
    quote_name,
)
from app.storage.errors import InvalidInput
from app.storage.holds import HOLD_COLUMNS, Hold
from app.storage.pagination import decode_cursor
from app.storage.records import WITHDRAWAL_COLUMNS, WITHDRAWN_FIELDS, Tombstone

logger = logging.getLogger(__name__)

WITHDRAWALS_TABLE = "evidence_withdrawals"
HOLDS_TABLE = "engagement_holds"
AUDIT_TABLE = "evidence_audit"
MAX_AUDIT_ROWS = MAX_STATEMENT_PARAMETERS  # one parameter per packed event
RETENTION_PROPERTY = "delta.deletedFileRetentionDuration"
# What a purge sets for its VACUUM; a value like this left behind is the purge's own (a run
# interrupted between its ALTERs), and the next purge unsets it rather than restore it.
NO_RETENTION = "interval 0 hours"
# A retention as Delta writes one; only such a value, read back from the table, is formatted
# into an ALTER (a property value cannot be a parameter marker).
_RETENTION_VALUE = re.compile(r"interval [0-9]{1,6} (?:second|minute|hour|day|week)s?")


def create_withdrawals_statement(table: str) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {table} (
    id                 STRING  NOT NULL,
    engagement_id      STRING  NOT NULL,
    withdrawn_at       STRING  NOT NULL,
    withdrawn_by       STRING  NOT NULL,
    withdrawal_reason  STRING  NOT NULL,
    CONSTRAINT pk_evidence_withdrawals PRIMARY KEY (id)
)
USING DELTA"""


def create_holds_statement(table: str) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {table} (
    engagement_id  STRING  NOT NULL,
    held_at        STRING  NOT NULL,
    held_by        STRING  NOT NULL,
    reason         STRING  NOT NULL,
    CONSTRAINT pk_engagement_holds PRIMARY KEY (engagement_id)
)
USING DELTA"""


def create_audit_statement(table: str) -> str:
    """Append-only: MODIFY (which INSERT needs) would otherwise allow UPDATE and DELETE."""
    return f"""CREATE TABLE IF NOT EXISTS {table} (
    id             STRING  NOT NULL,
    occurred_at    STRING  NOT NULL,
    principal      STRING  NOT NULL,
    action         STRING  NOT NULL,
    engagement_id  STRING  NOT NULL,
    evidence_id    STRING,
    request_id     STRING,
    outcome        STRING  NOT NULL,
    detail         STRING
)
USING DELTA
TBLPROPERTIES ('delta.appendOnly' = 'true')"""


def withdrawal_join(metadata: str, withdrawals: str | None) -> str:
    """`FROM` a record with its withdrawal, if any (null columns for a live record); the
    record's columns as `m.<name>`. Without a `withdrawals` table (not made yet), an empty
    stand-in with its columns, so the same SELECT and WHERE read no withdrawals."""
    if withdrawals is None:
        nulls = ", ".join(f"CAST(NULL AS STRING) AS {name}" for name in ("id", *WITHDRAWN_FIELDS))
        withdrawals = f"(SELECT {nulls} WHERE 1 = 0)"
    return f"{metadata} AS m LEFT JOIN {withdrawals} AS w ON w.id = m.id"


WITHDRAWN_SELECT = ", ".join(f"w.{name}" for name in WITHDRAWN_FIELDS)


def _merge_one(table: str, columns: Sequence[str], key: str) -> str:
    """MERGE one row (parameters named as its columns) unless the key is there already."""
    source = ", ".join(f":{name} AS {name}" for name in columns)
    names = ", ".join(columns)
    values = ", ".join(f"s.{name}" for name in columns)
    return (  # only quoted names and column names are formatted in
        f"MERGE INTO {table} AS t USING (SELECT {source}) AS s ON t.{key} = s.{key}\n"  # noqa: S608
        f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values})"
    )


class DatabricksLifecycle:
    """The lifecycle's statements for one schema's tables; thread-safe (statements only)."""

    def __init__(self, sql: StatementRunner, catalog: str, schema: str, metadata: str) -> None:
        self.sql = sql
        self.metadata = metadata
        self.withdrawals = quote_name(catalog, schema, WITHDRAWALS_TABLE)
        self.holds = quote_name(catalog, schema, HOLDS_TABLE)
        self.audit = quote_name(catalog, schema, AUDIT_TABLE)
        # As Unity Catalog names them (`catalog.schema.table`), for its REST API.
        self.table_names = tuple(
            f"{catalog}.{schema}.{table}" for table in (WITHDRAWALS_TABLE, HOLDS_TABLE, AUDIT_TABLE)
        )

    def create_statements(self) -> list[str]:
        return [
            create_withdrawals_statement(self.withdrawals),
            create_holds_statement(self.holds),
            create_audit_statement(self.audit),
        ]

    # -- withdrawals -------------------------------------------------------------------------

    def record_withdrawal(self, tombstone: Tombstone) -> None:
        params: dict[str, SqlValue] = {
            name: getattr(tombstone, name) for name in WITHDRAWAL_COLUMNS
        }
        self.sql.run(_merge_one(self.withdrawals, WITHDRAWAL_COLUMNS, "id"), params)

    def withdrawals_of(self, evidence_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """The withdrawal columns of those ids that are withdrawn (records not in the table
        yet: pending ones); in statements of at most 255 ids."""
        found: dict[str, dict[str, str]] = {}
        for start in range(0, len(evidence_ids), MAX_STATEMENT_PARAMETERS):
            chunk = evidence_ids[start : start + MAX_STATEMENT_PARAMETERS]
            params: dict[str, SqlValue] = {f"id_{n}": value for n, value in enumerate(chunk)}
            marks = ", ".join(f":id_{n}" for n in range(len(chunk)))
            rows = self.sql.run(
                f"SELECT id, {', '.join(WITHDRAWN_FIELDS)} FROM {self.withdrawals} "  # noqa: S608
                f"WHERE id IN ({marks})",
                params,
            )
            for row in rows:
                found[str(row[0])] = dict(zip(WITHDRAWN_FIELDS, map(str, row[1:]), strict=True))
        return found

    # -- holds -------------------------------------------------------------------------------

    def hold(self, engagement_id: str) -> Hold | None:
        rows = self.sql.run(
            f"SELECT {', '.join(HOLD_COLUMNS)} FROM {self.holds} "  # noqa: S608 - quoted name
            "WHERE engagement_id = :engagement_id",
            {"engagement_id": engagement_id},
        )
        return Hold(**dict(zip(HOLD_COLUMNS, map(str, rows[0]), strict=True))) if rows else None

    def place_hold(self, hold: Hold) -> None:
        params: dict[str, SqlValue] = {name: getattr(hold, name) for name in HOLD_COLUMNS}
        self.sql.run(_merge_one(self.holds, HOLD_COLUMNS, "engagement_id"), params)

    def release_hold(self, engagement_id: str) -> None:
        self.sql.run(
            f"DELETE FROM {self.holds} WHERE engagement_id = :engagement_id",  # noqa: S608
            {"engagement_id": engagement_id},
        )

    # -- purge -------------------------------------------------------------------------------

    def delete_engagement(self, engagement_id: str) -> None:
        """The engagement's tombstones, then its records (a crash in between leaves no live
        record without its withdrawal; the purge is rerun either way)."""
        for table in (self.withdrawals, self.metadata):
            self.sql.run(
                f"DELETE FROM {table} WHERE engagement_id = :engagement_id",  # noqa: S608
                {"engagement_id": engagement_id},
            )

    def expunge(self, timeout: float) -> dict[str, object]:
        """Make the deleted rows unrecoverable from the tables' files, per table:

        1. `REORG TABLE ... APPLY (PURGE)`: a DELETE on a table with deletion vectors (the
           default for new tables on current runtimes) only marks rows deleted; this rewrites
           the files that still hold them;
        2. VACUUM with no retention, which the safety check refuses below the table's
           `delta.deletedFileRetentionDuration` (and a SQL warehouse cannot turn the check
           off), so that property is set to 0 hours for the VACUUM, then restored.

        Needs the table's ownership (or MANAGE) for the ALTERs: the runbook's grants."""
        done: dict[str, object] = {}
        for table in (self.metadata, self.withdrawals):
            self.sql.run(f"REORG TABLE {table} APPLY (PURGE)", timeout=timeout)
            before = self._retention(table)
            self.sql.run(
                f"ALTER TABLE {table} SET TBLPROPERTIES ('{RETENTION_PROPERTY}' = '{NO_RETENTION}')"
            )
            self.sql.run(f"VACUUM {table} RETAIN 0 HOURS", timeout=timeout)
            if before is None or before == NO_RETENTION:
                self.sql.run(f"ALTER TABLE {table} UNSET TBLPROPERTIES ('{RETENTION_PROPERTY}')")
            else:  # validated by `_retention`: Delta's own interval text
                self.sql.run(
                    f"ALTER TABLE {table} SET TBLPROPERTIES ('{RETENTION_PROPERTY}' = '{before}')"
                )
            done[table] = {"version": self._version(table)}
        return done

    def _retention(self, table: str) -> str | None:
        rows = self.sql.run(f"SHOW TBLPROPERTIES {table} ('{RETENTION_PROPERTY}')")
        value = str(rows[0][1]).strip().lower() if rows and len(rows[0]) > 1 else ""
        if _RETENTION_VALUE.fullmatch(value):
            return value
        if value.startswith("interval"):
            logger.warning("%s: retention %r not understood; it will be unset", table, value)
        return None  # unset: answered with a note ("does not have property"), not a value

    def _version(self, table: str) -> int | None:
        rows = self.sql.run(f"DESCRIBE HISTORY {table} LIMIT 1")
        return int(rows[0][0]) if rows else None


class DatabricksAuditStore:
    """`evidence_audit`, the backend's `AuditStore`: INSERTs of packed events (one parameter
    each, split in SQL as `sql.merge_rows_statement` does), a blind append that never
    conflicts with another replica's. A retry after an unknown outcome may store an event
    twice; reads keep one (`unique_events`)."""

    def __init__(self, lifecycle: DatabricksLifecycle, prepare: Callable[[], None]) -> None:
        """`prepare`: make sure the table exists before a write (once per process)."""
        self._sql = lifecycle.sql
        self._table = lifecycle.audit
        self._prepare = prepare

    def append(self, events: Sequence[AuditEvent]) -> None:
        self._prepare()
        for start in range(0, len(events), MAX_AUDIT_ROWS):
            sql, params = insert_audit_statement(
                self._table, events[start : start + MAX_AUDIT_ROWS]
            )
            self._sql.run(sql, params)

    def page(self, engagement_id: str, limit: int, cursor: str | None) -> AuditPage:
        where = "engagement_id = :engagement_id"
        params: dict[str, SqlValue] = {"engagement_id": engagement_id}
        if cursor is not None:
            occurred_at, event_id = decode_cursor(cursor)
            where += " AND (occurred_at > :at OR (occurred_at = :at AND id > :id))"
            params |= {"at": occurred_at, "id": event_id}
        rows = self._sql.run(
            f"SELECT {', '.join(AUDIT_COLUMNS)} FROM {self._table} WHERE {where} "  # noqa: S608
            f"ORDER BY occurred_at, id LIMIT {int(limit) + 1}",
            params,
        )
        events = unique_events(
            AuditEvent(**dict(zip(AUDIT_COLUMNS, row, strict=True))) for row in rows
        )
        return audit_page(events, limit, more=len(rows) > limit)

    def engagements(self) -> list[str]:
        rows = self._sql.run(f"SELECT DISTINCT engagement_id FROM {self._table}")  # noqa: S608
        return [str(row[0]) for row in rows]


def insert_audit_statement(
    table: str, events: Sequence[AuditEvent]
) -> tuple[str, dict[str, SqlValue]]:
    """One INSERT of up to 255 events, each one packed parameter."""
    if not 0 < len(events) <= MAX_AUDIT_ROWS:
        raise ValueError(f"an INSERT takes 1 to {MAX_AUDIT_ROWS} events, not {len(events)}")
    params: dict[str, SqlValue] = {}
    for n, event in enumerate(events):
        values = event.model_dump()
        fields = ["" if values[name] is None else str(values[name]) for name in AUDIT_COLUMNS]
        if any(FIELD_SEPARATOR in value for value in fields):
            raise InvalidInput(f"audit event {event.id} holds a control character")
        params[f"row_{n}"] = FIELD_SEPARATOR.join(fields)
    packed = "\n        UNION ALL ".join(
        f"SELECT :row_{n}" + (" AS r" if n == 0 else "") for n in range(len(events))
    )
    nullable = {"evidence_id", "request_id", "detail"}
    fields = []
    for position, name in enumerate(AUDIT_COLUMNS, start=1):
        value = f"split_part(r, chr(31), {position})"
        if name in nullable:
            value = f"NULLIF({value}, '')"
        fields.append(f"{value} AS {name}")
    columns = ", ".join(AUDIT_COLUMNS)
    sql = (  # only a quoted name and made-up marker names are formatted in
        f"INSERT INTO {table} ({columns})\nSELECT {', '.join(fields)}\n"
        f"FROM (\n        {packed}\n    ) AS packed"
    )
    return sql, params
