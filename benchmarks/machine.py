"""What the figures were measured on, printed above the table: figures from different
machines, or from the same machine with other versions, are not comparable."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

PACKAGES = ("uvicorn", "fastapi", "starlette", "python-multipart", "uvloop", "httptools")


def describe(workdir: Path) -> list[tuple[str, str]]:
    return [
        ("date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("cpu", f"{os.cpu_count()} cores, {_cpu_model()}"),
        ("memory", f"{_mem_total_gib():.1f} GiB"),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("python", sys.version.split()[0]),
        ("packages", ", ".join(f"{name} {_version(name)}" for name in PACKAGES)),
        ("nginx", _tool_version(["nginx", "-v"])),
        ("wrk", _tool_version(["wrk", "-v"]).split(" [")[0]),
        ("workdir filesystem", _filesystem(workdir)),
    ]


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown cpu"


def _mem_total_gib() -> float:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _filesystem(path: Path) -> str:
    """The longest mount point containing `path`, from /proc/mounts."""
    best = ("?", "?", "?")
    for line in _read("/proc/mounts").splitlines():
        device, mount, kind, *_ = line.split()
        if path.is_relative_to(mount) and len(mount) >= len(best[1]):
            best = (device, mount, kind)
    return f"{best[2]} on {best[1]} ({best[0]})"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _tool_version(command: list[str]) -> str:
    try:
        finished = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    text = (finished.stdout + finished.stderr).strip().splitlines()
    return text[0].removeprefix("nginx version: ") if text else "unknown"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
