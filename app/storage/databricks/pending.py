"""Rows of acknowledged uploads that are not in `evidence_metadata` yet, kept in the Volume.

A 201 promises that the evidence is durable and findable, and a replica's own disk is not
durable (a pod's emptyDir, a machine that is replaced). So when an upload's row has not reached
the table by the time it answers (the warehouse is stopped, slow or refusing), the record is
first written next to the evidence, as `_kmflow/pending/<id>.json` in the same Volume: one
Files API PUT, only on that slow path. Any replica then delivers it: each one's delivery
thread lists the directory, takes a lease on the rows it will deliver in `kmflow_claims`
(`claims`), MERGEs them, and removes their files and leases. Rows the table holds
already only have their files removed.

Why the lease, and why a grace period: with row-level concurrency two MERGEs that insert the
same id at the same time may both commit (the table's primary key is not enforced). The lease
makes one replica the deliverer of a row at a time. The one MERGE that runs without a lease is
the round of the upload itself, which may still be running when its upload gives up waiting;
so a row is taken by the process that wrote it once that round has ended, by a process of
the same machine once the writer has died (its staging lock is free: a restart), and by any
other replica once its file is older than any MERGE can run (`grace_seconds`).

Reads by id find a pending record here when the table does not have it, from any replica.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from databricks.sdk.errors import NotFound
from pydantic import ValidationError

from app.storage.databricks.claims import ClaimsTable
from app.storage.databricks.client import TRANSPORT_ERRORS
from app.storage.errors import StorageError, StorageUnavailable
from app.storage.names import is_evidence_id
from app.storage.records import EvidenceRecord
from app.storage.staging import LOCK_SUFFIX, owner_is_alive

logger = logging.getLogger(__name__)

PENDING_DIRECTORY = "_kmflow/pending"
# Rows taken from the Volume per delivery pass (each is a GET of its file).
MAX_ROWS_PER_PASS = 1000


class PendingRows:
    """See the module docstring. `has_rows(ids)` returns the ids the table holds;
    `merge(records)` MERGEs rows (raising StorageError when it cannot)."""

    def __init__(
        self,
        *,
        client: Any,
        directory: str,
        claims: ClaimsTable,
        owner: str,
        staging_root: Path,
        has_rows: Callable[[Sequence[str]], set[str]],
        merge: Callable[[Sequence[EvidenceRecord]], None],
        grace_seconds: float,
    ) -> None:
        self._client = client
        self.directory = directory
        self._claims = claims
        self._owner = owner
        self._staging_root = staging_root
        self._has_rows = has_rows
        self._merge = merge
        self.grace_seconds = grace_seconds
        # Rows this process wrote here (listed by it until delivered), with the event that
        # says their own round has ended.
        self._own: dict[str, tuple[threading.Event | None, EvidenceRecord]] = {}
        self._own_lock = threading.Lock()
        self._writers: dict[str, str] = {}  # who wrote the files seen (read once each)
        self.waiting = 0  # files seen by the last pass that are still pending
        self.last_error: str | None = None

    def path(self, evidence_id: str) -> str:
        return f"{self.directory}/{evidence_id}.json"

    def write(self, record: EvidenceRecord, round_done: threading.Event | None) -> None:
        """Make the record durable in the Volume before its upload answers 201."""
        body = json.dumps({"owner": self._owner, "record": record.model_dump()}).encode()
        try:
            self._client.files.upload(self.path(record.id), io.BytesIO(body), overwrite=True)
        except TRANSPORT_ERRORS as error:
            raise StorageUnavailable(
                f"the evidence is in the Volume but its pending record could not be written "
                f"({type(error).__name__}); the upload is not acknowledged"
            ) from error
        with self._own_lock:
            self._own[record.id] = (round_done, record)
            self.waiting += 1

    def written_here(self, engagement_id: str) -> list[EvidenceRecord]:
        """This process's pending records of an engagement: its listings show them at once
        (another replica's listing shows them once they are delivered)."""
        with self._own_lock:
            return [r for _, r in self._own.values() if r.engagement_id == engagement_id]

    def read(self, evidence_id: str) -> EvidenceRecord | None:
        """The pending record of `evidence_id`, if there is one."""
        found = self._read(evidence_id)
        return found[1] if found is not None else None

    def _read(self, evidence_id: str) -> tuple[str, EvidenceRecord] | None:
        """(who wrote it, the record)."""
        try:
            contents = self._client.files.download(self.path(evidence_id)).contents
        except NotFound:
            return None
        except TRANSPORT_ERRORS as error:
            raise StorageUnavailable(f"Databricks Files API unavailable: {error}") from error
        if contents is None:
            return None
        with contents:
            body = contents.read()
        try:
            pending = json.loads(body)
            return str(pending["owner"]), EvidenceRecord.model_validate(pending["record"])
        except (ValueError, KeyError, TypeError, ValidationError):
            logger.error("pending record %s is not readable; left in place", evidence_id)
            return None

    def deliver(self) -> int:
        """One pass: deliver every pending row this process may take now; how many files
        remain. Failures are logged and left to the next pass."""
        try:
            remaining = self._deliver()
        except StorageError as error:
            if str(error) != self.last_error:
                logger.warning("pending rows in the Volume not delivered yet: %s", error)
            self.last_error = str(error)
            return self.waiting
        self.last_error = None
        return remaining

    def _deliver(self) -> int:
        files = self._list()
        self.waiting = len(files)
        ready = [i for i, age in files.items() if self._may_take(i, age)][:MAX_ROWS_PER_PASS]
        if not ready:
            return len(files)
        in_table = self._has_rows(ready)
        self._remove(sorted(in_table))
        leased = sorted(self._claims.lease(
            [i for i in ready if i not in in_table], self._owner, self.grace_seconds
        ))  # fmt: skip
        if leased:
            try:
                records = [r for r in (self.read(i) for i in leased) if r is not None]
                self._merge(records)
                self._remove([r.id for r in records])
            finally:
                self._claims.end_leases(leased, self._owner)
            logger.info("delivered %d pending row(s) from the Volume", len(records))
        self.waiting = len(self._list())
        return self.waiting

    def _may_take(self, evidence_id: str, age: float) -> bool:
        with self._own_lock:
            if evidence_id in self._own:
                round_done = self._own[evidence_id][0]
                return round_done is None or round_done.is_set()
        if age >= self.grace_seconds:
            return True
        writer = self._writers.get(evidence_id)
        if writer is None:
            found = self._read(evidence_id)
            if found is None:
                return False
            writer = self._writers[evidence_id] = found[0]
        local = (self._staging_root / f"{writer}{LOCK_SUFFIX}").exists()
        return local and not owner_is_alive(self._staging_root, writer)

    def remove_engagement(self, engagement_id: str) -> int:
        """A purge: remove every pending record of the engagement (each file read once to
        know its engagement); how many."""
        mine = []
        for evidence_id in self._list():
            found = self._read(evidence_id)
            if found is not None and found[1].engagement_id == engagement_id:
                mine.append(evidence_id)
        self._remove(mine)
        return len(mine)

    def ids(self) -> set[str]:
        """The ids of every pending record in the Volume now."""
        return set(self._list())

    def count(self, client: Any) -> int:
        """How many rows wait in the Volume now, listed with `client` (the health probes'
        short timeouts); the last pass's count when the Volume does not answer."""
        with contextlib.suppress(StorageError):
            self.waiting = len(self._list(client))
        return self.waiting

    def _list(self, client: Any = None) -> dict[str, float]:
        """Pending files by id, with their age in seconds."""
        client = client or self._client
        try:
            entries = list(client.files.list_directory_contents(self.directory))
        except NotFound:
            return {}
        except TRANSPORT_ERRORS as error:
            raise StorageUnavailable(f"Databricks Files API unavailable: {error}") from error
        now = time.time()
        found: dict[str, float] = {}
        for entry in entries:
            name = (entry.name or (entry.path or "").rsplit("/", 1)[-1]).removesuffix(".json")
            if entry.is_directory or not is_evidence_id(name):
                continue
            found[name] = now - (entry.last_modified or 0) / 1000
        return found

    def _remove(self, evidence_ids: Sequence[str]) -> None:
        for evidence_id in evidence_ids:
            try:
                self._client.files.delete(self.path(evidence_id))
            except NotFound:
                pass
            except TRANSPORT_ERRORS as error:
                logger.warning("pending file of %s not removed yet: %s", evidence_id, error)
                continue
            with self._own_lock:
                self._own.pop(evidence_id, None)
            self._writers.pop(evidence_id, None)
