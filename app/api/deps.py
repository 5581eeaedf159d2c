"""Typed dependencies: the backend and settings the lifespan built, and API-key auth."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Scope

from app.api.errors import unauthorized
from app.config import is_loopback
from app.settings import Settings
from app.storage.base import StorageBackend

# These dependencies do no I/O, so they are `async def`: FastAPI would run a plain `def` in the
# request thread pool, where a backend waiting on its peer can leave no thread free.


async def get_storage(request: Request) -> StorageBackend:
    storage: StorageBackend = request.state.storage
    return storage


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


Storage = Annotated[StorageBackend, Depends(get_storage)]
AppSettings = Annotated[Settings, Depends(get_settings)]

bearer = HTTPBearer(
    auto_error=False,
    description="An API key from the API_KEYS setting, as `Authorization: Bearer <key>`.",
)


async def require_api_key(
    request: Request,
    settings: AppSettings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    check_api_key(request.scope, credentials.credentials if credentials else None, settings)


def bearer_token(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, as `HTTPBearer` reads it."""
    scheme, _, token = (authorization or "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def check_api_key(scope: Scope, presented_key: str | None, settings: Settings) -> None:
    """Accept a request carrying one of the configured keys; every key is compared in full.

    With no keys configured, `kmflow serve` only binds loopback (see `Settings`); a server
    started another way is held to the same rule here, by the address the request came in on.
    """
    if not settings.api_keys:
        server = scope.get("server")
        if server and not is_loopback(str(server[0])):
            raise unauthorized("API_KEYS is not set: only loopback requests are served")
        return
    if presented_key is None:
        raise unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    presented = presented_key.encode()
    matched = False
    for key in settings.api_keys:
        matched |= hmac.compare_digest(presented, key.get_secret_value().encode())
    if not matched:
        raise unauthorized("invalid API key")
