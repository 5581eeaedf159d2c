"""Payload files: random bytes (so nothing on the path can compress or deduplicate them),
written once per run and read from the page cache by every target alike."""

from __future__ import annotations

import os
from pathlib import Path

CHUNK = 8 * 1024 * 1024


def random_file(path: Path, size: int) -> Path:
    with path.open("xb") as out:
        remaining = size
        while remaining > 0:
            piece = min(CHUNK, remaining)
            out.write(os.urandom(piece))
            remaining -= piece
    return path


def repeated_file(path: Path, source: Path, times: int) -> Path:
    """`times` copies of `source` end to end: a large file without generating it all."""
    with path.open("xb") as out:
        for _ in range(times):
            with source.open("rb") as chunk_source:
                while block := chunk_source.read(CHUNK):
                    out.write(block)
    return path
