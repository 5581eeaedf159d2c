"""The settings every backend shares, from environment variables and an optional `.env` file.

Each backend's own settings are a model in its package (`app.storage.<backend>.settings`);
`app.settings.Settings` puts them together, so this module imports nothing from storage.
Settings are built in `create_app` / the CLI, never at import time, so tests and each uvicorn
worker get their own. Unsafe combinations are refused, before anything starts.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode

from app.sizes import MIB

BackendName = Literal["local", "delta", "databricks"]


class ConfigError(Exception):
    """A setting is invalid; the message is one line that names the variable."""


# What a key may be allowed beyond the evidence routes: `audit` reads the audit trail and
# places or lifts legal holds.
Role = Literal["audit"]
ROLES: frozenset[str] = frozenset({"audit"})
# A key's name is the principal the audit trail records: letters, digits and `_.@-`.
KEY_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"
_KEY_NAME = re.compile(KEY_NAME_PATTERN)
MIN_KEY_LENGTH = 16
# Download links: the signing secret's least length, and the longest life a deployment may
# allow a link (S3's presigned URLs stop at 7 days too).
MIN_LINK_SECRET_LENGTH = 32
MAX_LINK_SECONDS = 7 * 24 * 3600
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ApiKey(BaseModel, frozen=True):
    """One entry of API_KEYS: `name:key[:role...]`, or a bare key (named `key-<n>` by its
    place in the list). The name stands for the key wherever a person reads: the audit trail,
    log lines, /health/detail; the key itself only in `check_api_key`."""

    name: str
    key: SecretStr
    roles: frozenset[Role] = frozenset()

    @classmethod
    def parse(cls, entry: str, position: int) -> ApiKey:
        """Entry `position` (from 1) of API_KEYS. Errors name the entry by its position and
        quote nothing of it: the part before a colon may be a key's own text."""
        name, key, *roles = entry.split(":") if ":" in entry else (f"key-{position}", entry)
        where = f"entry {position}"
        if not _KEY_NAME.fullmatch(name):
            raise ValueError(
                f"{where}: a key's name is 1-64 letters, digits or _.@- (an entry is "
                "name:key[:role], or a bare key without ':')"
            )
        if len(key) < MIN_KEY_LENGTH:
            raise ValueError(f"{where}: a key must be at least {MIN_KEY_LENGTH} characters long")
        if unknown := set(roles) - ROLES:
            raise ValueError(
                f"{where}: {len(unknown)} unknown role(s); the roles are {', '.join(sorted(ROLES))}"
            )
        return cls(name=name, key=SecretStr(key), roles=frozenset(roles))  # type: ignore[arg-type]


class SharedSettings(BaseSettings):
    """What every backend shares; each backend adds its own model (`app.settings.Settings`
    puts them together)."""

    storage_backend: BackendName = "local"

    # Local backend and the process-local state every backend needs (staging, queues).
    local_storage_path: Path = Path("./evidence_store")
    # Unset: beside the store, one per store (`_state_path_follows_the_store`).
    state_path: Path = Path("./kmflow_state")

    # HTTP API.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_workers: int = Field(default=1, ge=1, le=64)
    # With as many workers as CPUs, each worker runs on a CPU of its own (app.cli.worker_cpus).
    api_pin_workers: bool = True
    api_keys: Annotated[list[ApiKey], NoDecode] = Field(default_factory=list)
    max_upload_bytes: int = Field(default=5 * 1024 * MIB, ge=1)
    max_metadata_bytes: int = Field(default=64 * 1024, ge=2, le=MIB)
    # Operations: log lines, /metrics access, how long shutdown waits for requests in flight.
    log_format: Literal["text", "json"] = "text"
    metrics_public: bool = False
    shutdown_grace_seconds: int = Field(default=30, ge=0, le=3600)
    # How long an Idempotency-Key keeps naming its first upload.
    idempotency_key_ttl_seconds: int = Field(default=24 * 3600, ge=60, le=365 * 24 * 3600)
    # Browsers: the API docs pages (off for locked-down deployments), the origins of
    # front-ends allowed to call the API, and the download links a browser can follow.
    api_docs_enabled: bool = True
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    link_signing_secret: SecretStr | None = None
    link_max_seconds: int = Field(default=900, ge=1, le=MAX_LINK_SECONDS)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: object) -> object:
        if isinstance(value, str):
            entries = [entry.strip() for entry in value.split(",") if entry.strip()]
            return [ApiKey.parse(entry, n) for n, entry in enumerate(entries, start=1)]
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _parse_cors_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [exact_origin(entry.strip()) for entry in value.split(",") if entry.strip()]
        return value

    @field_validator("link_signing_secret", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("link_signing_secret")
    @classmethod
    def _secret_long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value()) < MIN_LINK_SECRET_LENGTH:
            raise ValueError(
                f"must be at least {MIN_LINK_SECRET_LENGTH} characters long "
                "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return secret

    @field_validator("api_keys")
    @classmethod
    def _names_unique(cls, keys: list[ApiKey]) -> list[ApiKey]:
        names = [key.name for key in keys]
        if doubled := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"two keys named {', '.join(map(repr, doubled))}: names must differ")
        return keys

    @model_validator(mode="after")
    def _refuse_open_service_off_loopback(self) -> Self:
        if not self.api_keys and not is_loopback(self.api_host):
            raise ValueError(
                f"API_KEYS is empty but API_HOST={self.api_host} is not a loopback address: "
                "set API_KEYS to serve beyond this machine"
            )
        return self

    @model_validator(mode="after")
    def _state_path_follows_the_store(self) -> Self:
        """Unset, STATE_PATH is derived from LOCAL_STORAGE_PATH (`./kmflow_state` for the
        default store), so a store in a new directory gets its own index, never another's."""
        if "state_path" not in self.model_fields_set:
            self.state_path = default_state_path(self.local_storage_path)
        return self

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


def exact_origin(entry: str) -> str:
    """One CORS_ORIGINS entry as browsers send it in `Origin`: `scheme://host[:port]`, in
    lower case, without a default port. No wildcard, path or query: a front-end's exact origin.
    Errors quote the entry: an origin is no secret."""
    parts = urlsplit(entry)
    if (
        parts.scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or "*" in entry
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise ValueError(
            f"{entry!r} is not an exact origin: write scheme://host[:port], for example "
            "https://evidence.example.com (no wildcard, path or query)"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{entry!r} has an invalid port") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    origin = f"{parts.scheme}://{host}"
    return origin if port in (None, _DEFAULT_PORTS[parts.scheme]) else f"{origin}:{port}"


@functools.lru_cache(maxsize=64)  # asked on every request when API_KEYS is unset
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe_validation_error(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        name = "_".join(str(part) for part in item["loc"] if isinstance(part, str)).upper()
        message = str(item["msg"]).removeprefix("Value error, ")
        if name:
            problems.append(f"{name}: {message}")
        else:
            problems.append(message)
    return "invalid configuration: " + "; ".join(problems)
