"""HTTP conditional and range requests for stored bytes (RFC 9110 sections 13 and 14).

One range per request: a client fetching a large file in parts asks for one part at a time.
A `Range` with several ranges, another unit or bad syntax is ignored and the whole file is
sent, as the RFC allows; a well-formed range that starts past the end is a 416.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.api.errors import ApiError

_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class ByteRange:
    start: int
    length: int

    @property
    def end(self) -> int:
        """Inclusive, as Content-Range says it."""
        return self.start + self.length - 1


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison, as If-None-Match uses: `W/` prefixes do not matter; `*` matches."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def requested_range(
    header: str | None, size: int, if_range: str | None, etag: str
) -> ByteRange | None:
    """The one range to send, or None for the whole file; raises a 416 ApiError."""
    if not header:
        return None
    if if_range is not None and if_range.strip() != etag:
        return None  # the client's partial copy is of other bytes: send them all
    match = _SINGLE_RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        count = int(last)
        if count == 0:
            raise _not_satisfiable(size)
        start = max(0, size - count)
        return ByteRange(start, size - start)
    start = int(first)
    end = size - 1 if not last else min(int(last), size - 1)
    if last and int(last) < start:
        return None  # invalid syntax: ignored
    if start >= size:
        raise _not_satisfiable(size)
    return ByteRange(start, end - start + 1)


def _not_satisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        "range_not_satisfiable",
        f"the range lies outside the file ({size} bytes)",
        headers={"Content-Range": f"bytes */{size}"},
    )
