"""`kmflow ls`: every record of an engagement, page by page, as a table or JSON Lines.

Output is written as pages arrive, so an engagement of any size lists in flat memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TextIO

from app.client.api import ApiClient, printable, segment

PAGE_SIZE = 100
ID_WIDTH = 32
STORED_AT_WIDTH = 27
SIZE_WIDTH = 10
UNITS = ("KiB", "MiB", "GiB", "TiB")


def records(
    api: ApiClient, engagement_id: str, content_hash: str | None = None
) -> Iterator[dict[str, Any]]:
    """All records, newest first, following `next_cursor` to the end. The hash filter is
    applied here too, so an older server that ignores the parameter still lists only matches."""
    params: dict[str, str | int] = {"limit": PAGE_SIZE}
    if content_hash:
        params["content_hash"] = content_hash
    path = f"/evidence/{segment(engagement_id)}"
    for item in api.items(f"list {engagement_id}", path, params):
        if content_hash is None or item.get("content_hash") == content_hash:
            yield item


def print_table(items: Iterator[dict[str, Any]], out: TextIO) -> int:
    """A header and one row per record: id, stored_at, size, name. Returns the row count."""
    count = 0
    for item in items:
        if count == 0:
            print(row("ID", "STORED_AT", "SIZE", "NAME"), file=out)
        print(
            row(
                printable(str(item["id"])),
                printable(str(item["stored_at"])),
                human_size(int(item["size_bytes"])),
                printable(str(item["file_name"])),
            ),
            file=out,
        )
        count += 1
    return count


def print_json_lines(items: Iterator[dict[str, Any]], out: TextIO) -> int:
    count = 0
    for item in items:
        print(json.dumps(item), file=out)
        count += 1
    return count


def row(evidence_id: str, stored_at: str, size: str, name: str) -> str:
    return (
        f"{evidence_id:<{ID_WIDTH}}  {stored_at:<{STORED_AT_WIDTH}}  {size:>{SIZE_WIDTH}}  {name}"
    )


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in UNITS:
        value /= 1024
        if value < 1024 or unit == UNITS[-1]:
            break
    return f"{value:.1f} {unit}"
