"""A multipart/form-data body built once into a file, so wrk can send exactly what a browser
or `curl -F` would send, at wrk's speed, to kmflow and the naive app alike; with a mark in the
file's bytes that bounded.lua makes unique per request."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping

# bounded.lua replaces this with 32 digits of its own in every request it sends.
UNIQUE_MARK = b"@@@@KMFLOW-BENCH-UNIQUE-MARK@@@@"


def unique_content(size: int) -> bytes:
    """Random bytes starting with UNIQUE_MARK: each request then sends different bytes."""
    if size < len(UNIQUE_MARK):
        raise ValueError(f"content must be at least {len(UNIQUE_MARK)} bytes")
    return UNIQUE_MARK + os.urandom(size - len(UNIQUE_MARK))


def multipart_form(
    fields: Mapping[str, str], file_name: str, content: bytes, boundary: str | None = None
) -> tuple[bytes, str]:
    """(body, Content-Type header value): the text fields first, then the file part."""
    boundary = boundary or f"----kmflowbench{uuid.uuid4().hex}"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
