"""fsync for paths: what makes a file's bytes, or a new name in a directory, survive power loss."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from app.storage.errors import EvidenceExists
from app.storage.group_commit import GroupCommit


def fsync_directory(path: Path) -> None:
    """Make a rename or a new entry in `path` survive power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as error:  # some filesystems refuse fsync on directories
        if error.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def link_into_place(source: Path, target: Path) -> None:
    """Give `source`'s bytes the name `target`, never replacing a file already there (a rename
    would); the caller removes `source` afterwards."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise EvidenceExists(f"{target.name} is already stored; nothing was replaced") from None


class SharedDirectorySync:
    """`fsync_directory` shared by the commits waiting for one (`GroupCommit`): uploads that
    land in one engagement directory at the same time cost one directory flush, not one each.
    A flush covers every entry made before it starts, and a caller's batch starts after the
    caller's entry was made."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[Path, GroupCommit[Path, None]] = {}

    def sync(self, directory: Path) -> None:
        with self._lock:
            group = self._groups.get(directory)
            if group is None:
                group = self._groups[directory] = GroupCommit(_sync_first)
        group.submit(directory)


def _sync_first(directories: Sequence[Path]) -> None:
    fsync_directory(directories[0])  # a group holds one directory


def remove_tree(directory: Path, root: Path) -> list[str]:
    """Delete every file under `directory`, then its directories and itself, durably (the
    parent's entry fsynced); the files' paths relative to `root`. Nothing there: []."""
    if not directory.is_dir():
        return []
    removed = []
    for path in sorted(directory.rglob("*"), reverse=True):  # files before their directories
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink()
            removed.append(path.relative_to(root).as_posix())
    directory.rmdir()
    fsync_directory(directory.parent)
    return removed
