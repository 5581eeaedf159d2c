"""Every setting kmflow reads: the shared ones (`app.config`) and each backend's own, read
together from the environment (and `.env`) and checked at once, so any bad variable stops the
service at startup with one line naming it, whichever backend is chosen."""

from __future__ import annotations

from typing import Self

from pydantic import ValidationError, model_validator
from pydantic_settings import SettingsConfigDict

from app.config import ConfigError, SharedSettings, describe_validation_error
from app.storage.databricks.settings import DatabricksSettings
from app.storage.delta.location import DeltaLocation
from app.storage.delta.settings import DeltaSettings
from app.storage.filesystems import network_mount


class Settings(SharedSettings, DeltaSettings, DatabricksSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    @model_validator(mode="after")
    def _state_path_on_a_local_disk(self) -> Self:
        """Where STATE_PATH holds a backend's SQLite databases (see app.storage.filesystems),
        not on a network filesystem. For databricks and delta on s3:// it is scratch only."""
        if self.state_path_is_scratch:
            return self
        mount = network_mount(self.state_path)
        if mount is not None:
            kept = {
                "local": "STORAGE_BACKEND=local keeps its metadata index and Idempotency-Key "
                "claims there",
                "delta": "STORAGE_BACKEND=delta with a local DELTA_BASE_PATH keeps its "
                "Idempotency-Key claims there",
            }[self.storage_backend]
            raise ValueError(
                f"STATE_PATH={self.state_path} is on a network filesystem ({mount.fs_type} "
                f"mounted at {mount.mount_point}): {kept}, in SQLite, whose locking is "
                "unreliable over a network, and no two machines may share them; put STATE_PATH "
                "on a local disk (one pod, a block-storage volume), or run several replicas "
                "with STORAGE_BACKEND=databricks or delta on an s3:// DELTA_BASE_PATH"
            )
        return self

    @property
    def state_path_is_scratch(self) -> bool:
        """True where everything that must last is on the shared backend (databricks, delta on
        s3://): STATE_PATH then only stages uploads in flight, and may be lost or per replica."""
        if self.storage_backend == "databricks":
            return True
        return (
            self.storage_backend == "delta"
            and not DeltaLocation.parse(self.delta_base_path).is_local
        )


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning pydantic's multi-line report into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None
