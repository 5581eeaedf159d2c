"""The local backend's embedded metadata index: SQLite in WAL mode, one connection per thread.

Besides `evidence_metadata` (the runbook's columns) it keeps `store_identity`: which store the
index belongs to (`app.storage.local.store_identity`), and the evidence lifecycle's tables:
`evidence_withdrawals` (tombstones), `engagement_holds` and `evidence_audit`, append-only by
its triggers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from app.storage.audit import AUDIT_COLUMNS, AuditEvent, AuditPage, audit_page
from app.storage.holds import HOLD_COLUMNS, Hold
from app.storage.local.store_identity import BINDING_SCHEMA, IndexBinding
from app.storage.pagination import decode_cursor, record_page
from app.storage.records import (
    RECORD_COLUMNS,
    WITHDRAWAL_COLUMNS,
    WITHDRAWN_FIELDS,
    EvidenceRecord,
    RecordPage,
    Tombstone,
    record_from_columns,
)
from app.storage.sqlite_db import SqliteDatabase

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS evidence_metadata (
    id             TEXT    NOT NULL PRIMARY KEY,
    engagement_id  TEXT    NOT NULL,
    file_name      TEXT    NOT NULL,
    volume_path    TEXT    NOT NULL,
    content_hash   TEXT    NOT NULL,
    size_bytes     INTEGER NOT NULL,
    stored_at      TEXT    NOT NULL,
    metadata_json  TEXT
);
CREATE INDEX IF NOT EXISTS evidence_by_engagement
    ON evidence_metadata (engagement_id, stored_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS evidence_by_content
    ON evidence_metadata (engagement_id, content_hash, stored_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS evidence_withdrawals (
    id                 TEXT NOT NULL PRIMARY KEY,
    engagement_id      TEXT NOT NULL,
    withdrawn_at       TEXT NOT NULL,
    withdrawn_by       TEXT NOT NULL,
    withdrawal_reason  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS withdrawals_by_engagement ON evidence_withdrawals (engagement_id);
CREATE TABLE IF NOT EXISTS engagement_holds (
    engagement_id  TEXT NOT NULL PRIMARY KEY,
    held_at        TEXT NOT NULL,
    held_by        TEXT NOT NULL,
    reason         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence_audit (
    id             TEXT NOT NULL PRIMARY KEY,
    occurred_at    TEXT NOT NULL,
    principal      TEXT NOT NULL,
    action         TEXT NOT NULL,
    engagement_id  TEXT NOT NULL,
    evidence_id    TEXT,
    request_id     TEXT,
    outcome        TEXT NOT NULL,
    detail         TEXT
);
CREATE INDEX IF NOT EXISTS audit_by_engagement ON evidence_audit (engagement_id, occurred_at, id);
CREATE TRIGGER IF NOT EXISTS evidence_audit_no_update BEFORE UPDATE ON evidence_audit
    BEGIN SELECT RAISE(ABORT, 'evidence_audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS evidence_audit_no_delete BEFORE DELETE ON evidence_audit
    BEGIN SELECT RAISE(ABORT, 'evidence_audit is append-only'); END;
"""
    + BINDING_SCHEMA
)

COLUMNS = ", ".join(RECORD_COLUMNS)
# A record with its withdrawal, if any (null columns for a live record).
JOINED = (
    ", ".join(f"m.{name}" for name in RECORD_COLUMNS)
    + ", "
    + ", ".join(f"w.{name}" for name in WITHDRAWN_FIELDS)
    + " FROM evidence_metadata AS m LEFT JOIN evidence_withdrawals AS w ON w.id = m.id"
)
AUDIT = ", ".join(AUDIT_COLUMNS)


class SqliteIndex:
    def __init__(self, path: Path) -> None:
        self.db = SqliteDatabase(path, SCHEMA)

    def insert(self, record: EvidenceRecord) -> None:
        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                f"INSERT INTO evidence_metadata ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                (
                    record.id,
                    record.engagement_id,
                    record.file_name,
                    record.volume_path,
                    record.content_hash,
                    record.size_bytes,
                    record.stored_at,
                    record.metadata_json,
                ),
            )

        self.db.write(insert)

    def get(self, engagement_id: str, evidence_id: str) -> EvidenceRecord | None:
        row = (
            self.db.connection()
            .execute(
                f"SELECT {JOINED} WHERE m.id = ? AND m.engagement_id = ?",
                (evidence_id, engagement_id),
            )
            .fetchone()
        )
        return record_from_columns(dict(row)) if row else None

    def page(
        self,
        engagement_id: str,
        limit: int,
        cursor: str | None,
        content_hash: str | None = None,
        include_withdrawn: bool = False,
    ) -> RecordPage:
        query = f"SELECT {JOINED} WHERE m.engagement_id = ?"
        params: list[object] = [engagement_id]
        if content_hash is not None:
            query += " AND m.content_hash = ?"
            params.append(content_hash)
        if not include_withdrawn:
            query += " AND w.id IS NULL"
        if cursor is not None:
            stored_at, evidence_id = decode_cursor(cursor)
            query += " AND (m.stored_at, m.id) < (?, ?)"
            params += [stored_at, evidence_id]
        query += " ORDER BY m.stored_at DESC, m.id DESC LIMIT ?"
        params.append(limit + 1)
        rows = self.db.connection().execute(query, params).fetchall()
        return record_page([record_from_columns(dict(row)) for row in rows], limit)

    def record_withdrawal(self, tombstone: Tombstone) -> None:
        values = tuple(getattr(tombstone, name) for name in WITHDRAWAL_COLUMNS)
        self.db.write(
            lambda db: db.execute(
                f"INSERT OR IGNORE INTO evidence_withdrawals ({', '.join(WITHDRAWAL_COLUMNS)}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?)",
                values,
            )
        )

    def hold(self, engagement_id: str) -> Hold | None:
        row = (
            self.db.connection()
            .execute(
                f"SELECT {', '.join(HOLD_COLUMNS)} FROM engagement_holds WHERE engagement_id = ?",  # noqa: S608
                (engagement_id,),
            )
            .fetchone()
        )
        return Hold(**dict(row)) if row else None

    def place_hold(self, hold: Hold) -> None:
        values = tuple(getattr(hold, name) for name in HOLD_COLUMNS)
        self.db.write(
            lambda db: db.execute(
                f"INSERT OR IGNORE INTO engagement_holds ({', '.join(HOLD_COLUMNS)}) "  # noqa: S608
                "VALUES (?, ?, ?, ?)",
                values,
            )
        )

    def release_hold(self, engagement_id: str) -> None:
        self.db.write(
            lambda db: db.execute(
                "DELETE FROM engagement_holds WHERE engagement_id = ?", (engagement_id,)
            )
        )

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """One transaction for the batch; an event already stored (a retry) is kept once."""
        rows = [tuple(getattr(event, name) for name in AUDIT_COLUMNS) for event in events]
        marks = ", ".join("?" * len(AUDIT_COLUMNS))
        self.db.write(
            lambda db: db.executemany(
                f"INSERT OR IGNORE INTO evidence_audit ({AUDIT}) VALUES ({marks})",  # noqa: S608
                rows,
            )
        )

    def audit_page(self, engagement_id: str, limit: int, cursor: str | None) -> AuditPage:
        query = f"SELECT {AUDIT} FROM evidence_audit WHERE engagement_id = ?"  # noqa: S608
        params: list[object] = [engagement_id]
        if cursor is not None:
            occurred_at, event_id = decode_cursor(cursor)
            query += " AND (occurred_at, id) > (?, ?)"
            params += [occurred_at, event_id]
        query += " ORDER BY occurred_at, id LIMIT ?"
        params.append(limit + 1)
        rows = self.db.connection().execute(query, params).fetchall()
        return audit_page([AuditEvent(**dict(row)) for row in rows], limit)

    def audit_engagements(self) -> list[str]:
        rows = self.db.connection().execute("SELECT DISTINCT engagement_id FROM evidence_audit")
        return [row[0] for row in rows]

    def delete_engagement(self, engagement_id: str) -> dict[str, int]:
        """Delete the engagement's records and tombstones, their freed pages overwritten
        (`secure_delete`); `expunge` then clears the WAL and the free pages for good."""
        counts: dict[str, int] = {}

        def delete(db: sqlite3.Connection) -> None:
            db.execute("PRAGMA secure_delete = ON")
            try:
                for table in ("evidence_withdrawals", "evidence_metadata"):
                    cursor = db.execute(
                        f"DELETE FROM {table} WHERE engagement_id = ?",  # noqa: S608 - fixed names
                        (engagement_id,),
                    )
                    counts[table] = cursor.rowcount
            finally:
                db.execute("PRAGMA secure_delete = OFF")

        self.db.write(delete)
        return counts

    def expunge(self) -> None:
        """Nothing deleted stays readable: the WAL (which holds old page images) is written
        back and truncated, and VACUUM rebuilds the file without free pages."""
        db = self.db.connection()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def has_record(self, evidence_id: str) -> bool:
        row = (
            self.db.connection()
            .execute("SELECT 1 FROM evidence_metadata WHERE id = ?", (evidence_id,))
            .fetchone()
        )
        return row is not None

    def engagements(self) -> list[str]:
        rows = self.db.connection().execute("SELECT DISTINCT engagement_id FROM evidence_metadata")
        return [row[0] for row in rows]

    def bind(self, identity: str, store_path: str) -> IndexBinding:
        """Record the store this index belongs to, unless it records one already; returns
        the one recorded (the caller compares it with the store's marker)."""
        self.db.write(
            lambda db: db.execute(
                "INSERT OR IGNORE INTO store_identity (only, identity, store_path) "
                "VALUES (1, ?, ?)",
                (identity, store_path),
            )
        )
        row = self.db.connection().execute("SELECT identity, store_path FROM store_identity")
        return IndexBinding(*row.fetchone())

    def ping(self) -> None:
        self.db.connection().execute("SELECT 1 FROM evidence_metadata LIMIT 1").fetchall()

    def close(self) -> None:
        self.db.close()
