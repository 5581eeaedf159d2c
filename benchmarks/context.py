"""What every scenario gets (the options, a scratch directory, a progress line) and what it
gives back (rows for the table, and the per-round figures behind them for RESULTS.md)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from benchmarks.options import Options
from benchmarks.results import Row
from benchmarks.workdir import Workdir


@dataclass
class Context:
    options: Options
    workdir: Workdir
    started: float = field(default_factory=time.monotonic)

    def log(self, message: str) -> None:
        """Progress on stderr, so stdout carries only the table."""
        elapsed = time.monotonic() - self.started
        print(f"[bench {elapsed:6.0f}s] {message}", file=sys.stderr, flush=True)


@dataclass
class Outcome:
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # markdown lines, per round
