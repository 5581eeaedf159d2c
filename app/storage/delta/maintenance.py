"""When the delta backend compacts, checkpoints and trims a table's log (`evidence_metadata`,
`evidence_audit`), and where that runs.

Measured with deltalake 1.6.6 on a local disk: a page read costs about 0.4 ms per data file
it opens and a table refresh about 1 ms per 1,000 log entries, so without maintenance every
upload (one small file, one version) makes every later list slower. The policy keys off
version numbers, which every writer in every process sees alike: the writer whose commit
crosses a multiple of `compact_every` compacts, the one crossing a multiple of
`checkpoint_every` also checkpoints and drops log entries older than the retention. So
maintenance runs about once per threshold across all workers.

Work runs on one background thread per process, off the upload's path (a `201` never waits
for it), and only while holding the maintenance lease (`EvidenceFiles.lease`): deltalake
1.6.6 lets two concurrent compactions of the same files both commit, duplicating every row
they rewrote, so across all processes at most one compacts at a time; a process that finds
the lease taken skips the round (the holder is doing the same work). Readers stay correct
throughout: compaction changes no data, every read uses one consistent snapshot, and the
files a compaction replaces stay on disk (nothing is vacuumed), so older versions stay
readable for audits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from app.observability.metrics import DELTA_MAINTENANCE_RUNS
from app.storage.delta.log_table import DeltaLogTable
from app.storage.errors import StorageError

logger = logging.getLogger(__name__)

LEASE_NAME = "_kmflow/maintenance.lease"
# Far longer than a compaction of files capped at a few MiB takes; a holder that died blocks
# maintenance (not uploads or reads) for at most this long on an object store.
LEASE_SECONDS = 600.0

Lease = Callable[[str, float], AbstractContextManager[bool]]


@dataclass(frozen=True)
class MaintenancePolicy:
    compact_every: int = 5
    checkpoint_every: int = 100

    def due(self, before: int, after: int) -> tuple[bool, bool]:
        """(compact, checkpoint): whether versions `before+1..after` cross a threshold."""
        return (
            after // self.compact_every > before // self.compact_every,
            after // self.checkpoint_every > before // self.checkpoint_every,
        )


class Maintenance:
    """Runs the policy's work for one process; see the module docstring."""

    def __init__(
        self,
        table: DeltaLogTable,
        policy: MaintenancePolicy,
        lease: Lease,
        lease_name: str = LEASE_NAME,
    ) -> None:
        self.table = table
        self.policy = policy
        self._lease = lease
        self._lease_name = lease_name
        self._lock = threading.Lock()
        self._pending_compact = False
        self._pending_checkpoint = False
        self._scheduled = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delta-maint")
        self._closed = False

    def after_commit(self, before: int, after: int) -> None:
        compact, checkpoint = self.policy.due(before, after)
        if compact or checkpoint:
            self.request(compact=compact, checkpoint=checkpoint)

    def request(self, *, compact: bool = True, checkpoint: bool = False) -> Future[None] | None:
        """Queue work (merged with work already queued); returns the run's future if new."""
        with self._lock:
            if self._closed:
                return None
            self._pending_compact |= compact
            self._pending_checkpoint |= checkpoint
            if self._scheduled:
                return None
            self._scheduled = True
            future = self._executor.submit(self._run)
        future.add_done_callback(_log_unexpected)
        return future

    def _run(self) -> None:
        with self._lock:
            compact, checkpoint = self._pending_compact, self._pending_checkpoint
            self._pending_compact = self._pending_checkpoint = False
            self._scheduled = False
        try:
            with self._lease(self._lease_name, LEASE_SECONDS) as held:
                if not held:
                    logger.debug("maintenance skipped: another process holds the lease")
                    return
                self._maintain(compact=compact, checkpoint=checkpoint)
        except StorageError as error:
            # The next threshold retries; uploads and reads are unaffected.
            logger.warning("delta maintenance failed, will retry later: %s", error)

    def _maintain(self, *, compact: bool, checkpoint: bool) -> None:
        if compact:
            with _counted("compact"):
                result = self.table.compact()
            if result is not None:
                logger.debug(
                    "compacted %s files into %s",
                    result.get("numFilesRemoved"),
                    result.get("numFilesAdded"),
                )
        if checkpoint:
            with _counted("checkpoint"):
                version = self.table.checkpoint()
            logger.debug("checkpoint at version %d", version)

    def close(self) -> None:
        """Finish the running job (a half-done compaction is never committed anyway)."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _counted(kind: str) -> Iterator[None]:
    try:
        yield
    except BaseException:
        DELTA_MAINTENANCE_RUNS.labels(kind, "failed").inc()
        raise
    DELTA_MAINTENANCE_RUNS.labels(kind, "done").inc()


def _log_unexpected(future: Future[None]) -> None:
    error = future.exception() if not future.cancelled() else None
    if error is not None:
        logger.error("delta maintenance crashed", exc_info=error)
