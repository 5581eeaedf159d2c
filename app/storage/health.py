"""How a backend reports on itself: reachable or not, and each of its parts probed on its own."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from app.storage.errors import StorageUnavailable


class BackendHealth(BaseModel):
    reachable: bool
    details: dict[str, Any] = Field(default_factory=dict)


class Check(BaseModel):
    """One part of a backend probed on its own, for operators (`/health/detail`)."""

    name: str
    ok: bool
    essential: bool = Field(description="If this fails the backend cannot store evidence.")
    latency_ms: float
    detail: str | None = None


@dataclass(frozen=True)
class Probe:
    """A named check: `run` returns a detail line, or raises to say the part is not fine."""

    name: str
    run: Callable[[], str | None]
    essential: bool = True

    def check(self) -> Check:
        start = time.perf_counter()
        try:
            detail, ok = self.run(), True
        except Exception as error:  # noqa: BLE001  (a probe reports any failure, never raises)
            detail, ok = _first_line(error), False
        latency = round((time.perf_counter() - start) * 1000, 3)
        return Check(
            name=self.name, ok=ok, essential=self.essential, latency_ms=latency, detail=detail
        )


MIN_FREE_DISK_BYTES = 1024**3


def free_disk(path: Path) -> str:
    """A probe of the disk under `path`: fails below 1 GiB free (uploads would soon fail)."""
    usage = shutil.disk_usage(path)
    detail = f"{usage.free} bytes free of {usage.total} ({usage.free / usage.total:.0%})"
    if usage.free < MIN_FREE_DISK_BYTES:
        raise StorageUnavailable(f"low disk space: {detail}")
    return detail


def _first_line(error: BaseException) -> str:
    text = str(error).splitlines()[0][:300] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
