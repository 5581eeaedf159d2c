"""Every setting kmflow reads, from environment variables and an optional `.env` file.

Settings are built in `create_app` / the CLI, never at import time, so tests and each uvicorn
worker get their own. Unsafe combinations are refused here, before anything starts.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.sizes import MIB
from app.storage.delta.location import DeltaLocation, check_base_path
from app.storage.filesystems import network_mount

BackendName = Literal["local", "delta", "databricks"]

# Unity Catalog object names kmflow accepts: they are quoted with backticks in SQL, never bound.
_UC_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,254}")


class ConfigError(Exception):
    """A setting is invalid; the message is one line that names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    storage_backend: BackendName = "local"

    # Local backend and the process-local state every backend needs (staging, queues).
    local_storage_path: Path = Path("./evidence_store")
    # Unset: beside the store, one per store (`_state_path_follows_the_store`).
    state_path: Path = Path("./kmflow_state")

    # Delta Lake backend: files and the evidence_metadata table under one base (dir or s3://).
    delta_base_path: str = "./delta_store"
    delta_compact_every: int = Field(default=5, ge=2, le=10_000)
    delta_checkpoint_every: int = Field(default=100, ge=2, le=100_000)
    delta_log_retention_days: int = Field(default=30, ge=1, le=36_500)

    # Databricks backend (names and defaults from docs/databricks-upgrade-runbook.md).
    databricks_host: str | None = None
    # One way to authenticate: a token, or a service principal's OAuth M2M client credentials
    # (its application id and an OAuth secret); none: the SDK's own credential chain.
    databricks_token: SecretStr | None = None
    databricks_client_id: str | None = None
    databricks_client_secret: SecretStr | None = None
    # Unity Catalog keeps these names in lower case; they are lower-cased here (see below).
    databricks_catalog: str = "kmflow"
    databricks_schema: str = "evidence"
    databricks_volume: str = "raw_evidence"
    databricks_warehouse_id: str | None = None
    # How long one SQL statement may run (waiting, then polling) before kmflow gives up on it;
    # an upload whose metadata insert gives up still succeeds: the row waits in the outbox.
    databricks_statement_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # The SDK's own retry budget for 429/503 and connection errors, and its per-request timeout.
    databricks_retry_timeout_seconds: int = Field(default=60, ge=1, le=3600)
    databricks_http_timeout_seconds: int = Field(default=60, ge=1, le=3600)
    # How often queued metadata rows are retried while the warehouse does not answer.
    databricks_outbox_retry_seconds: float = Field(default=5.0, gt=0, le=3600)

    # HTTP API.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_workers: int = Field(default=1, ge=1, le=64)
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    max_upload_bytes: int = Field(default=5 * 1024 * MIB, ge=1)
    max_metadata_bytes: int = Field(default=64 * 1024, ge=2, le=MIB)
    # Operations: log lines, /metrics access, how long shutdown waits for requests in flight.
    log_format: Literal["text", "json"] = "text"
    metrics_public: bool = False
    shutdown_grace_seconds: int = Field(default=30, ge=0, le=3600)
    # How long an Idempotency-Key keeps naming its first upload.
    idempotency_key_ttl_seconds: int = Field(default=24 * 3600, ge=60, le=365 * 24 * 3600)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_api_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys_long_enough(cls, keys: list[SecretStr]) -> list[SecretStr]:
        if any(len(key.get_secret_value()) < 16 for key in keys):
            raise ValueError("every key must be at least 16 characters long")
        return keys

    @field_validator(
        "databricks_host",
        "databricks_token",
        "databricks_client_id",
        "databricks_client_secret",
        "databricks_warehouse_id",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("databricks_catalog", "databricks_schema", "databricks_volume")
    @classmethod
    def _unity_catalog_name(cls, value: str) -> str:
        """Lower case: Unity Catalog stores catalog, schema and volume names in lower case and
        matches them case-insensitively, but `/Volumes/...` paths and the names kmflow compares
        (grants, listings) are the stored, lower-case ones: `Kmflow` would miss them."""
        if not _UC_NAME.fullmatch(value):
            raise ValueError("must be 1-255 letters, digits, '_' or '-'")
        return value.lower()

    @field_validator("databricks_host")
    @classmethod
    def _host_is_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("must be a URL starting with https://")
        return value or None

    @field_validator("delta_base_path")
    @classmethod
    def _delta_base_is_dir_or_s3(cls, value: str) -> str:
        return check_base_path(value)

    @model_validator(mode="after")
    def _refuse_open_service_off_loopback(self) -> Settings:
        if not self.api_keys and not is_loopback(self.api_host):
            raise ValueError(
                f"API_KEYS is empty but API_HOST={self.api_host} is not a loopback address: "
                "set API_KEYS to serve beyond this machine"
            )
        return self

    @model_validator(mode="after")
    def _one_databricks_auth_method(self) -> Settings:
        """Chosen here, not by the SDK: given a token and client credentials at once it refuses
        ("more than one authorization method configured"), and only at the first request."""
        client_id, secret = self.databricks_client_id, self.databricks_client_secret
        if (client_id is None) != (secret is None):
            missing = "DATABRICKS_CLIENT_SECRET" if secret is None else "DATABRICKS_CLIENT_ID"
            raise ValueError(
                f"{missing} is not set: OAuth M2M needs both DATABRICKS_CLIENT_ID and "
                "DATABRICKS_CLIENT_SECRET"
            )
        if self.databricks_token is not None and client_id is not None:
            raise ValueError(
                "DATABRICKS_TOKEN and DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET are both set: "
                "configure one Databricks authentication method (a token, or OAuth M2M client "
                "credentials), not both"
            )
        return self

    @model_validator(mode="after")
    def _state_path_follows_the_store(self) -> Settings:
        """Unset, STATE_PATH is derived from LOCAL_STORAGE_PATH (`./kmflow_state` for the
        default store), so a store in a new directory gets its own index, never another's."""
        if "state_path" not in self.model_fields_set:
            self.state_path = default_state_path(self.local_storage_path)
        return self

    @model_validator(mode="after")
    def _state_path_on_a_local_disk(self) -> Settings:
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

    @property
    def databricks_auth_type(self) -> Literal["pat", "oauth-m2m"] | None:
        """The SDK's name for the configured method; None: the SDK's own credential chain."""
        if self.databricks_token is not None:
            return "pat"
        if self.databricks_client_id is not None:
            return "oauth-m2m"
        return None

    @property
    def databricks_credentials(self) -> str:
        """Where an operator fixes Databricks authentication, for error messages."""
        return {
            "pat": "DATABRICKS_TOKEN",
            "oauth-m2m": "DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET",
            None: "the Databricks SDK's own credentials, a profile or its environment (or set "
            "DATABRICKS_TOKEN, or DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET)",
        }[self.databricks_auth_type]

    @property
    def auth_mode(self) -> Literal["api_keys", "open_loopback"]:
        return "api_keys" if self.api_keys else "open_loopback"


def default_state_path(store: Path) -> Path:
    """Where a store's index lives when STATE_PATH is not set: beside the store, one per store.

    `kmflow_state` for a store named `evidence_store` (the default, and the images' layout
    `/data/evidence_store` + `/data/kmflow_state`), `<store name>.kmflow_state` for any other,
    so two stores in one directory (a rollback next to the original) never share an index.
    """
    store = store if store.name else store.resolve()  # "." has no name of its own
    name = "kmflow_state" if store.name == "evidence_store" else f"{store.name}.kmflow_state"
    return store.parent / name


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning pydantic's multi-line report into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        name = "_".join(str(part) for part in item["loc"] if isinstance(part, str)).upper()
        message = str(item["msg"]).removeprefix("Value error, ")
        if name:
            problems.append(f"{name}: {message}")
        else:
            problems.append(message)
    return "invalid configuration: " + "; ".join(problems)
