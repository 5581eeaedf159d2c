"""`kmflow audit`: an engagement's audit trail, page by page, as a table or JSON Lines (needs a
key with the `audit` role). Printed as pages arrive, so a trail of any length lists in flat
memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TextIO

from app.client.api import ApiClient, printable
from app.client.listing import print_json_lines

__all__ = ["events", "print_json_lines", "print_table"]

PAGE_SIZE = 500
COLUMNS = ("occurred_at", "principal", "action", "evidence_id", "outcome")
WIDTHS = (27, 24, 9, 32, 12)


def events(api: ApiClient, engagement_id: str) -> Iterator[dict[str, Any]]:
    """Every event, oldest first, following `next_cursor` to the end."""
    params: dict[str, str | int] = {"engagement_id": engagement_id, "limit": PAGE_SIZE}
    return api.items(f"audit {engagement_id}", "/audit", params)


def print_table(items: Iterator[dict[str, Any]], out: TextIO) -> int:
    """A header and one row per event, with its detail (a reason, a range) last."""
    count = 0
    for item in items:
        if count == 0:
            print(_row([name.upper() for name in COLUMNS], "DETAIL"), file=out)
        values = [printable(str(item.get(name) or "-")) for name in COLUMNS]
        print(_row(values, printable(str(item.get("detail") or ""))), file=out)
        count += 1
    return count


def _row(values: list[str], detail: str) -> str:
    cells = [f"{value:<{width}}" for value, width in zip(values, WIDTHS, strict=True)]
    return "  ".join([*cells, detail]).rstrip()
