"""fsync for paths: what makes a file's bytes, or a new name in a directory, survive power loss."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from app.storage.errors import EvidenceExists


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
