"""Backend name -> implementation, imported only when chosen.

The missing-extra error is born here, once: choosing a backend whose optional package is not
installed fails at startup with the install command, not at the first request.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, get_args

from app.config import BackendName, ConfigError
from app.storage.errors import BackendNotInstalled

if TYPE_CHECKING:
    from app.settings import Settings
    from app.storage.base import StorageBackend


@dataclass(frozen=True)
class BackendSpec:
    target: str  # "module:Class"
    package: str | None = None  # the distribution the optional extra installs
    modules: tuple[str, ...] = ()  # the modules it provides
    extra: str | None = None


BACKENDS: dict[str, BackendSpec] = {
    "local": BackendSpec("app.storage.local.backend:LocalBackend"),
    "delta": BackendSpec(
        "app.storage.delta.backend:DeltaLakeBackend", "deltalake", ("deltalake", "obstore"), "delta"
    ),
    "databricks": BackendSpec(
        "app.storage.databricks.backend:DatabricksBackend",
        "databricks-sdk",
        ("databricks.sdk",),
        "databricks",
    ),
}

assert set(BACKENDS) == set(get_args(BackendName))


def backend_class(name: str) -> type[StorageBackend]:
    spec = BACKENDS.get(name)
    if spec is None:
        valid = ", ".join(BACKENDS)
        raise ConfigError(f"STORAGE_BACKEND: unknown backend {name!r}; valid: {valid}")
    # The optional packages themselves, first: whatever the backend module imports before
    # them (the SDK's own dependencies), a missing extra is reported as one.
    for optional in spec.modules:
        try:
            importlib.import_module(optional)
        except ModuleNotFoundError as error:
            raise BackendNotInstalled(
                f"{spec.package} is required for STORAGE_BACKEND={name}: "
                f"pip install 'kmflow[{spec.extra}]'"
            ) from error
    module_name, class_name = spec.target.split(":")
    cls: type[StorageBackend] = getattr(importlib.import_module(module_name), class_name)
    return cls


def create_backend(settings: Settings) -> StorageBackend:
    """Build the backend `STORAGE_BACKEND` names; called once, in the app's lifespan."""
    backend = backend_class(settings.storage_backend).from_settings(settings)
    backend.idempotency_keys.window_seconds = settings.idempotency_key_ttl_seconds
    try:
        backend.startup()
    except BaseException:
        backend.close()
        raise
    return backend
