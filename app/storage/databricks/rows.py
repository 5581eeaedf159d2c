"""The `evidence_metadata` rows of one process on their way to the table, and the duplicate
lookups of its uploads, in rounds of as few SQL statements as the warehouse's limits allow.

A statement on a SQL warehouse takes hundreds of milliseconds and a MERGE is a Delta commit of a
second or more, commits to one table taking turns. So every row, once its file is safe in the
Volume, is first made durable in the local outbox (claimed by this process), then handed to the
next round (`round_batcher`): one MERGE for every row queued meanwhile, and beside it one SELECT
for the earlier copies (`duplicate_of`) of every upload in the round. A row leaves the outbox
only once the warehouse has confirmed its MERGE; a round that fails leaves its rows queued for
the delivery thread (`deliver_outbox`), which drains them through the same rounds. So this
process never has two MERGEs in flight, and a row reaches the table once: the MERGE inserts only
ids the table lacks, a round renews its claims before its MERGE and skips rows no longer its
own, and one statement never carries an id twice. One class holds the rounds' state, hence
the length.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from app.observability import metrics
from app.storage.databricks.outbox import MetadataOutbox
from app.storage.databricks.round_batcher import BatcherClosed, RoundBatcher, Ticket
from app.storage.databricks.sql import (
    MAX_LOOKUPS,
    MAX_MERGE_ROWS,
    SqlValue,
    StatementConflict,
    StatementRefused,
    StatementRunner,
    copies_statement,
    merge_chunks,
    merge_rows_statement,
    packed_row,
)
from app.storage.errors import InvalidInput, StorageError
from app.storage.records import MAX_EARLIER_COPIES, EvidenceRecord, earlier_copies

logger = logging.getLogger(__name__)

CONFLICT_RETRIES = 3
MAX_REFUSED_RETRY_SECONDS = 60.0
# An upload smaller than this tells the next round its row is on its way while its file is
# still going to the Volume (a round may wait a moment for it); a bigger one would only hold
# rounds up.
ANNOUNCE_MAX_BYTES = 8 * 1024 * 1024

Read = Callable[[str, Mapping[str, SqlValue]], list[list[Any]]]
Submit = Callable[["MetadataJob"], Ticket["MetadataJob"]]


@dataclass(eq=False)
class MetadataJob:
    """One caller's part of a round: MERGE a row, look up earlier copies of a record, or both.
    The round writes the outcome here."""

    row: EvidenceRecord | None = None
    copies_of: EvidenceRecord | None = None
    delivered: bool = False
    copies: list[str] | None = None  # ids, newest first; None: could not be looked up


class MetadataRows:
    """See the module docstring. `read` runs a query of the table (empty if it does not exist
    yet), `ensure_table` creates it; both belong to the backend, which reads the table too."""

    def __init__(
        self,
        *,
        sql: StatementRunner,
        table: str,
        withdrawals: str,
        outbox: MetadataOutbox,
        owner: str,
        read: Read,
        ensure_table: Callable[[], None],
        claim_seconds: float,
        wait_seconds: float,
    ) -> None:
        self.outbox = outbox
        self._sql = sql
        self._table = table
        self._withdrawals = withdrawals
        self._owner = owner
        self._read = read
        self._ensure_table = ensure_table
        self._claim_seconds = claim_seconds
        self._wait_seconds = wait_seconds
        # False after a failed or too slow round: rows then go straight to the outbox, and the
        # delivery thread finds out when the warehouse answers again.
        self.answering = True
        # The warehouse's last refusal (a privilege, the table), until rows go through again.
        self.refused: str | None = None
        self._refusals = 0
        self._rounds: RoundBatcher[MetadataJob] = RoundBatcher(
            self._run_round, max_jobs=MAX_MERGE_ROWS, name="kmflow-metadata"
        )
        self._lookups = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kmflow-lookup")
        self._delivering = threading.Lock()

    # -- rows of new uploads ---------------------------------------------------------------

    @contextmanager
    def expecting(self, nbytes: int) -> Iterator[Submit]:
        """Wrap an upload's trip to the Volume; yields the `submit` to give `queue`."""
        if nbytes > ANNOUNCE_MAX_BYTES:
            with nullcontext(self._rounds.submit) as submit:
                yield submit
            return
        with self._rounds.expecting() as submit:
            yield submit

    def queue(
        self, record: EvidenceRecord, submit: Submit, *, find_copies: bool
    ) -> Ticket[MetadataJob] | None:
        """The record's file is safe in the Volume: make its row durable and hand it to a
        round. None: no round takes it now (the warehouse is not answering); the delivery
        thread will."""
        if not self.answering:
            self.outbox.queue(record)
            return None
        self.outbox.queue(record, self._claim_seconds, self._owner)
        return self._submit(record, submit, find_copies=find_copies)

    def index(self, record: EvidenceRecord) -> Ticket[MetadataJob] | None:
        """The row of a file already in the Volume (backfill), in the next round."""
        return self.queue(record, self._rounds.submit, find_copies=False)

    def _submit(
        self, record: EvidenceRecord, submit: Submit, *, find_copies: bool
    ) -> Ticket[MetadataJob] | None:
        try:
            return submit(MetadataJob(row=record, copies_of=record if find_copies else None))
        except BatcherClosed:  # shutting down: the row is durable, a later start delivers it
            self.outbox.release_claims(self._owner)
            return None

    def settle(self, ticket: Ticket[MetadataJob]) -> list[str] | None:
        """Wait a little for the ticket's round; its earlier copies (None: not looked up)."""
        if ticket.wait(self._wait_seconds):
            return ticket.job.copies
        if self.answering:
            logger.warning(
                "metadata round slower than %gs: rows go to the outbox until the warehouse "
                "answers faster",
                self._wait_seconds,
            )
        self.answering = False
        return None

    def copies_of(self, record: EvidenceRecord) -> list[str] | None:
        """Earlier copies of a record stored before (a replayed upload), in the next round."""
        if not self.answering:
            return None
        try:
            ticket = self._rounds.submit(MetadataJob(copies_of=record))
        except BatcherClosed:
            return None
        return self.settle(ticket)

    # -- the queue -------------------------------------------------------------------------

    def wait_idle(self) -> None:
        """Until every row handed to a round so far has had its round."""
        self._rounds.wait_idle()

    def deliver_outbox(self) -> int:
        """Deliver every queued row nobody else is delivering; how many are still waiting."""
        with self._delivering:
            while batch := self.outbox.claim(MAX_MERGE_ROWS, self._claim_seconds, self._owner):
                try:
                    tickets = self._rounds.submit_all([MetadataJob(row=row) for row in batch])
                except BatcherClosed:
                    self.outbox.release_claims(self._owner)
                    break
                if not all(ticket.wait() and ticket.job.delivered for ticket in tickets):
                    break
        pending = self.outbox.stats()[0]
        metrics.PENDING_METADATA_ROWS.set(pending)
        return pending

    def close(self) -> None:
        """After the round in progress; rows still queued stay in the outbox, released."""
        self._rounds.close()
        self._lookups.shutdown()
        self.outbox.release_claims(self._owner)

    # -- a round ---------------------------------------------------------------------------

    def _run_round(self, jobs: Sequence[MetadataJob]) -> None:
        """MERGE the round's rows and, beside it, look up earlier copies for its uploads."""
        metrics.METADATA_ROUND_JOBS.observe(len(jobs))
        wanted = [job for job in jobs if job.copies_of is not None]
        found = self._lookups.submit(self._find_copies, wanted) if wanted else None
        rows = {job.row.id: job.row for job in jobs if job.row is not None}  # one of each id
        delivered = self._deliver(list(rows.values())) if rows else set()
        for job in jobs:
            job.delivered = job.row is not None and job.row.id in delivered
        if found is not None:
            try:
                found.result()
            except StorageError as error:  # the rows are stored; only this courtesy failed
                logger.info("earlier copies not looked up: %s", error)

    def _find_copies(self, jobs: Sequence[MetadataJob]) -> None:
        """Earlier copies from the outbox, then from the table: a row the MERGE takes out of
        the outbox meanwhile was committed first, so the SELECT that follows sees it."""
        records = [job.copies_of for job in jobs if job.copies_of is not None]
        queued = [self.outbox.queued_copies(r.engagement_id, r.content_hash) for r in records]
        in_table: list[list[tuple[str, str]]] = [[] for _ in records]
        for start in range(0, len(records), MAX_LOOKUPS):
            sql, params = copies_statement(
                self._table,
                self._withdrawals,
                records[start : start + MAX_LOOKUPS],
                MAX_EARLIER_COPIES,
            )
            metrics.METADATA_STATEMENTS.labels("SELECT").inc()
            for position, row_id, stored_at in self._read(sql, params):
                in_table[start + int(str(position))].append((str(stored_at), str(row_id)))
        for job, record, here, there in zip(jobs, records, queued, in_table, strict=True):
            job.copies = earlier_copies(record, here + there)

    def _deliver(self, records: Sequence[EvidenceRecord]) -> set[str]:
        """MERGE the rows still claimed by this process, as few statements as the limits
        allow; the ids now in the table (delivered here, or already gone from the outbox).
        On failure the rest stay queued for a later try."""
        held = self.outbox.renew([r.id for r in records], self._claim_seconds, self._owner)
        delivered = {r.id for r in records if r.id not in held}
        records = self._packable([r for r in records if held.get(r.id)])
        for chunk in merge_chunks(records):
            try:
                self._ensure_table()
                self._merge(chunk)
            except StorageError as error:  # never fail an upload whose file is already safe
                self._note_failure(error)
                failed = [r.id for r in records if r.id not in delivered]
                self.outbox.record_failure(failed, str(error), self._owner)
                return delivered
            ids = [record.id for record in chunk]
            self.outbox.remove(ids)
            delivered.update(ids)
        if not self.answering or self.refused:
            logger.info("warehouse taking metadata rows again; delivering queued ones")
        self.answering, self.refused, self._refusals = True, None, 0
        return delivered

    def merge(self, records: Sequence[EvidenceRecord]) -> None:
        """MERGE rows that are not in this process's outbox (pending rows another replica
        acknowledged, see `pending`) now, outside the rounds; raises if they did not
        all reach the table."""
        for chunk in merge_chunks(self._packable(records)):
            try:
                self._ensure_table()
                self._merge(chunk)
            except StorageError as error:
                self._note_failure(error)
                raise

    def _merge(self, chunk: Sequence[EvidenceRecord]) -> None:
        """One MERGE, run again at once (after a short random pause) when a concurrent commit
        to the table won: a conflict commits nothing, and the MERGE inserts only missing ids."""
        for attempt in range(CONFLICT_RETRIES + 1):
            metrics.METADATA_STATEMENTS.labels("MERGE").inc()
            try:
                self._sql.run(*merge_rows_statement(self._table, chunk))
                return
            except StatementConflict:
                if attempt == CONFLICT_RETRIES:
                    raise
                time.sleep(random.uniform(0.05, 0.25) * 2**attempt)  # noqa: S311 - jitter

    def _note_failure(self, error: StorageError) -> None:
        """Say what kept the rows out, once per kind, and how the next tries should go."""
        if isinstance(error, StatementConflict):
            logger.warning(
                "metadata rows queued: concurrent writes to %s kept conflicting (another "
                "writer; row-level concurrency needs deletion vectors and no partitions): %s",
                self._table, error,
            )  # fmt: skip
            return  # the warehouse answers: the next round tries again
        if isinstance(error, StatementRefused):
            if str(error) != self.refused:
                logger.error(
                    "metadata rows queued: the warehouse refuses them until someone acts (a "
                    "privilege such as MODIFY on %s, the table itself): %s", self._table, error,
                )  # fmt: skip
            self.refused = str(error)
            self._refusals += 1
        elif self.answering:
            logger.warning("metadata rows queued, warehouse not answering: %s", error)
        self.answering = False

    def retry_seconds(self, base: float) -> float:
        """How long the delivery thread waits before its next try: `base`, or longer and
        longer while the warehouse refuses the rows (repeating a refusal helps nobody)."""
        if not self.refused:
            return base
        return min(MAX_REFUSED_RETRY_SECONDS, base * 2.0 ** min(self._refusals, 16))

    def _packable(self, records: Sequence[EvidenceRecord]) -> list[EvidenceRecord]:
        """Rows a MERGE can carry; one that cannot (queued by an older kmflow) is set aside
        with its reason rather than failing every round it joins."""
        fine = []
        for record in records:
            try:
                packed_row(record)
            except InvalidInput as error:
                logger.error("metadata row %s cannot be delivered: %s", record.id, error)
                self.outbox.record_failure([record.id], str(error), self._owner)
                continue
            fine.append(record)
        return fine
