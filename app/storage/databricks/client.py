"""Databricks clients as kmflow builds them: authenticated by exactly the method its settings
name, with refusals that say which variables to check and never quote a secret, and built on
first use so that nothing (startup above all) waits on the workspace before it needs to.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.core import Config
from databricks.sdk.credentials_provider import (
    CredentialsProvider,
    CredentialsStrategy,
    DefaultCredentials,
    OAuthCredentialsProvider,
)
from databricks.sdk.errors import Unauthenticated
from databricks.sdk.errors.base import DatabricksError

from app.storage.errors import StorageMisconfigured, StorageUnavailable

if TYPE_CHECKING:
    from app.settings import Settings

TRANSPORT_ERRORS = (DatabricksError, requests.RequestException, TimeoutError)


class LazyWorkspaceClient:
    """A WorkspaceClient built on its first use, standing in for one until then.

    Building a client calls the workspace: `Config()` fetches the host's metadata and, for
    OAuth M2M, its OIDC endpoints, each within the SDK's whole retry budget (a minute by
    default). Built with the backend, two clients held kmflow's startup for over a minute in
    a Databricks outage. Here one thread builds it while the others wait for the same outcome;
    a failure is a StorageError at that use (StorageUnavailable when the workspace did not
    answer, StorageMisconfigured otherwise) and the next use tries again.
    """

    def __init__(
        self, build: Callable[[], WorkspaceClient], wait_seconds: float | None = None
    ) -> None:
        """`wait_seconds`: how long a use waits for a build in progress (None: until it ends).
        The build itself goes on, on a thread of its own, and the next use waits for it again:
        databricks-sdk 0.72 looks up the OAuth endpoints with a client of its own whose retry
        budget is 5 minutes (`oauth.get_workspace_endpoints(host, client=_BaseClient())`),
        whatever the configured timeouts say, and a health probe must answer in seconds."""
        self._build = build
        self._wait_seconds = wait_seconds
        self._client: WorkspaceClient | None = None
        self._attempt: Future[WorkspaceClient] | None = None
        self._lock = threading.Lock()

    def get(self) -> WorkspaceClient:
        if (client := self._client) is not None:
            return client
        with self._lock:
            if self._client is not None:
                return self._client
            if (attempt := self._attempt) is None:
                attempt = self._attempt = Future()
                threading.Thread(
                    target=self._run_build, args=(attempt,), name="kmflow-client", daemon=True
                ).start()
        try:
            return attempt.result(timeout=self._wait_seconds)  # this build's outcome
        except FutureTimeout:
            raise StorageUnavailable(
                f"Databricks has not answered within {self._wait_seconds:g} s while kmflow "
                "sets up its client (host metadata, OAuth endpoints); still trying"
            ) from None

    def _run_build(self, attempt: Future[WorkspaceClient]) -> None:
        try:
            client = self._build()
        except BaseException as error:  # noqa: BLE001 - handed to every use waiting for it
            with self._lock:
                self._attempt = None  # the next use tries again
            attempt.set_exception(error)
            return
        self._client = client
        with self._lock:
            self._attempt = None
        attempt.set_result(client)

    def built(self) -> WorkspaceClient | None:
        """The client if it exists already; never builds it."""
        return self._client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


def lazy_workspace_client(
    settings: Settings, timeout_seconds: int | None = None
) -> WorkspaceClient:
    """`workspace_client(settings, timeout_seconds)`, built on first use (LazyWorkspaceClient
    answers every attribute of the client it builds); a use waits for the build at most as
    long as a call of that client may take."""
    wait = timeout_seconds or settings.databricks_retry_timeout_seconds
    build = partial(workspace_client, settings, timeout_seconds)
    return cast(WorkspaceClient, LazyWorkspaceClient(build, wait_seconds=wait))


class _NamedCredentials(CredentialsStrategy):
    """The SDK's own credential chain, limited by `Config(auth_type=...)` to the method kmflow
    configured, whose refusals say which variables to check.

    When the OAuth token endpoint refuses the client credentials, databricks-sdk 0.162 raises a
    bare ValueError from inside the request's auth hook (`oauth.retrieve_token`, called by
    `Config.authenticate` for each request), which no caller of an API method expects: it is
    turned into the `Unauthenticated` a workspace's own 401 would be, without the secret.
    """

    def __init__(self, settings: Settings) -> None:
        self._inner = DefaultCredentials()
        self._settings = settings

    def auth_type(self) -> str:
        return self._inner.auth_type()

    def __call__(self, cfg: Config) -> CredentialsProvider:
        provider = self._inner(cfg)
        settings = self._settings

        def headers() -> dict[str, str]:
            try:
                return provider()
            except ValueError as error:
                reason = without_secrets((str(error).splitlines() or [""])[0][:300], settings)
                where = "OAuth token endpoint" if cfg.auth_type == "oauth-m2m" else "SDK"
                raise Unauthenticated(
                    f"Databricks refused kmflow's credentials (check "
                    f"{settings.databricks_credentials}): {where}: {reason}"
                ) from None

        if isinstance(provider, OAuthCredentialsProvider):
            return OAuthCredentialsProvider(headers, provider.oauth_token)
        return headers


def without_secrets(text: str, settings: Settings) -> str:
    """`text` with the token and the client secret masked, whatever quoted them."""
    for secret in (settings.databricks_token, settings.databricks_client_secret):
        if secret is not None and secret.get_secret_value():
            text = text.replace(secret.get_secret_value(), "***")
    return text


def _caused_by_transport(error: BaseException) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, TRANSPORT_ERRORS):
            return True
        cause = cause.__cause__
    return False


def workspace_client(settings: Settings, timeout_seconds: int | None = None) -> WorkspaceClient:
    """A client authenticated by exactly the method the settings name: DATABRICKS_TOKEN ("pat")
    or DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET ("oauth-m2m"), passed explicitly with
    `auth_type` so that nothing else in the process environment (which the SDK also reads)
    can add or choose another; with neither, the SDK's own credential chain.

    `timeout_seconds` caps both the SDK's retries and each request (for health probes).
    """
    options: dict[str, Any] = {
        "host": settings.databricks_host,
        "retry_timeout_seconds": timeout_seconds or settings.databricks_retry_timeout_seconds,
        "http_timeout_seconds": timeout_seconds or settings.databricks_http_timeout_seconds,
    }
    method = settings.databricks_auth_type
    if method == "pat" and settings.databricks_token is not None:
        options |= {"auth_type": method, "token": settings.databricks_token.get_secret_value()}
    elif method == "oauth-m2m" and settings.databricks_client_secret is not None:
        options |= {
            "auth_type": method,
            "client_id": settings.databricks_client_id,
            "client_secret": settings.databricks_client_secret.get_secret_value(),
        }
    try:
        config = Config(credentials_strategy=_NamedCredentials(settings), **options)
    except ValueError as error:
        message = without_secrets(str(error).splitlines()[0], settings)
        if method == "oauth-m2m" and _caused_by_transport(error):
            # The SDK finds the token endpoint through the host's metadata, then its OIDC
            # discovery document; without them it cannot ask for a token at all.
            raise StorageUnavailable(
                f"cannot set up OAuth M2M ({settings.databricks_credentials}): "
                f"{settings.databricks_host} did not answer the SDK's OAuth discovery; check "
                f"DATABRICKS_HOST and that the workspace is reachable ({message})"
            ) from None
        raise StorageMisconfigured(
            f"cannot configure Databricks authentication ({settings.databricks_credentials}): "
            "set DATABRICKS_HOST and either DATABRICKS_TOKEN or DATABRICKS_CLIENT_ID and "
            f"DATABRICKS_CLIENT_SECRET, or a profile the SDK can use ({message})"
        ) from None
    return WorkspaceClient(config=config)
