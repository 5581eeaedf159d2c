"""Progress on stderr for long transfers: one bar per large file (the client), or one line for
a run of many files (migrations, backfills). Both redraw one line on a terminal a few times a
second; in a log (CI, `kubectl logs`) the client stays quiet and a run prints a line at every
tenth of the way, so logs stay short. Positions are absolute, so a retried transfer simply
starts its bar again.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from app.sizes import MIB

SHOW_FROM_BYTES = 8 * MIB  # smaller files are done before a bar would help
BAR_WIDTH = 24
LABEL_WIDTH = 28
REDRAW_SECONDS = 0.2


class _Line:
    """One line on `stream`, redrawn in place at most every REDRAW_SECONDS."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.drawn = False
        self._started = time.monotonic()
        self._last_draw = 0.0

    def mib_per_second(self, nbytes: int) -> float:
        return nbytes / self.elapsed() / MIB

    def elapsed(self) -> float:
        return max(time.monotonic() - self._started, 1e-6)

    def redraw(self, line: str, *, final: bool) -> None:
        now = time.monotonic()
        if final or now - self._last_draw >= REDRAW_SECONDS:
            self.print("\r" + line, end="\n" if final else "")
            self._last_draw = now

    def print(self, text: str, end: str = "\n") -> None:
        self.stream.write(text + end)
        self.stream.flush()
        self.drawn = True


class ProgressBar:
    """One file's transfer."""

    def __init__(self, label: str, total: int, stream: TextIO, enabled: bool) -> None:
        self.label = _fit(label)
        self.total = total
        self.enabled = enabled
        self.done = 0
        self._line = _Line(stream)

    def update(self, done: int) -> None:
        self.done = done
        if self.enabled:
            self._line.redraw(self.line(), final=False)

    def close(self) -> None:
        """The last state and a newline, if anything was drawn (a bar left mid-line would
        swallow the next message)."""
        if self.enabled and (self._line.drawn or self.done >= self.total):
            self._line.redraw(self.line(), final=True)

    def line(self) -> str:
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(fraction * BAR_WIDTH)
        return (
            f"{self.label:<{LABEL_WIDTH}} [{'#' * filled}{'-' * (BAR_WIDTH - filled)}] "
            f"{fraction * 100:3.0f}% {self.done / MIB:.1f}/{self.total / MIB:.1f} MiB "
            f"{self._line.mib_per_second(self.done):.1f} MiB/s"
        )


def progress_bar(label: str, total: int, quiet: bool, stream: TextIO | None = None) -> ProgressBar:
    """A bar that draws only for >= 8 MiB on a terminal, and never with --quiet."""
    stream = stream or sys.stderr
    enabled = not quiet and total >= SHOW_FROM_BYTES and stream.isatty()
    return ProgressBar(label, total, stream, enabled)


class Progress:
    """A run of many files, advanced from several threads."""

    def __init__(
        self, total_files: int, total_bytes: int, label: str, stream: TextIO | None = None
    ) -> None:
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.label = label
        self.files = 0
        self.bytes = 0
        self._line = _Line(stream or sys.stderr)
        self._tty = self._line.stream.isatty()
        self._lock = threading.Lock()
        self._last_tenth = -1

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.files += files
            self.bytes += nbytes
            self._draw(final=False)

    def finish(self) -> None:
        with self._lock:
            self._draw(final=True)

    def line(self) -> str:
        rate = self._line.mib_per_second(self.bytes)
        left = (self.total_bytes - self.bytes) / MIB
        eta = f"{left / rate:4.0f}s" if rate > 0 and left > 0 else "   0s"
        return (
            f"{self.label}: {self.files}/{self.total_files} files, "
            f"{self.bytes / MIB:.1f}/{self.total_bytes / MIB:.1f} MiB, "
            f"{rate:.1f} MiB/s, {self.files / self._line.elapsed():.1f} files/s, ETA {eta}"
        )

    def _draw(self, final: bool) -> None:
        if self._tty:
            self._line.redraw(self.line(), final=final)
            return
        tenth = self.files * 10 // max(self.total_files, 1)
        if final or tenth > self._last_tenth:
            self._line.print(self.line())
            self._last_tenth = tenth


def _fit(label: str) -> str:
    label = "".join(char if char.isprintable() else "?" for char in label)
    return label if len(label) <= LABEL_WIDTH else "..." + label[-(LABEL_WIDTH - 3) :]
