"""A durable local queue of `evidence_metadata` rows on their way to the Databricks table.

The runbook calls the metadata insert "best effort"; kmflow does better. Once a file is safe in
the Volume its row is queued here, and it leaves the queue only when the warehouse has
confirmed the (idempotent) MERGE, or when it was written as a pending record in the Volume
(`pending`). So a stopped warehouse delays rows but never loses them and a restart resumes
delivery. (An upload interrupted before its row is queued is the contract's write intents'
business, not the outbox's.)
SQLite (WAL, synchronous=FULL) in STATE_PATH, shared by the workers of one machine.

A row is delivered by whoever holds its claim: a lease taken in one transaction, so two
workers (or a request and the background thread) never MERGE the same row at the same time.
Databricks' primary key is informational, so this, not the table, keeps rows single.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from app.storage.records import EvidenceRecord
from app.storage.sqlite_db import SqliteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id             TEXT    NOT NULL PRIMARY KEY,
    engagement_id  TEXT    NOT NULL,
    stored_at      TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('uploading', 'queued')),  -- only 'queued' now
    owner          TEXT    NOT NULL,
    record_json    TEXT    NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    claimed_until  REAL    NOT NULL DEFAULT 0,
    claimed_by     TEXT
);
CREATE INDEX IF NOT EXISTS outbox_by_engagement ON outbox (engagement_id, state);
CREATE INDEX IF NOT EXISTS outbox_by_content
    ON outbox (engagement_id, json_extract(record_json, '$.content_hash'));
"""


class MetadataOutbox:
    """Single-statement writes go through `SqliteDatabase.write`, so concurrent uploads of one
    process share a transaction instead of queueing on SQLite's sleeping busy handler."""

    def __init__(self, path: Path) -> None:
        self.db = SqliteDatabase(path, SCHEMA)

    def queue(
        self, record: EvidenceRecord, claim_seconds: float = 0, owner: str | None = None
    ) -> None:
        """A row whose file is safe in the Volume: from now on it must reach the table.
        With `claim_seconds` the caller (`owner`) keeps the row to deliver it itself right away."""
        self.db.write(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO outbox (id, engagement_id, stored_at, state, owner,"
                " record_json, claimed_until, claimed_by) VALUES (?, ?, ?, 'queued', '', ?, ?, ?)",
                (record.id, record.engagement_id, record.stored_at, record.model_dump_json(),
                 _until(claim_seconds), owner),
            )
        )  # fmt: skip

    def ids(self) -> set[str]:
        return {row[0] for row in self.db.connection().execute("SELECT id FROM outbox")}

    def engagements(self) -> set[str]:
        rows = self.db.connection().execute(
            "SELECT DISTINCT engagement_id FROM outbox WHERE state = 'queued'"
        )
        return {row[0] for row in rows}

    def claim(self, limit: int, claim_seconds: float, owner: str) -> list[EvidenceRecord]:
        """Take up to `limit` queued rows nobody is delivering, oldest first."""
        with self.db.transaction() as db:
            rows = db.execute(
                "SELECT id, record_json FROM outbox WHERE state = 'queued' AND claimed_until < ?"
                " ORDER BY stored_at LIMIT ?",
                (time.time(), limit),
            ).fetchall()
            db.executemany(
                "UPDATE outbox SET claimed_until = ?, claimed_by = ? WHERE id = ?",
                [(_until(claim_seconds), owner, row[0]) for row in rows],
            )
        return [EvidenceRecord.model_validate_json(row[1]) for row in rows]

    def renew(
        self, evidence_ids: Sequence[str], claim_seconds: float, owner: str
    ) -> dict[str, bool]:
        """Extend `owner`'s claims on queued rows. Every id still in the outbox, and whether
        it is still `owner`'s to deliver (an id not there any more was delivered)."""
        until = _until(claim_seconds)
        with self.db.transaction() as db:
            db.executemany(
                "UPDATE outbox SET claimed_until = ? WHERE id = ? AND state = 'queued'"
                " AND claimed_by = ?",
                [(until, evidence_id, owner) for evidence_id in evidence_ids],
            )
            marks = ", ".join("?" * len(evidence_ids))
            rows = db.execute(
                f"SELECT id, state = 'queued' AND claimed_by = ? AND claimed_until = ?"  # noqa: S608
                f" FROM outbox WHERE id IN ({marks})",
                (owner, until, *evidence_ids),
            ).fetchall()
        return {row[0]: bool(row[1]) for row in rows}

    def claim_holders(self) -> set[str]:
        rows = self.db.connection().execute(
            "SELECT DISTINCT claimed_by FROM outbox"
            " WHERE claimed_until >= ? AND claimed_by IS NOT NULL",
            (time.time(),),
        )
        return {row[0] for row in rows}

    def release_claims(self, owner: str) -> None:
        """An owner that died holding claims: its rows may be delivered by others now."""
        self.db.write(
            lambda db: db.execute(
                "UPDATE outbox SET claimed_until = 0 WHERE claimed_by = ?", (owner,)
            )
        )

    def remove(self, evidence_ids: Sequence[str]) -> None:
        self.db.write(
            lambda db: db.executemany(
                "DELETE FROM outbox WHERE id = ?", [(i,) for i in evidence_ids]
            )
        )

    def record_failure(self, evidence_ids: Sequence[str], error: str, owner: str) -> None:
        """Not delivered: note why and let the next attempt claim the rows again (claims of
        other owners stay as they are)."""
        self.db.write(
            lambda db: db.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, claimed_until = 0"
                " WHERE id = ? AND claimed_by = ?",
                [(error[:500], i, owner) for i in evidence_ids],
            )
        )

    def queued_for(self, engagement_id: str) -> list[EvidenceRecord]:
        rows = self.db.connection().execute(
            "SELECT record_json FROM outbox WHERE state = 'queued' AND engagement_id = ?",
            (engagement_id,),
        )
        return [EvidenceRecord.model_validate_json(row[0]) for row in rows]

    def queued_copies(self, engagement_id: str, content_hash: str) -> list[tuple[str, str]]:
        """(stored_at, id) of the queued rows of one engagement with these bytes (indexed)."""
        rows = self.db.connection().execute(
            "SELECT stored_at, id FROM outbox WHERE engagement_id = ?"
            " AND json_extract(record_json, '$.content_hash') = ? AND state = 'queued'",
            (engagement_id, content_hash),
        )
        return [(row[0], row[1]) for row in rows]

    def stalled(self) -> int:
        """Queued rows nobody is delivering now (in flight ones are not waiting on anything)."""
        (count,) = (
            self.db.connection()
            .execute(
                "SELECT count(*) FROM outbox WHERE state = 'queued' AND claimed_until < ?",
                (time.time(),),
            )
            .fetchone()
        )
        return int(count)

    def stats(self) -> tuple[int, str | None]:
        """(rows waiting for the table, the most recent delivery error)."""
        db = self.db.connection()
        (count,) = db.execute("SELECT count(*) FROM outbox WHERE state = 'queued'").fetchone()
        row = db.execute(
            "SELECT last_error FROM outbox WHERE state = 'queued' AND last_error IS NOT NULL"
            " LIMIT 1"
        ).fetchone()
        return int(count), (row[0] if row else None)

    def close(self) -> None:
        self.db.close()


def _until(seconds: float) -> float:
    return time.time() + seconds if seconds else 0.0
