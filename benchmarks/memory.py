"""Peak resident memory of server processes, read from /proc.

`echo 5 > /proc/PID/clear_refs` resets the kernel's high-water mark (VmHWM) to the current
RSS, so a peak read after a transfer belongs to that transfer and not to whatever the process
did before (startup, an earlier round).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its living descendants (uvicorn's workers, nginx's workers)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in (PROC / str(current) / "task").glob("*/children"):
            try:
                pending += [int(child) for child in task.read_text().split()]
            except OSError:
                continue  # the task ended while we looked
    return found


def reset_peaks(pids: Iterable[int]) -> None:
    for pid in pids:
        (PROC / str(pid) / "clear_refs").write_text("5")


def peak_rss_mib(pid: int) -> float:
    return parse_vmhwm_kib((PROC / str(pid) / "status").read_text()) / 1024


def parse_vmhwm_kib(status: str) -> int:
    """The `VmHWM:   60544 kB` line of /proc/PID/status."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise ValueError("no VmHWM line in the status text")
