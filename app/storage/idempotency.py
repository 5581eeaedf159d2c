"""Idempotency keys: a retried upload returns the first one's record instead of a second copy.

A key is bound to (engagement, content hash, evidence id) by the first upload that claims it,
in a `KeyClaims` store that every process serving the deployment shares: here, a SQLite table
under STATE_PATH for the workers of one machine (the single-machine backends); a deployment of
many replicas keeps its claims on the shared backend instead (see each backend).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from app.storage.errors import InvalidInput
from app.storage.sqlite_db import SqliteDatabase
from app.storage.staging import LOCK_SUFFIX, owner_is_alive

KEY_PATTERN_TEXT = r"[\x21-\x7e]{1,255}"
KEY_PATTERN = re.compile(KEY_PATTERN_TEXT)
# A claim on a store shared by replicas whose upload has not stored its record after this long
# is abandoned (its replica died mid-commit; another machine cannot ask it). The claim is taken
# only once the body is received and hashed, so what remains is copying the staged file and
# its row: at the 5 GiB default upload limit that needs ~9 MB/s. A replica killed mid-commit
# therefore blocks its keys (409 idempotency_key_in_progress) for at most this long.
KEY_CLAIM_LEASE_SECONDS = 600.0
# `StagingArea.owner`: "<pid>-<12 hex digits>". Anything else (another version, a hand-edited
# claim) is never used to build a path; it is treated as another machine's owner.
_OWNER = re.compile(r"[0-9]{1,10}-[0-9a-f]{12}")  # visible ASCII, as HTTP header tokens go
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
    owner: str  # the StagingArea owner of the process that claimed it
    claimed_at: float = field(default=0.0, compare=False)  # time.time(), set by the store

    def matches(self, engagement_id: str, content_hash: str) -> bool:
        return (self.engagement_id, self.content_hash) == (engagement_id, content_hash)


class KeyClaims(Protocol):
    """Where keys are claimed. `claim` must be atomic for every process of the deployment:
    of two claims of one key, one wins and the other is told the winner's binding."""

    window_seconds: float  # a binding holds this long
    poll_seconds: float  # how often a retry asks again while the first attempt is committing

    def claim(self, key: str, wanted: KeyBinding) -> KeyBinding:
        """Bind `key` to `wanted` unless a live binding exists; returns the binding in force."""

    def release(self, key: str, evidence_id: str) -> None:
        """Drop the binding if it is still `evidence_id`'s (its upload failed or died)."""

    def is_abandoned(self, binding: KeyBinding) -> bool:
        """Whether the upload that holds `binding` will never store its record."""

    def close(self) -> None: ...


def shared_claim_is_abandoned(binding: KeyBinding, staging_root: Path) -> bool:
    """`KeyClaims.is_abandoned` for claims shared by replicas: a process of this machine (its
    lock file is under `staging_root`) is asked through its lock; any other claim is
    abandoned once older than its lease. Replicas compare each other's clocks here, so they
    keep them synchronised (NTP)."""
    lock = staging_root / f"{binding.owner}{LOCK_SUFFIX}"
    if _OWNER.fullmatch(binding.owner) and lock.exists():
        return not owner_is_alive(staging_root, binding.owner)
    return time.time() - binding.claimed_at > KEY_CLAIM_LEASE_SECONDS


class IdempotencyKeys:
    """The key table of one machine; opened on first use, so a backend that never sees a key
    creates nothing (migration dry runs)."""

    poll_seconds = 0.05  # a local SQLite read

    def __init__(
        self, path: Path, staging_root: Path, window_seconds: float = DEFAULT_WINDOW_SECONDS
    ) -> None:
        self.path = path
        self.staging_root = staging_root
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

    def is_abandoned(self, binding: KeyBinding) -> bool:
        """Its owner is a process of this machine: abandoned once that process has died."""
        return not owner_is_alive(self.staging_root, binding.owner)

    def release(self, key: str, evidence_id: str) -> None:
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
