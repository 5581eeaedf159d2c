"""`kmflow upload`: stream files to the server, each once, with its digest checked both ways.

Per file: hash it (one read), then send it streamed from disk with an Idempotency-Key made
for this file and run, and a Repr-Digest of the hashed bytes. A retry sends the same key, so
the server stores the file once however many attempts it takes; a Repr-Digest the bytes do
not match makes the server refuse rather than store; and the record it returns must carry
the same hash and size, or the run fails with the digest-mismatch code.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, TextIO, cast

from app.client.api import ApiClient, printable
from app.client.errors import ClientError, CorruptTransfer, ExitCode, LocalProblem
from app.progress import ProgressBar, progress_bar
from app.sizes import CHUNK_BYTES


def check_readable(paths: Sequence[Path]) -> None:
    """Before anything is sent: every input is a readable regular file."""
    for path in paths:
        if not path.is_file():
            raise LocalProblem(f"{path}: no such file (or not a regular file)")
        if not os.access(path, os.R_OK):
            raise LocalProblem(f"{path}: not readable")


def upload_all(
    api: ApiClient,
    paths: Sequence[Path],
    engagement_id: str,
    metadata: str | None,
    *,
    quiet: bool,
    as_json: bool,
    out: TextIO | None = None,
) -> ExitCode:
    """Upload each file; a failed file is reported and the rest still go, unless the server
    is unreachable or refuses the key (every later file would fail the same way)."""
    out = out or sys.stdout  # looked up now: sys.stdout may have been replaced since import
    check_readable(paths)
    worst = ExitCode.OK
    for path in paths:
        try:
            record = upload_file(api, path, engagement_id, metadata, quiet=quiet)
        except ClientError as error:
            print(f"kmflow: {error}", file=sys.stderr)
            worst = max(worst, error.exit_code)
            if error.exit_code in (ExitCode.UNAVAILABLE, ExitCode.AUTH):
                break
            continue
        if as_json:
            print(json.dumps(record), file=out)
        else:
            print(f"{record['id']}  {path}", file=out)
        if not quiet and record.get("duplicate_of"):
            earlier = ", ".join(str(item) for item in record["duplicate_of"])
            print(f"kmflow: {path}: same bytes as earlier evidence {earlier}", file=sys.stderr)
    return worst


def upload_file(
    api: ApiClient, path: Path, engagement_id: str, metadata: str | None, *, quiet: bool
) -> dict[str, Any]:
    try:
        return _upload_file(api, path, engagement_id, metadata, quiet=quiet)
    except OSError as error:
        raise ClientError(f"upload {path}: {error.strerror or error}") from None


def _upload_file(
    api: ApiClient, path: Path, engagement_id: str, metadata: str | None, *, quiet: bool
) -> dict[str, Any]:
    sha256, size = hash_file(path, quiet=quiet)
    fields = {"engagement_id": engagement_id}
    if metadata is not None:
        fields["metadata"] = metadata
    headers = {"Idempotency-Key": uuid.uuid4().hex, "Repr-Digest": repr_digest(sha256)}
    bar = progress_bar(f"upload {path.name}", size, quiet)
    try:
        with path.open("rb") as file:
            body = cast(BinaryIO, CountingReader(file, size, bar))  # httpx: read, seek, tell
            response = api.request(
                f"upload {path}",
                "POST",
                "/evidence/upload",
                data=fields,
                files={"file": (path.name, body, "application/octet-stream")},
                headers=headers,
            )
    finally:
        bar.close()
    record: dict[str, Any] = response.json()
    if record.get("content_hash") != sha256 or record.get("size_bytes") != size:
        raise CorruptTransfer(
            f"upload {path}: the server stored sha256 {printable(str(record.get('content_hash')))} "
            f"({record.get('size_bytes')} bytes) but the file has {sha256} ({size} bytes)"
        )
    return record


def hash_file(path: Path, *, quiet: bool) -> tuple[str, int]:
    """(SHA-256 hex, size) in one bounded read; large files show a bar meanwhile."""
    digest = hashlib.sha256()
    size = 0
    bar = progress_bar(f"hash {path.name}", path.stat().st_size, quiet)
    try:
        with path.open("rb") as file:
            while chunk := file.read(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
                bar.update(size)
    finally:
        bar.close()
    return digest.hexdigest(), size


def repr_digest(sha256_hex: str) -> str:
    """RFC 9530 Repr-Digest: the raw digest in base64, as a structured-field byte sequence."""
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode()}:"


class CountingReader:
    """The file as httpx reads it for the multipart body: exactly the `size` bytes that were
    hashed (a file that grew since is not sent past them; one that shrank fails the upload),
    moving the bar as it goes. httpx seeks to 0 before each attempt, restarting the bar."""

    def __init__(self, file: BinaryIO, size: int, bar: ProgressBar) -> None:
        self._file = file
        self._size = size
        self._bar = bar
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        left = self._size - self._position
        wanted = left if size < 0 else min(size, left)
        data = self._file.read(wanted) if wanted > 0 else b""
        if wanted > 0 and not data:  # else the body falls short of its Content-Length
            raise OSError("the file became shorter while it was being sent")
        self._position += len(data)
        self._bar.update(self._position)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = min(max(base + offset, 0), self._size)
        self._file.seek(self._position)
        self._bar.update(self._position)
        return self._position

    def tell(self) -> int:
        return self._position
