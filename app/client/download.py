"""`kmflow download`: one record's bytes to a file, verified before it gets its name.

The bytes stream into `<target>.part`, hashed as they arrive; only when the SHA-256 and size
match the record is the part file synced and renamed into place, so the target name never
holds bytes that were not checked. A part file left by a dropped connection or an earlier
interrupted run is resumed with a Range request (and trusted only because the whole file is
verified at the end; if a resumed file does not match, it is fetched once more from the start).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from app.client.api import ApiClient, printable, segment
from app.client.errors import ClientError, CorruptTransfer, LocalProblem, Transient, Unavailable
from app.progress import ProgressBar, progress_bar
from app.sizes import CHUNK_BYTES

CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(?:\d+|\*)")


def download(
    api: ApiClient,
    engagement_id: str,
    evidence_id: str,
    output: Path | None,
    *,
    force: bool,
    quiet: bool,
) -> Path:
    what = f"download {evidence_id}"
    record_path = f"/evidence/{segment(engagement_id)}/{segment(evidence_id)}"
    record: dict[str, Any] = api.request(what, "GET", record_path).json()
    expected, size = str(record["content_hash"]), int(record["size_bytes"])
    target = choose_target(output, record.get("file_name"), evidence_id)
    if target.exists() and not force:
        raise LocalProblem(f"{target} exists; pass --force to replace it")
    if not target.parent.is_dir():
        raise LocalProblem(f"{target.parent} is not a directory")
    part = target.with_name(target.name + ".part")
    content_path = record_path + "/content"
    bar = progress_bar(f"download {target.name}", size, quiet)

    def fetch_with_retries() -> tuple[str, int, bool]:
        return api.retry.run(
            lambda: fetch(api, what, content_path, part, size, bar), what, api.notify
        )

    try:
        digest, received, resumed = fetch_with_retries()
        if resumed and (digest, received) != (expected, size):
            api.notify(f"{what}: the resumed file does not match; downloading it again")
            part.unlink()
            digest, received, _ = fetch_with_retries()
    except Unavailable:
        raise  # the part file stays: the next run resumes it
    except ClientError:
        part.unlink(missing_ok=True)
        raise
    except OSError as error:  # e.g. a full disk: the part file stays for a rerun
        raise ClientError(f"{what}: cannot write {part}: {error.strerror or error}") from None
    finally:
        bar.close()
    if (digest, received) != (expected, size):
        part.unlink(missing_ok=True)
        raise CorruptTransfer(
            f"{what}: received {received} bytes with sha256 {digest}, but the record says "
            f"{size} bytes with sha256 {printable(expected)}; nothing was kept"
        )
    try:
        place(part, target, force)
    except OSError as error:
        part.unlink(missing_ok=True)
        raise ClientError(f"{what}: cannot write {target}: {error.strerror or error}") from None
    return target


def fetch(
    api: ApiClient, what: str, content_path: str, part: Path, size: int, bar: ProgressBar
) -> tuple[str, int, bool]:
    """One attempt: (sha256 hex, bytes in the part file, whether it resumed earlier bytes)."""
    offset = part.stat().st_size if part.exists() else 0
    if not 0 < offset < size:
        offset = 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with api.stream(what, content_path, headers) as response:
        if response.status_code == 416:
            part.unlink(missing_ok=True)
            raise Transient("the server cannot resume this part file; starting over")
        if response.status_code == 206 and range_start(response) != offset:
            part.unlink(missing_ok=True)
            raise Transient("the server sent another range than asked; starting over")
        if response.status_code != 206:
            offset = 0  # a whole body: the server ignored the Range, or none was sent
        digest = hashlib.sha256()
        for chunk in read_prefix(part, offset):
            digest.update(chunk)
        received = offset
        with part.open("r+b" if offset else "wb") as file:
            file.seek(offset)
            file.truncate()
            try:
                for chunk in response.iter_bytes():  # as they arrive: a drop loses none
                    file.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(received)
                    if received > size:
                        break  # more than the record holds: a mismatch; stop filling the disk
            except httpx.StreamError as error:
                raise Transient(f"the download stream broke ({type(error).__name__})") from None
            file.flush()
            os.fsync(file.fileno())
    return digest.hexdigest(), received, offset > 0


def read_prefix(part: Path, length: int) -> Iterator[bytes]:
    """The first `length` bytes already in the part file, chunk by chunk."""
    if not length:
        return
    with part.open("rb") as file:
        left = length
        while left and (chunk := file.read(min(CHUNK_BYTES, left))):
            left -= len(chunk)
            yield chunk


def range_start(response: httpx.Response) -> int | None:
    match = CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else None


def choose_target(output: Path | None, server_name: object, evidence_id: str) -> Path:
    """-o as given (into it, if it is a directory); by default the server's name here."""
    name = safe_file_name(server_name if isinstance(server_name, str) else "", evidence_id)
    if output is None:
        return Path(name)
    return output / name if output.is_dir() else output


def safe_file_name(name: str, fallback: str) -> str:
    """A name from the server, made safe to create here: its last path component (either
    separator), control characters replaced, no leading dots (no hidden files, no `..`)."""
    for candidate in (name, fallback):
        last = re.split(r"[/\\]", candidate)[-1]
        cleaned = "".join(char if char.isprintable() else "_" for char in last)
        cleaned = cleaned.strip().lstrip(".")
        if cleaned:
            return cleaned
    return "evidence"


def place(part: Path, target: Path, force: bool) -> None:
    """Rename the verified part file to the target; without --force never replace a file,
    even one that appeared during the download (a hard link fails if the name exists)."""
    if force:
        os.replace(part, target)
        return
    try:
        os.link(part, target)
    except FileExistsError:
        part.unlink()
        raise LocalProblem(f"{target} appeared during the download; pass --force") from None
    except OSError:  # a filesystem without hard links: checked rename instead
        if target.exists():
            part.unlink()
            raise LocalProblem(f"{target} appeared during the download; pass --force") from None
        os.rename(part, target)
        return
    part.unlink()
