"""Retries with backoff for failures that may pass: no connection, timeouts, 502/503/504,
and an upload whose first attempt the server is still storing.

Retrying is safe because every request the client repeats is idempotent: reads are, and an
upload carries the same Idempotency-Key on every attempt, so the server stores it once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from app.client.errors import Transient, Unavailable

T = TypeVar("T")

RETRY_STATUSES = frozenset({502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 8.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def delay(self, failed_attempt: int, retry_after: float | None) -> float:
        """Doubling from `first_delay`; a server's Retry-After wins, within reason."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER_SECONDS)
        return float(min(self.first_delay * 2 ** (failed_attempt - 1), self.max_delay))

    def run(self, attempt: Callable[[], T], what: str, notify: Callable[[str], None]) -> T:
        """`attempt()` until it returns or raises something other than Transient."""
        for number in range(1, self.attempts + 1):
            try:
                return attempt()
            except Transient as failure:
                if number == self.attempts:
                    tries = "1 attempt" if number == 1 else f"{number} attempts"
                    raise Unavailable(f"{what}: {failure.reason} (gave up after {tries})") from None
                wait = self.delay(number, failure.retry_after)
                notify(
                    f"{what}: {failure.reason}; retrying in {wait:.1f}s "
                    f"(attempt {number + 1} of {self.attempts})"
                )
                self.sleep(wait)
        raise AssertionError("unreachable: attempts is at least 1")


def retry_after_seconds(header: str | None) -> float | None:
    """Retry-After in its seconds form; the HTTP-date form is rare enough to ignore."""
    if header is None:
        return None
    try:
        return float(header)
    except ValueError:
        return None
