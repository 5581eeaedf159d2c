"""LazyWorkspaceClient: a Databricks client is built on its first use, by one thread for all
that need it at that moment; a failed build is that use's error and the next use tries again.
(The backend's behaviour in an outage is tested against MiniLake in tests/datalake.)"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest
from databricks.sdk import WorkspaceClient

from app.storage.databricks.client import LazyWorkspaceClient
from app.storage.errors import StorageUnavailable


class Built:
    """Stands for a built client: an object with attributes, as a WorkspaceClient is."""

    files = "the files API"


def test_nothing_is_built_until_first_use_then_once() -> None:
    builds: list[int] = []

    def build() -> WorkspaceClient:
        builds.append(1)
        return cast(WorkspaceClient, Built())

    lazy = LazyWorkspaceClient(build)
    assert builds == [] and lazy.built() is None

    assert lazy.files == "the files API"
    assert cast(Any, lazy).files == "the files API"
    assert builds == [1] and isinstance(lazy.built(), Built)


def test_concurrent_first_uses_share_one_build_and_its_failure() -> None:
    started, release = threading.Event(), threading.Event()
    builds: list[int] = []
    arrived = threading.Semaphore(0)

    def failing_build() -> WorkspaceClient:
        builds.append(1)
        started.set()
        release.wait(10)
        raise StorageUnavailable("workspace down")

    def use() -> object:
        arrived.release()
        return lazy.files

    lazy = LazyWorkspaceClient(failing_build)
    with ThreadPoolExecutor(max_workers=8) as pool:
        uses = [pool.submit(use) for _ in range(8)]
        for _ in uses:
            assert arrived.acquire(timeout=10)
        assert started.wait(10)
        builds_while_building = len(builds)  # whoever came meanwhile waits for this build
        release.set()
        errors = [use.exception(timeout=10) for use in uses]

    assert builds_while_building == 1
    assert all(isinstance(error, StorageUnavailable) for error in errors)


def test_the_use_after_a_failed_build_tries_again() -> None:
    outcomes: list[object] = [StorageUnavailable("workspace down"), Built()]

    def build() -> WorkspaceClient:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return cast(WorkspaceClient, outcome)

    lazy = LazyWorkspaceClient(build)
    with pytest.raises(StorageUnavailable, match="workspace down"):
        _ = lazy.files
    assert lazy.built() is None

    assert lazy.files == "the files API"
    assert outcomes == []


def test_a_use_waits_for_a_slow_build_only_so_long_and_the_build_goes_on() -> None:
    """An SDK that spends minutes looking up OAuth endpoints in an outage (databricks-sdk 0.72)
    must not hold a health probe that long; the build goes on and later uses get its client."""
    release = threading.Event()
    builds: list[int] = []

    def slow_build() -> WorkspaceClient:
        builds.append(1)
        release.wait(10)
        return cast(WorkspaceClient, Built())

    lazy = LazyWorkspaceClient(slow_build, wait_seconds=0.1)
    with pytest.raises(StorageUnavailable, match="still trying"):
        _ = lazy.files
    with pytest.raises(StorageUnavailable, match="still trying"):
        _ = lazy.files  # waits for the same build, does not start another
    release.set()
    deadline = time.monotonic() + 10
    while lazy.built() is None and time.monotonic() < deadline:
        time.sleep(0.01)

    assert lazy.files == "the files API"
    assert builds == [1]
