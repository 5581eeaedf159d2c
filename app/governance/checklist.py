"""The validation checklist's vocabulary, shared by `verify` (over HTTP) and `verify_databricks`
(in the workspace): the options of a run, and one result per item."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

VERIFY_ENGAGEMENT_PREFIX = "kmflow-verify-"

Outcome = Literal["PASS", "FAIL", "SKIP"]
DATABRICKS_ITEMS = (
    "metadata row",
    "volume file count",
    "unity catalog tables",
    "service principal grants",
)


@dataclass(frozen=True)
class CheckResult:
    name: str
    outcome: Outcome
    detail: str

    def line(self) -> str:
        return f"{self.outcome}  {self.name}: {self.detail}"


@dataclass(frozen=True)
class VerifyOptions:
    url: str
    api_key: str | None = None
    engagement_id: str | None = None  # default: a fresh kmflow-verify-<hex>
    inventory: Path | None = None  # the runbook's Step 1 output
    catalog_entries: Path | None = None  # the file given to `kmflow catalog register`
    principal: str = "kmflow-api"
    row_wait_seconds: float = 30.0  # a row may sit in the server's outbox for a moment
