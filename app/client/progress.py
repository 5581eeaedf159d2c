"""A progress bar for one large transfer, on stderr, only where a person is watching.

Drawn only on a terminal and only for files worth waiting for, so pipes, logs and small
files stay quiet. Positions are absolute, so a retried upload simply starts the bar again.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from app.sizes import MIB

SHOW_FROM_BYTES = 8 * MIB
BAR_WIDTH = 24
LABEL_WIDTH = 28
REDRAW_SECONDS = 0.2


class ProgressBar:
    def __init__(self, label: str, total: int, stream: TextIO, enabled: bool) -> None:
        self.label = _fit(label)
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.done = 0
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if self.enabled and now - self._last_draw >= REDRAW_SECONDS:
            self._draw(end="")
            self._last_draw = now

    def close(self) -> None:
        """The last state and a newline, if anything was drawn (a bar left mid-line would
        swallow the next message)."""
        if self.enabled and (self._drawn or self.done >= self.total):
            self._draw(end="\n")

    def line(self) -> str:
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(fraction * BAR_WIDTH)
        elapsed = max(time.monotonic() - self._started, 1e-6)
        return (
            f"{self.label:<{LABEL_WIDTH}} [{'#' * filled}{'-' * (BAR_WIDTH - filled)}] "
            f"{fraction * 100:3.0f}% {self.done / MIB:.1f}/{self.total / MIB:.1f} MiB "
            f"{self.done / elapsed / MIB:.1f} MiB/s"
        )

    def _draw(self, end: str) -> None:
        self.stream.write("\r" + self.line() + end)
        self.stream.flush()
        self._drawn = True


def progress_bar(label: str, total: int, quiet: bool, stream: TextIO | None = None) -> ProgressBar:
    """A bar that draws only for >= 8 MiB on a terminal, and never with --quiet."""
    stream = stream or sys.stderr
    enabled = not quiet and total >= SHOW_FROM_BYTES and stream.isatty()
    return ProgressBar(label, total, stream, enabled)


def _fit(label: str) -> str:
    label = "".join(char if char.isprintable() else "?" for char in label)
    return label if len(label) <= LABEL_WIDTH else "..." + label[-(LABEL_WIDTH - 3) :]
