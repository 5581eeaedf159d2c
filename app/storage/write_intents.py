"""Write intents: the crash protocol of every commit, kept for the contract (`base`).

A commit places a file where no record points at it yet, then indexes it. A process that dies
in between leaves a file that nothing lists and nobody would ever remove. So before the file is
placed, an intent naming it is made durable; once the record is indexed (or the file removed),
the intent goes. At startup, each intent left by a dead process is settled: if the record is
findable, the file is evidence and stays; if not, the file is removed.

Intents are small JSON files in `STATE_PATH/intents`, named by owner (the staging area's
process id, whose liveness `owner_is_alive` tells) and evidence id. They are not in a staging
directory because a staging directory goes when its process ends, and an intent whose outcome
is unknown must outlive it. They hold nothing an acknowledged upload needs: a replica that
loses STATE_PATH loses at most the chance to remove a file nobody lists.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.storage.errors import CommitOutcomeUnknown, EvidenceExists, StorageError
from app.storage.fsync import SharedDirectorySync, fsync_directory
from app.storage.records import EvidenceRecord
from app.storage.staging import owner_is_alive

logger = logging.getLogger(__name__)

INTENT_SUFFIX = ".intent"
INTENTS_DIRECTORY = "intents"  # under STATE_PATH


def intended_paths(state_path: Path, limit: int) -> list[str]:
    """Paths of files that interrupted commits placed or were placing (read-only): a store
    that holds them belongs with this STATE_PATH even before any record was indexed."""
    found: list[str] = []
    for intent in sorted((state_path / INTENTS_DIRECTORY).glob(f"*{INTENT_SUFFIX}"))[:limit]:
        try:
            found.append(json.loads(intent.read_text(encoding="utf-8"))["path"])
        except (json.JSONDecodeError, KeyError, OSError):
            continue
    return found


@dataclass(frozen=True)
class Intent:
    owner: str
    engagement_id: str
    evidence_id: str
    path: str  # the record's volume_path: where its file is placed


@dataclass
class CommitSteps:
    """What a commit inside `WriteIntents.covering` has done so far; the backend sets each."""

    placed: bool = False  # the file at the record's path is this write's
    indexed: bool = False  # the record is durable and findable


Remove = Callable[[str], None]  # removes the file at a volume_path; StorageError if it cannot now
Find = Callable[[str, str], EvidenceRecord | None]  # (engagement_id, evidence_id) -> record


class WriteIntents:
    """The intents of this machine's processes; `owner` is this process."""

    def __init__(self, directory: Path, staging_root: Path, owner: str) -> None:
        self.directory = directory
        self._staging_root = staging_root
        self._owner = owner
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            fsync_directory(directory.parent)
        self._directory_sync = SharedDirectorySync()
        # Files of this process's unacknowledged writes not removed yet: path by id.
        self._unremoved: dict[str, str] = {}

    @contextmanager
    def covering(self, record: EvidenceRecord, remove: Remove) -> Iterator[CommitSteps]:
        """The protocol around placing `record`'s file and indexing it. If the block fails,
        the file goes, unless the record was indexed, the file there was not this write's
        (`EvidenceExists` before `placed`), or the outcome is unknown (`CommitOutcomeUnknown`:
        the intent stays for the next startup to settle)."""
        self.add(record)
        steps = CommitSteps()
        try:
            yield steps
        except BaseException as error:
            if steps.indexed:
                self.drop(record.id)
            elif isinstance(error, CommitOutcomeUnknown):
                logger.warning("outcome of %s unknown; the next startup settles it", record.id)
            elif isinstance(error, EvidenceExists) and not steps.placed:
                self.drop(record.id)  # the file there is not this write's
            else:
                self._remove_unacknowledged(record.id, record.volume_path, remove)
            raise
        self.drop(record.id)

    def retry_removals(self, remove: Remove) -> None:
        for evidence_id, path in list(self._unremoved.items()):
            self._remove_unacknowledged(evidence_id, path, remove)

    def settle(self, find: Find, remove: Remove) -> None:
        """Intents of dead processes: the file stays if `find` finds its record, else it goes.
        An intent the store cannot settle now stays for the next try."""
        for intent in self.left_by_dead():
            try:
                if find(intent.engagement_id, intent.evidence_id) is None:
                    remove(intent.path)
                    logger.info("removed the file of an interrupted write: %s", intent.path)
            except (StorageError, OSError) as error:
                logger.warning("interrupted write %s left for later: %s", intent.evidence_id, error)
                continue
            self.forget(intent)

    def _remove_unacknowledged(self, evidence_id: str, path: str, remove: Remove) -> None:
        """If the store cannot be asked now, the intent stays for `retry_removals` and the
        next startup."""
        try:
            remove(path)
        except Exception as error:  # noqa: BLE001  (the write's own error is the one raised)
            logger.warning("cannot remove %s of an unacknowledged write yet: %s", path, error)
            self._unremoved[evidence_id] = path
            return
        self._unremoved.pop(evidence_id, None)
        self.drop(evidence_id)

    def add(self, record: EvidenceRecord) -> None:
        """Durable on return. `EvidenceExists` if this process is storing the id already."""
        body = {"engagement_id": record.engagement_id, "id": record.id, "path": record.volume_path}
        try:
            fd = os.open(self._file(self._owner, record.id), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            raise EvidenceExists(f"record {record.id} is being stored already") from None
        try:
            os.write(fd, json.dumps(body).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self._directory_sync.sync(self.directory)

    def drop(self, evidence_id: str) -> None:
        """Not synced: a drop lost in a crash only makes startup find the record indexed."""
        self._file(self._owner, evidence_id).unlink(missing_ok=True)

    def forget(self, intent: Intent) -> None:
        self._file(intent.owner, intent.evidence_id).unlink(missing_ok=True)

    def left_by_dead(self) -> list[Intent]:
        """Intents of processes that died before settling them."""
        found: list[Intent] = []
        for path in self.directory.glob(f"*{INTENT_SUFFIX}"):
            owner, _, evidence_id = path.name.removesuffix(INTENT_SUFFIX).rpartition(".")
            if owner == self._owner or owner_is_alive(self._staging_root, owner):
                continue
            try:
                body = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, FileNotFoundError):  # died while writing: nothing placed
                path.unlink(missing_ok=True)
                continue
            found.append(Intent(owner, body["engagement_id"], evidence_id, body["path"]))
        return found

    def _file(self, owner: str, evidence_id: str) -> Path:
        return self.directory / f"{owner}.{evidence_id}{INTENT_SUFFIX}"
