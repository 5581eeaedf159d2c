"""Integrity fields of HTTP (RFC 9530): what a client says its bytes hash to, and ours.

On an upload, `Repr-Digest` is read as the digest of the evidence file (the representation
being stored) and the form field `sha256` says the same in hex; `Content-Digest` keeps its RFC
meaning, the digest of the request content as sent (the whole multipart body). Only sha-256 is
checked; other algorithms in the same field are ignored, as the RFC asks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from app.api.errors import ApiError, invalid_request
from app.storage.names import SHA256_HEX_ANY_CASE_PATTERN

SHA256_HEX = re.compile(SHA256_HEX_ANY_CASE_PATTERN)
ALGORITHM = "sha-256"


def sha256_from_field(value: str, header: str) -> str | None:
    """The sha-256 member of a digest field, as lowercase hex; None if it has none."""
    for member in value.split(","):
        name, _, item = member.partition("=")
        if name.strip().lower() != ALGORITHM:
            continue
        token = item.split(";")[0].strip()
        if len(token) < 2 or token[0] != ":" or token[-1] != ":":
            raise invalid_request(f"{header}: {ALGORITHM} must be a byte sequence, :base64:")
        try:
            raw = base64.b64decode(token[1:-1], validate=True)
        except binascii.Error:
            raise invalid_request(f"{header}: {ALGORITHM} is not valid base64") from None
        if len(raw) != hashlib.sha256().digest_size:
            raise invalid_request(f"{header}: {ALGORITHM} must be 32 bytes")
        return raw.hex()
    return None


def sha256_from_hex(value: str, field: str) -> str:
    if not SHA256_HEX.fullmatch(value.strip()):
        raise invalid_request(f"{field} must be a SHA-256 in 64 hex digits")
    return value.strip().lower()


def agreed(claims: dict[str, str]) -> str | None:
    """The one file digest the client claims (by where it said it), or None if it made none."""
    values = set(claims.values())
    if len(values) > 1:
        sources = ", ".join(f"{source}={value}" for source, value in sorted(claims.items()))
        raise ApiError(400, "digest_mismatch", f"the digests sent disagree: {sources}")
    return values.pop() if values else None


def repr_digest(content_hash: str) -> str:
    """Our `Repr-Digest` for stored bytes whose sha-256 is `content_hash` (hex)."""
    encoded = base64.b64encode(bytes.fromhex(content_hash)).decode("ascii")
    return f"{ALGORITHM}=:{encoded}:"
