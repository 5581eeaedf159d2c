"""Write intents: the crash protocol of every commit, kept for the contract (`base`).

A commit places a file where no record points at it yet, then indexes it. A process that dies
in between leaves a file that nothing lists and nobody would ever remove. So before the file is
placed, an intent naming it is made durable; once the record is indexed (or the file removed),
the intent goes. At startup, each intent left by a dead process is settled: if the record is
findable, the file is evidence and stays; if not, the file is removed.

Each process appends its intents to one journal, `STATE_PATH/intents/<owner>.journal` (the
owner is the staging area's process id, whose liveness `owner_is_alive` tells): a line `+` when
an intent is made, `-` when it goes. The intents of concurrent commits share one write and one
`fdatasync` (`GroupCommit`), so an intent costs an upload a share of one flush, not a file and
two flushes of its own; a `-` needs no flush (a lost one only makes startup find the record
indexed). Once no intent is open the journal is emptied; under load that never lets every
intent close, it is rewritten with the open intents alone once it grows past a bound; a
process that ends with none open removes it. Journals are not in a staging directory because
a staging directory goes when its process ends, and an intent whose outcome is unknown must
outlive it. They hold nothing an acknowledged upload needs: a replica that loses STATE_PATH
loses at most the chance to remove a file nobody lists.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.storage.errors import CommitOutcomeUnknown, EvidenceExists, StorageError
from app.storage.fsync import fsync_directory
from app.storage.group_commit import GroupCommit
from app.storage.records import EvidenceRecord
from app.storage.staging import owner_is_alive

logger = logging.getLogger(__name__)

INTENTS_DIRECTORY = "intents"  # under STATE_PATH
JOURNAL_SUFFIX = ".journal"
REWRITE_SUFFIX = ".rewrite"  # a journal being rewritten; left only by a crash mid-rewrite
EMPTY_AT_BYTES = 64 * 1024  # with no intent open, a journal this long is emptied
COMPACT_AT_BYTES = 1024 * 1024  # under constant load some intent is always open: rewritten


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


def open_intents(state_path: Path) -> list[Intent]:
    """Every intent still open in the journals under `state_path`, of any process (read-only):
    for the store's identity check, operators and tests."""
    return [
        intent
        for journal in sorted((state_path / INTENTS_DIRECTORY).glob(f"*{JOURNAL_SUFFIX}"))
        for intent in _replay(journal)
    ]


class WriteIntents:
    """This process's journal, and the settling of dead processes' ones."""

    def __init__(self, directory: Path, staging_root: Path, owner: str) -> None:
        self.directory = directory
        self._staging_root = staging_root
        self._owner = owner
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            fsync_directory(directory.parent)
        self._journal = directory / f"{owner}{JOURNAL_SUFFIX}"
        self._fd: int | None = None  # opened by the first intent
        self._lock = threading.Lock()
        self._open: dict[str, bytes] = {}  # evidence id -> its `+` line
        self._group = GroupCommit(self._append_durably)
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

    def add(self, record: EvidenceRecord) -> None:
        """Durable on return. `EvidenceExists` if this process is storing the id already."""
        line = _encode(
            {"op": "+", "id": record.id, "engagement_id": record.engagement_id,
             "path": record.volume_path}
        )  # fmt: skip
        with self._lock:
            if record.id in self._open:
                raise EvidenceExists(f"record {record.id} is being stored already")
            self._open[record.id] = line
        try:
            self._group.submit(line)
        except BaseException:
            with self._lock:
                self._open.pop(record.id, None)
            raise

    def drop(self, evidence_id: str) -> None:
        with self._lock:
            if self._open.pop(evidence_id, None) is None:
                return
            fd = self._opened()
            if not self._open and os.fstat(fd).st_size >= EMPTY_AT_BYTES:
                os.ftruncate(fd, 0)  # nothing open: no line is needed any more
            else:
                os.write(fd, _encode({"op": "-", "id": evidence_id}))

    def retry_removals(self, remove: Remove) -> None:
        for evidence_id, path in list(self._unremoved.items()):
            self._remove_unacknowledged(evidence_id, path, remove)

    def settle(self, find: Find, remove: Remove) -> None:
        """Intents of dead processes: the file stays if `find` finds its record, else it goes.
        An intent the store cannot settle now stays for the next try."""
        for leftover in self.directory.glob(f"*{REWRITE_SUFFIX}"):
            if not owner_is_alive(self._staging_root, leftover.name.removesuffix(REWRITE_SUFFIX)):
                leftover.unlink(missing_ok=True)  # its journal still holds every line
        for journal in self.directory.glob(f"*{JOURNAL_SUFFIX}"):
            owner = journal.name.removesuffix(JOURNAL_SUFFIX)
            if owner == self._owner or owner_is_alive(self._staging_root, owner):
                continue
            settled, left = [], 0
            for intent in _replay(journal):
                try:
                    if find(intent.engagement_id, intent.evidence_id) is None:
                        remove(intent.path)
                        logger.info("removed the file of an interrupted write: %s", intent.path)
                except (StorageError, OSError) as error:
                    logger.warning("interrupted write %s left for later: %s", intent.evidence_id,
                                   error)  # fmt: skip
                    left += 1
                    continue
                settled.append(intent.evidence_id)
            if left:
                with journal.open("ab") as stream:
                    stream.write(b"\n")  # after a last line the crash may have cut short
                    stream.writelines(_encode({"op": "-", "id": i}) for i in settled)
            else:
                journal.unlink(missing_ok=True)

    def close(self) -> None:
        """A journal with no intent open goes; one with open intents stays for the next
        startup to settle."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if not self._open:
                self._journal.unlink(missing_ok=True)

    def _append_durably(self, lines: Sequence[bytes]) -> None:
        """`GroupCommit`'s flush: the lines of every intent made meanwhile, one flush. Flushes
        run one at a time, so a rewrite here never races another flush."""
        with self._lock:
            fd = self._opened()
            if os.fstat(fd).st_size < COMPACT_AT_BYTES:
                os.write(fd, b"".join(lines))
            else:
                fd = self._rewritten()  # holds `lines` too: they are open intents
        os.fdatasync(fd)

    def _rewritten(self) -> int:
        """(under the lock) The journal replaced by one holding only the open intents' lines,
        durably, before the old one goes."""
        fresh = self._journal.with_suffix(REWRITE_SUFFIX)
        fd = os.open(fresh, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"".join(self._open.values()))
            os.fdatasync(fd)
            os.replace(fresh, self._journal)
            fsync_directory(self.directory)
        except BaseException:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        return fd

    def _opened(self) -> int:
        """(under the lock) The journal's descriptor; creating the journal syncs the
        directory, so its lines cannot outlive its name."""
        if self._fd is None:
            existed = self._journal.exists()
            self._fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if not existed:
                fsync_directory(self.directory)
        return self._fd

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


def _encode(line: dict[str, str]) -> bytes:
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def _replay(journal: Path) -> list[Intent]:
    """The intents a journal leaves open; a line cut short by a crash is skipped."""
    owner = journal.name.removesuffix(JOURNAL_SUFFIX)
    opened: dict[str, Intent] = {}
    try:
        with journal.open("rb") as lines:
            for raw in lines:
                try:
                    line = json.loads(raw)
                    if line["op"] == "+":
                        opened[line["id"]] = Intent(
                            owner, line["engagement_id"], line["id"], line["path"]
                        )
                    else:
                        opened.pop(line["id"], None)
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:
        return []
    return list(opened.values())
