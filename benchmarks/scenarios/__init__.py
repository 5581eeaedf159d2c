"""The benchmark's scenarios, one module each; `REGISTRY` maps the `--only` names to them."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.context import Context, Outcome
from benchmarks.scenarios import (
    databricks,
    databricks_latency,
    download,
    large_upload,
    listing,
    small_uploads,
    upload_steps,
)

Scenario = Callable[[Context], Outcome]

REGISTRY: dict[str, Scenario] = {
    "large_upload": large_upload.run,
    "small_uploads": small_uploads.run,
    "listing": listing.run,
    "download": download.run,
    "databricks": databricks.run,
    "databricks_latency": databricks_latency.run,
    "upload_steps": upload_steps.run,
}
