"""SHA-256 and size of a stream, read in bounded chunks."""

from __future__ import annotations

import hashlib
from typing import Protocol

from app.sizes import CHUNK_BYTES


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def sha256_of(stream: Readable) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size
