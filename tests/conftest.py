"""Shared fixtures. The API suite runs once per backend in BACKENDS, unchanged."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from app.storage.base import StorageBackend
from app.storage.local.backend import LocalBackend
from tests import keys
from tests.live_server import LiveServer

pytest_plugins = ["tests.datalake.workspace", "tests.log_secrets"]

BACKENDS = ["local", "delta", "databricks"]

API_KEY = keys.API_KEY
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def backend_env(
    backend_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> dict[str, str]:
    """Environment variables that select and configure one backend in a fresh place."""
    env = {
        "STORAGE_BACKEND": backend_name,
        "LOCAL_STORAGE_PATH": str(tmp_path / "evidence_store"),
        "STATE_PATH": str(tmp_path / "kmflow_state"),
    }
    if backend_name == "delta":
        env["DELTA_BASE_PATH"] = str(tmp_path / "delta_store")
    if backend_name == "databricks":
        env |= request.getfixturevalue("databricks_env")
    return env


def settings_from_env(env: dict[str, str], **overrides: object) -> Settings:
    values = {name.lower(): value for name, value in env.items()} | overrides
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


ClientFactory = Callable[..., TestClient]


UPLOAD_ONLY_FIELDS = ("replayed", "duplicate_of")


def stored_record(uploaded: dict[str, object]) -> dict[str, object]:
    """An upload's answer without what only the upload says (as list and get return it)."""
    return {name: value for name, value in uploaded.items() if name not in UPLOAD_ONLY_FIELDS}


def stored_files(client: TestClient) -> list[str]:
    """The evidence files the client's backend holds, and any staged leftovers, looked at
    directly in its storage rather than through the API."""
    storage: StorageBackend = client.app_state["storage"]
    found = [str(path) for path in storage._staging.root.rglob("*.part")]
    if isinstance(storage, LocalBackend):
        return found + [str(p) for p in storage.store.rglob("*") if p.is_file()]
    if storage.name == "delta":
        root = storage.location.local_root  # type: ignore[attr-defined]
        return found + [str(p) for p in (root / "evidence_store").rglob("*") if p.is_file()]
    return found + [file.path for file in storage.volume_files()]  # type: ignore[attr-defined]


@pytest.fixture
def make_client(backend_env: dict[str, str]) -> Iterator[ClientFactory]:
    """Build an in-process client (lifespan included) with settings overrides."""
    clients: list[TestClient] = []

    def make(base_url: str = "http://127.0.0.1", **overrides: object) -> TestClient:
        # A loopback base URL by default: without API keys only loopback requests are served.
        client = TestClient(
            create_app(settings_from_env(backend_env, **overrides)), base_url=base_url
        )
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    """The API with API keys on, as a deployment runs it."""
    client = make_client(api_keys=API_KEY)
    client.headers.update(AUTH)
    return client


@pytest.fixture
def live_server(backend_env: dict[str, str], tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer({**backend_env, "API_KEYS": API_KEY}, cwd=tmp_path)
    yield server
    server.stop()
