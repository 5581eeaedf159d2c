"""CPU time of server processes, read from /proc: what the requests of a run cost a server
(user and kernel), apart from the time they spend waiting on the disk."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuTime:
    user_seconds: float
    kernel_seconds: float

    def __sub__(self, other: CpuTime) -> CpuTime:
        return CpuTime(
            self.user_seconds - other.user_seconds, self.kernel_seconds - other.kernel_seconds
        )


def cpu_time(pids: Iterable[int]) -> CpuTime:
    """User and kernel time of the processes (all their threads) so far."""
    user = kernel = 0
    for pid in pids:
        try:
            ticks = parse_stat_ticks((PROC / str(pid) / "stat").read_text())
        except OSError:
            continue  # ended meanwhile
        user += ticks[0]
        kernel += ticks[1]
    return CpuTime(user / TICKS_PER_SECOND, kernel / TICKS_PER_SECOND)


def parse_stat_ticks(stat: str) -> tuple[int, int]:
    """(utime, stime) from /proc/PID/stat: fields 14 and 15, counted after the command name,
    which is in parentheses and may itself hold spaces."""
    fields = stat.rpartition(")")[2].split()
    return int(fields[11]), int(fields[12])
