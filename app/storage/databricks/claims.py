"""Claims every replica of a deployment sees: Idempotency-Keys, and leases on pending rows.

A deployment of many replicas on the `databricks` backend has no disk they share, so a claim
lives in a Delta table beside `evidence_metadata`, `kmflow_claims`: one row per claim, taken
by a MERGE that inserts it when absent or replaces it once it has expired, then read back.
The claims of the requests in flight at the same time go in one round (`round_batcher`): one
MERGE and one SELECT, whatever the number of claims.

Why one MERGE wins, with what document: Unity Catalog PRIMARY KEY constraints are
informational, not enforced ("Constraints on Databricks": "Primary key and foreign key
constraints ... are informational only and are not enforced"), and with row-level concurrency
(tables with deletion vectors) two MERGEs that both insert the same key may both commit under
the default WriteSerializable isolation. So this table is created with deletion vectors off
and `delta.isolationLevel = 'Serializable'`; then a MERGE reads the whole (unpartitioned)
table, and a concurrent commit that added files it read makes it fail with a concurrent-append
conflict ("Isolation levels and write conflicts on Databricks": ConcurrentAppendException
"occurs when a concurrent operation adds files in the same partition (or anywhere in an
unpartitioned table) that your operation reads"; under Serializable even blind appends
conflict). The loser commits nothing and runs again, and then sees the winner's row. MiniLake
(DuckDB) runs one statement at a time, so the tests see the same single winner.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from app.storage.databricks.round_batcher import BatcherClosed, RoundBatcher
from app.storage.databricks.sql import (
    FIELD_SEPARATOR,
    MAX_STATEMENT_PARAMETERS,
    SqlValue,
    StatementConflict,
    StatementRunner,
)
from app.storage.errors import StorageError, StorageUnavailable
from app.storage.idempotency import DEFAULT_WINDOW_SECONDS, KeyBinding, shared_claim_is_abandoned

logger = logging.getLogger(__name__)

CLAIMS_TABLE = "kmflow_claims"
# Rounds of replicas that commit at the same moment conflict (see the module docstring); each
# retry comes after a random pause, so they fall apart.
CONFLICT_RETRIES = 8
# One parameter per claim, plus `:now`.
MAX_CLAIMS_PER_ROUND = MAX_STATEMENT_PARAMETERS - 1
CLAIM_COLUMNS = (
    "claim", "evidence_id", "owner", "engagement_id", "content_hash", "claimed_at_ms",
    "expires_at_ms",
)  # fmt: skip


def create_claims_statement(table: str) -> str:
    """Deletion vectors off and Serializable: see the module docstring."""
    return f"""CREATE TABLE IF NOT EXISTS {table} (
    claim          STRING  NOT NULL,
    evidence_id    STRING  NOT NULL,
    owner          STRING  NOT NULL,
    engagement_id  STRING  NOT NULL,
    content_hash   STRING  NOT NULL,
    claimed_at_ms  BIGINT  NOT NULL,
    expires_at_ms  BIGINT  NOT NULL,
    CONSTRAINT pk_kmflow_claims PRIMARY KEY (claim)
)
USING DELTA
TBLPROPERTIES ('delta.isolationLevel' = 'Serializable', 'delta.enableDeletionVectors' = 'false')"""


def key_claim(key: str) -> str:
    """A key's claim name: hashed, so the table holds no client-chosen text."""
    return "key/" + hashlib.sha256(key.encode()).hexdigest()


def lease_claim(evidence_id: str) -> str:
    return f"deliver/{evidence_id}"


@dataclass(eq=False)
class ClaimJob:
    """One claim in a round; the round writes the claim in force (or the error) here."""

    wanted: KeyBinding
    claim: str
    expires_at_ms: int
    in_force: KeyBinding | None = None
    error: StorageError | None = None


class ClaimsTable:
    """`KeyClaims` for the whole deployment, and leases on pending rows, in `kmflow_claims`."""

    poll_seconds = 1.0  # each poll of a key held by an upload in progress is a round

    def __init__(
        self,
        sql: StatementRunner,
        table: str,
        staging_root: Path,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
    ) -> None:
        self.window_seconds = window_seconds
        self._sql = sql
        self._table = table
        self._staging_root = staging_root
        self._created = False
        self._rounds: RoundBatcher[ClaimJob] = RoundBatcher(
            self._run_round, max_jobs=MAX_CLAIMS_PER_ROUND, name="kmflow-claims"
        )

    # -- KeyClaims -------------------------------------------------------------------------

    def claim(self, key: str, wanted: KeyBinding) -> KeyBinding:
        (in_force,) = self._claim_all([(key_claim(key), wanted, self.window_seconds)])
        return in_force

    def release(self, key: str, evidence_id: str) -> None:
        self._end([key_claim(key)], "evidence_id", evidence_id)

    def is_abandoned(self, binding: KeyBinding) -> bool:
        return shared_claim_is_abandoned(binding, self._staging_root)

    def close(self) -> None:
        self._rounds.close()

    # -- leases on pending rows ------------------------------------------------------------

    def lease(self, evidence_ids: Sequence[str], owner: str, seconds: float) -> set[str]:
        """The ids whose delivery `owner` now holds for `seconds`: free, expired or its own."""
        wanted = [
            (lease_claim(evidence_id), KeyBinding("", "", evidence_id, owner), seconds)
            for evidence_id in evidence_ids
        ]
        held = self._claim_all(wanted)
        return {binding.evidence_id for binding in held if binding.owner == owner}

    def end_leases(self, evidence_ids: Sequence[str], owner: str) -> None:
        claims = [lease_claim(evidence_id) for evidence_id in evidence_ids]
        for start in range(0, len(claims), MAX_CLAIMS_PER_ROUND):
            self._end(claims[start : start + MAX_CLAIMS_PER_ROUND], "owner", owner)

    # -- rounds ----------------------------------------------------------------------------

    def _claim_all(self, wanted: Sequence[tuple[str, KeyBinding, float]]) -> list[KeyBinding]:
        now = time.time()
        jobs = [
            ClaimJob(replace(binding, claimed_at=now), claim, int((now + seconds) * 1000))
            for claim, binding, seconds in wanted
        ]
        try:
            tickets = self._rounds.submit_all(jobs)
        except BatcherClosed:
            raise StorageUnavailable("kmflow is shutting down") from None
        for ticket in tickets:
            ticket.wait()
        held: list[KeyBinding] = []
        for job in jobs:
            if isinstance(job.error, StorageUnavailable):
                raise StorageUnavailable(
                    "Idempotency-Keys are claimed in kmflow_claims through the SQL warehouse, "
                    f"which is not answering ({job.error}); nothing was stored: retry later, "
                    "or upload without the key"
                ) from job.error
            if job.error is not None:
                raise job.error
            if job.in_force is None:
                raise StorageUnavailable(f"claim {job.claim} was not answered")
            held.append(job.in_force)
        return held

    def _run_round(self, jobs: Sequence[ClaimJob]) -> None:
        latest: dict[str, ClaimJob] = {}
        for job in jobs:  # one statement never carries a claim twice: the first one tries
            latest.setdefault(job.claim, job)
        try:
            self._ensure_table()
            self._merge(list(latest.values()))
            in_force = self._read([job.claim for job in latest.values()])
        except StorageError as error:
            for job in jobs:
                job.error = error
            return
        for job in jobs:
            job.in_force = in_force.get(job.claim)

    def _merge(self, jobs: Sequence[ClaimJob]) -> None:
        params: dict[str, SqlValue] = {"now": int(time.time() * 1000)}
        for n, job in enumerate(jobs):
            binding = job.wanted
            fields = (
                job.claim, binding.evidence_id, binding.owner, binding.engagement_id,
                binding.content_hash, str(int(binding.claimed_at * 1000)), str(job.expires_at_ms),
            )  # fmt: skip
            params[f"row_{n}"] = FIELD_SEPARATOR.join(fields)
        packed = "\n        UNION ALL ".join(
            f"SELECT :row_{n}" + (" AS r" if n == 0 else "") for n in range(len(jobs))
        )
        values = []
        for position, column in enumerate(CLAIM_COLUMNS, start=1):
            value = f"split_part(r, chr(31), {position})"
            if column.endswith("_ms"):
                value = f"CAST({value} AS BIGINT)"
            values.append(f"{value} AS {column}")
        updates = ", ".join(f"{column} = s.{column}" for column in CLAIM_COLUMNS[1:])
        columns = ", ".join(CLAIM_COLUMNS)
        inserted = ", ".join(f"s.{column}" for column in CLAIM_COLUMNS)
        sql = (  # only the quoted table name and made-up marker names are formatted in
            f"MERGE INTO {self._table} AS t\nUSING (\n    SELECT {', '.join(values)}\n"  # noqa: S608
            f"    FROM (\n        {packed}\n    ) AS packed\n) AS s\nON t.claim = s.claim\n"
            f"WHEN MATCHED AND t.expires_at_ms < :now THEN UPDATE SET {updates}\n"
            f"WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({inserted})"
        )
        self._write(sql, params)

    def _write(self, sql: str, params: dict[str, SqlValue]) -> None:
        """Run a write, again after a random pause each time a concurrent commit won."""
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                self._sql.run(sql, params)
                return
            except StatementConflict:
                if attempt == CONFLICT_RETRIES:
                    raise
                time.sleep(random.uniform(0.05, 0.3) * min(2**attempt, 16))  # noqa: S311

    def _read(self, claims: Sequence[str]) -> dict[str, KeyBinding]:
        params: dict[str, SqlValue] = {f"c_{n}": claim for n, claim in enumerate(claims)}
        marks = ", ".join(f":c_{n}" for n in range(len(claims)))
        rows = self._sql.run(
            f"SELECT claim, engagement_id, content_hash, evidence_id, owner, claimed_at_ms "  # noqa: S608
            f"FROM {self._table} WHERE claim IN ({marks})",
            params,
        )
        return {
            str(row[0]): KeyBinding(
                str(row[1]), str(row[2]), str(row[3]), str(row[4]), int(float(row[5])) / 1000
            )
            for row in rows
        }

    def _end(self, claims: Sequence[str], column: str, value: str) -> None:
        """Delete the claims that `column` (evidence_id or owner) says are the caller's."""
        params: dict[str, SqlValue] = {f"c_{n}": claim for n, claim in enumerate(claims)}
        params["mine"] = value
        marks = ", ".join(f":c_{n}" for n in range(len(claims)))
        self._ensure_table()
        self._write(
            f"DELETE FROM {self._table} WHERE claim IN ({marks}) AND {column} = :mine",  # noqa: S608
            params,
        )

    def _ensure_table(self) -> None:
        if not self._created:
            self._sql.run(create_claims_statement(self._table))
            self._created = True
