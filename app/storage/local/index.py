"""The local backend's embedded metadata index: SQLite in WAL mode, one connection per thread.

Besides `evidence_metadata` (the runbook's columns) it keeps `store_identity`: which store the
index belongs to (`app.storage.local.store_identity`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from app.storage.local.store_identity import BINDING_SCHEMA, IndexBinding
from app.storage.pagination import decode_cursor, encode_cursor
from app.storage.records import RECORD_COLUMNS, EvidenceRecord, RecordPage
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
"""
    + BINDING_SCHEMA
)

COLUMNS = ", ".join(RECORD_COLUMNS)


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
                f"SELECT {COLUMNS} FROM evidence_metadata WHERE id = ? AND engagement_id = ?",  # noqa: S608
                (evidence_id, engagement_id),
            )
            .fetchone()
        )
        return EvidenceRecord(**dict(row)) if row else None

    def page(
        self, engagement_id: str, limit: int, cursor: str | None, content_hash: str | None = None
    ) -> RecordPage:
        query = f"SELECT {COLUMNS} FROM evidence_metadata WHERE engagement_id = ?"  # noqa: S608
        params: list[object] = [engagement_id]
        if content_hash is not None:
            query += " AND content_hash = ?"
            params.append(content_hash)
        if cursor is not None:
            stored_at, evidence_id = decode_cursor(cursor)
            query += " AND (stored_at, id) < (?, ?)"
            params += [stored_at, evidence_id]
        query += " ORDER BY stored_at DESC, id DESC LIMIT ?"
        params.append(limit + 1)
        rows = self.db.connection().execute(query, params).fetchall()
        items = [EvidenceRecord(**dict(row)) for row in rows[:limit]]
        more = len(rows) > limit
        next_cursor = encode_cursor(items[-1].stored_at, items[-1].id) if more else None
        return RecordPage(items=items, next_cursor=next_cursor)

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
