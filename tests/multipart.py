"""Builds multipart bodies byte by byte, so tests can send what real clients (and attackers)
send, including names a client library would refuse to encode."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping

CHUNK = 1024 * 1024


def multipart_body(
    fields: Mapping[str, str],
    file_name: str | bytes | None = None,
    content: bytes = b"",
    boundary: str | None = None,
) -> tuple[bytes, str]:
    """(body, content type) with the text fields first and then the file part, if any."""
    boundary = boundary or uuid.uuid4().hex
    head, tail = multipart_envelope(fields, file_name, boundary)
    return head + content + tail, f"multipart/form-data; boundary={boundary}"


def multipart_envelope(
    fields: Mapping[str, str], file_name: str | bytes | None, boundary: str
) -> tuple[bytes, bytes]:
    """The bytes before and after the file's content."""
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    head = b"".join(parts)
    if file_name is None:
        return head, f"--{boundary}--\r\n".encode()
    raw_name = file_name if isinstance(file_name, bytes) else file_name.encode()
    head += (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="'
        + raw_name
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    return head, f"\r\n--{boundary}--\r\n".encode()


def streamed_multipart(
    fields: Mapping[str, str], file_name: str, size: int, pattern: bytes
) -> tuple[Iterator[bytes], int, str]:
    """A large body generated on the fly: (chunks, content length, content type)."""
    boundary = uuid.uuid4().hex
    head, tail = multipart_envelope(fields, file_name, boundary)
    block = (pattern * (CHUNK // len(pattern) + 1))[:CHUNK]

    def chunks() -> Iterator[bytes]:
        yield head
        remaining = size
        while remaining:
            piece = block[: min(remaining, CHUNK)]
            remaining -= len(piece)
            yield piece
        yield tail

    return chunks(), len(head) + size + len(tail), f"multipart/form-data; boundary={boundary}"
