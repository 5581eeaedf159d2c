"""Which index belongs to which local store, so a store is never served through another's index.

A local store is two directories: the evidence files (`LOCAL_STORAGE_PATH`) and their index
(`STATE_PATH/index.sqlite3`). Pointed at the wrong pair, kmflow used to serve records whose
files were elsewhere, and a rollback into a new directory "skipped" every record because the
old store's index already listed it, leaving the new directory empty. So each store carries an
identity and its index records the same one:

- the store's marker is a symbolic link `<store>/.kmflow-store -> kmflow-store:<identity>`.
  A link, not a file, so `find <store> -type f` still lists exactly the evidence files (the
  runbook's inventory), and creating it is atomic and fails if it exists (`symlink(2)`), so two
  workers starting on a new store agree on one identity without a lock. Engagement ids start
  with a letter or digit, so no engagement directory can take its name.
- the index keeps the identity and the store's path (for messages) in `store_identity`.

`check` decides read-only, before anything is created, whether the pair belongs together.
Where one side has no identity yet (a new store, a new index, or one from before identities)
the pair is judged by its content: an index with records belongs to a store that holds some of
their files; an empty index, to a store without kmflow files. At startup, `mark` and the
index's `bind` then write what is missing on either side.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

from app.storage.errors import StorageMisconfigured
from app.storage.fsync import fsync_directory
from app.storage.names import parse_stored_file_name
from app.storage.write_intents import open_intents

MARKER_NAME = ".kmflow-store"
_MARKER_PREFIX = "kmflow-store:"
INDEX_FILE = "index.sqlite3"
SAMPLE_SIZE = 32  # files looked for when one side has no identity yet
_FIX = (
    "set STATE_PATH (kmflow migrate: --state-dir) to this store's own index, or unset it to "
    "use the default beside the store"
)

BINDING_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_identity (
    only        INTEGER NOT NULL PRIMARY KEY CHECK (only = 1),
    identity    TEXT    NOT NULL,
    store_path  TEXT    NOT NULL
);
"""


class ForeignIndex(StorageMisconfigured):
    """The index at STATE_PATH is not the index of the store at LOCAL_STORAGE_PATH."""


@dataclass(frozen=True)
class IndexBinding:
    identity: str
    store_path: str


def read_marker(store: Path) -> str | None:
    try:
        target = os.readlink(store / MARKER_NAME)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno != errno.EINVAL:  # EINVAL: there, but not a link
            raise
        target = ""
    if not target.startswith(_MARKER_PREFIX):
        raise StorageMisconfigured(
            f"{store / MARKER_NAME} is not kmflow's store marker (a symbolic link to "
            f"'{_MARKER_PREFIX}<id>'); remove it if kmflow did not make it"
        )
    return target.removeprefix(_MARKER_PREFIX)


@dataclass(frozen=True)
class IndexContents:
    """What an index says about itself: whose it is, how many records, a few of its files."""

    binding: IndexBinding | None
    records: int
    known: list[str]  # paths of some records' files and of interrupted commits' files


def read_index(index_dir: Path, *, with_contents: bool) -> IndexContents:
    """Read-only, and a missing index is empty. The binding alone is one row; the contents
    (a count, and the first and last records by rowid: no scan) only when asked for."""
    path = index_dir / INDEX_FILE
    if not path.exists():
        return IndexContents(None, 0, [])
    # Read-write but only read: the last connection to close removes the WAL files it opened,
    # where a read-only one would leave them behind.
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=rw", uri=True)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        binding = None
        if "store_identity" in tables:
            row = db.execute("SELECT identity, store_path FROM store_identity").fetchone()
            binding = IndexBinding(*row) if row else None
        if not with_contents or "evidence_metadata" not in tables:
            return IndexContents(binding, 0, [])
        (count,) = db.execute("SELECT count(*) FROM evidence_metadata").fetchone()
        half = SAMPLE_SIZE // 2
        known = [
            row[0]
            for query in (
                "SELECT volume_path FROM evidence_metadata ORDER BY rowid LIMIT ?",
                "SELECT volume_path FROM evidence_metadata ORDER BY rowid DESC LIMIT ?",
            )
            for row in db.execute(query, (half,))
        ]
    # Files that interrupted commits placed or were placing, before any record was indexed.
    known += [intent.path for intent in open_intents(index_dir)[:half]]
    return IndexContents(binding, int(count), known)


def check(store: Path, index_dir: Path) -> str | None:
    """The identity the pair shares, or None if neither has one yet (it is then new); raises
    `ForeignIndex` with one line naming both paths if the index is not the store's. Changes
    nothing on disk."""
    marker = read_marker(store) if store.is_dir() else None
    binding = read_index(index_dir, with_contents=False).binding
    where = f"the index at {index_dir}"
    if binding is not None and marker is not None:  # every start but the first: one row read
        if binding.identity != marker:
            raise ForeignIndex(
                f"{where} belongs to the store at {binding.store_path}, not to {store}: {_FIX}"
            )
        return marker
    contents = read_index(index_dir, with_contents=True)
    records, known = contents.records, contents.known
    owner = f" (of the store at {binding.store_path})" if binding else ""
    if not any((store / relative).is_file() for relative in known):
        if records:
            raise ForeignIndex(
                f"{where} lists {records} records{owner} whose files are not in {store}: {_FIX}"
            )
        if _holds_stored_files(store):
            raise ForeignIndex(
                f"{store} holds kmflow evidence files but {where} has none of their "
                f"records{owner}: {_FIX}"
            )
    return marker or (binding.identity if binding else None)


def mark(store: Path, identity: str | None) -> str:
    """Give the store its marker (a new identity if `identity` is None); the marker already
    there wins a race, and is returned."""
    try:
        os.symlink(_MARKER_PREFIX + (identity or uuid.uuid4().hex), store / MARKER_NAME)
    except FileExistsError:
        pass
    else:
        fsync_directory(store)
    marker = read_marker(store)
    assert marker is not None
    return marker


def _holds_stored_files(store: Path) -> bool:
    """Whether any `<engagement>/<id>_<name>` file is in the store; stops at the first."""
    if not store.is_dir():
        return False
    for engagement in os.scandir(store):
        if engagement.is_dir(follow_symlinks=False):
            for entry in os.scandir(engagement.path):
                if entry.is_file(follow_symlinks=False) and parse_stored_file_name(entry.name):
                    return True
    return False
