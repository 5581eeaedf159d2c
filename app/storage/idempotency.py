"""Idempotency keys: a retried upload returns the first one's record instead of a second copy.

A key is bound to (engagement, content hash, evidence id) by the first upload that claims it,
in a SQLite table under STATE_PATH that every worker of the deployment on this machine shares.
The claim is taken only once the body is fully received and hashed, so a retry that arrives
while the first attempt is still committing sees the binding and waits for that record; a
claim whose owner process died before its record existed is stale and is taken over. Bindings
expire after a window (`IDEMPOTENCY_KEY_TTL_SECONDS`); expired rows are replaced on claim and
purged now and then.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from app.storage.errors import InvalidInput
from app.storage.sqlite_db import SqliteDatabase

KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, as HTTP header tokens go
DEFAULT_WINDOW_SECONDS = 24 * 3600
PURGE_EVERY_CLAIMS = 1000

SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key            TEXT    NOT NULL PRIMARY KEY,
    engagement_id  TEXT    NOT NULL,
    content_hash   TEXT    NOT NULL,
    evidence_id    TEXT    NOT NULL,
    owner          TEXT    NOT NULL,
    claimed_at     REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (claimed_at);
"""


def validate_key(key: str) -> str:
    if not KEY_PATTERN.fullmatch(key):
        raise InvalidInput("Idempotency-Key must be 1-255 visible ASCII characters")
    return key


@dataclass(frozen=True)
class KeyBinding:
    """What a key stands for: the upload that claimed it first."""

    engagement_id: str
    content_hash: str
    evidence_id: str
    owner: str

    def matches(self, engagement_id: str, content_hash: str) -> bool:
        return (self.engagement_id, self.content_hash) == (engagement_id, content_hash)


class IdempotencyKeys:
    """The key table; opened on first use, so a backend that never sees a key creates
    nothing (migration dry runs)."""

    def __init__(self, path: Path, window_seconds: float = DEFAULT_WINDOW_SECONDS) -> None:
        self.path = path
        self.window_seconds = window_seconds
        self._db: SqliteDatabase | None = None
        self._opening = threading.Lock()
        self._claims = 0

    def claim(self, key: str, wanted: KeyBinding) -> KeyBinding:
        """Bind `key` to `wanted` unless a live binding exists; returns the binding in force."""
        now = time.time()
        in_force: list[KeyBinding] = []

        def claim_in(db: sqlite3.Connection) -> None:
            row = db.execute(
                "SELECT engagement_id, content_hash, evidence_id, owner FROM idempotency_keys "
                "WHERE key = ? AND claimed_at >= ?",
                (key, now - self.window_seconds),
            ).fetchone()
            if row is not None:
                in_force.append(KeyBinding(*row))
                return
            db.execute(
                "INSERT OR REPLACE INTO idempotency_keys "
                "(key, engagement_id, content_hash, evidence_id, owner, claimed_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    wanted.engagement_id,
                    wanted.content_hash,
                    wanted.evidence_id,
                    wanted.owner,
                    now,
                ),
            )
            in_force.append(wanted)

        self._database().write(claim_in)
        self._claims += 1
        if self._claims % PURGE_EVERY_CLAIMS == 0:
            self.purge_expired()
        return in_force[0]

    def release(self, key: str, evidence_id: str) -> None:
        """Drop the binding if it is still `evidence_id`'s (its upload failed or died)."""
        self._database().write(
            lambda db: db.execute(
                "DELETE FROM idempotency_keys WHERE key = ? AND evidence_id = ?",
                (key, evidence_id),
            )
        )

    def purge_expired(self) -> None:
        cutoff = time.time() - self.window_seconds
        self._database().write(
            lambda db: db.execute("DELETE FROM idempotency_keys WHERE claimed_at < ?", (cutoff,))
        )

    def close(self) -> None:
        with self._opening:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _database(self) -> SqliteDatabase:
        with self._opening:
            if self._db is None:
                self._db = SqliteDatabase(self.path, SCHEMA)
            return self._db
