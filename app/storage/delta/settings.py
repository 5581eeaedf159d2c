"""The delta backend's settings: read with the other settings (`app.settings.Settings`), from
the same environment variables, and checked at startup with them."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from app.storage.delta.location import check_base_path


class DeltaSettings(BaseSettings):
    # Delta Lake backend: files and the evidence_metadata table under one base (dir or s3://).
    delta_base_path: str = "./delta_store"
    delta_compact_every: int = Field(default=5, ge=2, le=10_000)
    delta_checkpoint_every: int = Field(default=100, ge=2, le=100_000)
    delta_log_retention_days: int = Field(default=30, ge=1, le=36_500)
    # A purge's log cut keeps entries this young: a replica committing meanwhile never reuses
    # a version number the cut freed (`log_table.DeltaLogTable.expunge`).
    delta_purge_log_grace_seconds: int = Field(default=300, ge=0, le=86_400)

    @field_validator("delta_base_path")
    @classmethod
    def _delta_base_is_dir_or_s3(cls, value: str) -> str:
        return check_base_path(value)
