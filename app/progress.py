"""A progress line for long operator commands: files, bytes, rate and time left, on stderr.

On a terminal it redraws one line a few times a second; in a log (CI, `kubectl logs`) it
prints a line at every tenth of the way, so logs stay short.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from app.sizes import MIB


class Progress:
    def __init__(
        self, total_files: int, total_bytes: int, label: str, stream: TextIO | None = None
    ) -> None:
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.label = label
        self.stream = stream or sys.stderr
        self.files = 0
        self.bytes = 0
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._last_draw = 0.0
        self._last_tenth = -1
        self._tty = self.stream.isatty()

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.files += files
            self.bytes += nbytes
            self._draw(final=False)

    def finish(self) -> None:
        with self._lock:
            self._draw(final=True)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = self.bytes / elapsed
        left = self.total_bytes - self.bytes
        eta = f"{left / rate:4.0f}s" if rate > 0 and left > 0 else "   0s"
        return (
            f"{self.label}: {self.files}/{self.total_files} files, "
            f"{self.bytes / MIB:.1f}/{self.total_bytes / MIB:.1f} MiB, "
            f"{rate / MIB:.1f} MiB/s, {self.files / elapsed:.1f} files/s, ETA {eta}"
        )

    def _draw(self, final: bool) -> None:
        now = time.monotonic()
        if self._tty:
            if final or now - self._last_draw >= 0.2:
                self.stream.write("\r" + self.line() + ("\n" if final else ""))
                self.stream.flush()
                self._last_draw = now
            return
        tenth = self.files * 10 // max(self.total_files, 1)
        if final or tenth > self._last_tenth:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._last_tenth = tenth
