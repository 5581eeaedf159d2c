"""Fixtures shared by the Databricks tests: kmflow's environment on the test workspace, and the
API served in process on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import API_KEY, AUTH, settings_from_env


@pytest.fixture
def env(databricks_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**databricks_env, "STATE_PATH": str(tmp_path / "state"), "API_KEYS": API_KEY}


@pytest.fixture
def api(env: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(settings_from_env(env))) as client:
        client.headers.update(AUTH)
        yield client
