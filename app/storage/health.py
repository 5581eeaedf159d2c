"""How a backend reports on itself: each of its parts probed on its own, and what follows.

A backend names its parts (`StorageBackend.probes`); everything else is derived here, once:
readiness (every essential part answers), the operators' status (ok, degraded, unavailable) and
the facts `/api/v1/health` shows, which the probes record as they run.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.storage.errors import StorageUnavailable

Facts = dict[str, Any]
Status = Literal["ok", "degraded", "unavailable"]


class Check(BaseModel):
    """One part of a backend probed on its own, for operators (`/health/detail`)."""

    name: str
    ok: bool
    essential: bool = Field(description="If this fails the backend cannot store evidence.")
    latency_ms: float
    detail: str | None = None
    # What the probe found, for `/api/v1/health`'s details (plain JSON values, never secrets).
    facts: Facts = Field(default_factory=dict, exclude=True)


@dataclass(frozen=True)
class Probe:
    """A named check. `run` fills `facts` with what it finds and returns a detail line, or
    raises to say the part is not fine; the facts it recorded before raising are kept."""

    name: str
    run: Callable[[Facts], str | None]
    essential: bool = True

    def check(self) -> Check:
        facts: Facts = {}
        start = time.perf_counter()
        try:
            detail, ok = self.run(facts), True
        except Exception as error:  # noqa: BLE001  (a probe reports any failure, never raises)
            detail, ok = _first_line(error), False
        latency = round((time.perf_counter() - start) * 1000, 3)
        return Check(
            name=self.name,
            ok=ok,
            essential=self.essential,
            latency_ms=latency,
            detail=detail,
            facts=facts,
        )


class BackendHealth(BaseModel):
    """Every probe's check, and what they mean together."""

    checks: list[Check]

    @property
    def reachable(self) -> bool:
        """The backend can take and serve evidence now: every essential part answers."""
        return all(check.ok for check in self.checks if check.essential)

    @property
    def status(self) -> Status:
        if not self.reachable:
            return "unavailable"
        return "ok" if all(check.ok for check in self.checks) else "degraded"

    @property
    def details(self) -> Facts:
        """Every probe's facts; when unreachable, `error` names the first essential failure."""
        details: Facts = {}
        for check in self.checks:
            details.update(check.facts)
        failed = next((c for c in self.checks if c.essential and not c.ok), None)
        if failed is not None:
            details.setdefault("error", failed.detail or failed.name)
        return details


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
