"""Typed dependencies: the backend and settings the lifespan built, API-key auth (or a signed
download link, on the content routes), and the principal (the key's name) and roles it gives a
request."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Scope

from app.api.errors import ApiError, unauthorized
from app.api.signed_links import LINK_PARAMETERS, LinkSigner, forbidden_link
from app.config import ROLES, Role, is_loopback
from app.observability import request_context
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


async def get_link_signer(request: Request) -> LinkSigner | None:
    signer: LinkSigner | None = request.state.link_signer
    return signer


Storage = Annotated[StorageBackend, Depends(get_storage)]
AppSettings = Annotated[Settings, Depends(get_settings)]
Signer = Annotated[LinkSigner | None, Depends(get_link_signer)]

bearer = HTTPBearer(
    auto_error=False,
    description="An API key from the API_KEYS setting, as `Authorization: Bearer <key>`.",
)


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the name of its key (never the key) and the key's roles."""

    name: str
    roles: frozenset[str]
    by_link: bool = False  # the request is a signed download link issued to this key


# With API_KEYS empty (loopback only, see `check_api_key`) every request is this principal,
# with every role: the service is a developer's own.
LOOPBACK_PRINCIPAL = Principal("loopback", ROLES)


async def require_api_key(
    request: Request,
    settings: AppSettings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    return check_api_key(request.scope, credentials.credentials if credentials else None, settings)


CurrentPrincipal = Annotated[Principal, Depends(require_api_key)]


async def require_key_or_link(
    request: Request,
    settings: AppSettings,
    signer: Signer,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The content routes' auth: a key, or a signed download link (`app.api.signed_links`)."""
    query = request.query_params
    if not any(name in query for name in LINK_PARAMETERS):
        return await require_api_key(request, settings, credentials)
    if signer is None:
        raise forbidden_link("download links are not enabled here (LINK_SIGNING_SECRET)")
    name = signer.verify(request.method, request.scope["path"], dict(query))
    if settings.api_keys:
        known = any(key.name == name for key in settings.api_keys)
    else:
        check_api_key(request.scope, None, settings)  # loopback only, as every open request
        known = name == LOOPBACK_PRINCIPAL.name
    if not known:
        raise forbidden_link("the key this link was issued to is no longer configured")
    request_context.note(principal=name)
    return Principal(name, frozenset(), by_link=True)


Reader = Annotated[Principal, Depends(require_key_or_link)]


def require_role(role: Role) -> object:
    """A dependency refusing (403) a key without `role`, after the key check."""

    async def has_role(principal: CurrentPrincipal) -> Principal:
        if role not in principal.roles:
            raise ApiError(
                403,
                "forbidden",
                f"the key {principal.name!r} does not have the {role!r} role this route needs "
                f"(API_KEYS entry name:key:{role})",
            )
        return principal

    return Depends(has_role)


def bearer_token(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, as `HTTPBearer` reads it."""
    scheme, _, token = (authorization or "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def check_api_key(scope: Scope, presented_key: str | None, settings: Settings) -> Principal:
    """Accept a request carrying one of the configured keys and name its principal; every
    key is compared in full, whichever one matches.

    With no keys configured, `kmflow serve` only binds loopback (see `Settings`); a server
    started another way is held to the same rule here, by the address the request came in on.
    """
    if not settings.api_keys:
        server = scope.get("server")
        if server and not is_loopback(str(server[0])):
            raise unauthorized("API_KEYS is not set: only loopback requests are served")
        principal = LOOPBACK_PRINCIPAL
    else:
        if presented_key is None:
            raise unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        presented = presented_key.encode()
        matched = None
        for key in settings.api_keys:
            if hmac.compare_digest(presented, key.key.get_secret_value().encode()):
                matched = key
        if matched is None:
            raise unauthorized("invalid API key")
        principal = Principal(matched.name, frozenset(matched.roles))
    request_context.note(principal=principal.name)
    return principal
