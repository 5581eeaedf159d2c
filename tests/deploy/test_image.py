"""The image's install steps and CMD, run without Docker (tests/deploy/image.py): it installs,
serves with nothing but environment variables, and a SIGTERM during uploads leaves no partial
file, no file without its record and no write intent."""

from __future__ import annotations

import hashlib
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.storage.write_intents import open_intents
from tests.conftest import API_KEY, AUTH
from tests.deploy.dockerfile import parse
from tests.deploy.image import Container, build
from tests.live_server import LiveServer
from tests.multipart import CHUNK, multipart_envelope

pytestmark = pytest.mark.slow

PATTERN = b"kmflow image test " * 58


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Container:
    """The build stage run once per session: a fresh virtual environment, pip's own resolver."""
    return build(parse(), tmp_path_factory.mktemp("image"))


@pytest.fixture
def container(image: Container, tmp_path: Path) -> Iterator[LiveServer]:
    """The image's CMD with the image's environment, API_KEYS and a free port; /data fresh."""
    data = image.path("/data")
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    started = time.time()
    server = LiveServer(
        {**image.env, "API_KEYS": API_KEY}, cwd=image.workdir, command=image.cmd, log_dir=tmp_path
    )
    yield server
    server.stop()
    # The Kubernetes example's root filesystem is read-only: only /data (and /tmp) may change.
    changed = [
        path
        for path in image.root.rglob("*")
        if not path.is_relative_to(data) and path.lstat().st_mtime >= started
    ]
    assert changed == []


def test_the_image_serves_health_with_only_its_environment(
    image: Container, container: LiveServer
) -> None:
    assert image.cmd == ["kmflow", "serve"]
    assert Path(image.env["PATH"].split(":")[0], "kmflow").exists()  # the image's own install
    for name in ("LOCAL_STORAGE_PATH", "STATE_PATH", "HOME"):
        assert Path(image.env[name]).is_relative_to(image.path("/data"))
    response = httpx.get(f"{container.url}/api/v1/health", timeout=10)
    assert response.status_code == 200
    assert response.json() | {"details": {}} == {
        "status": "ok",
        "storage": "local",
        "reachable": True,
        "auth": "api_keys",
        "details": {},
    }


class Upload(threading.Thread):
    """A multipart upload of `size` bytes that sends `before` MiB, then waits for `go_on`."""

    def __init__(self, url: str, size: int, before: int, go_on: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.size, self.before, self.go_on = url, size, before, go_on
        self.digest = hashlib.sha256()
        self.outcome: httpx.Response | Exception | None = None

    def body(self, head: bytes, tail: bytes) -> Iterator[bytes]:
        yield head
        block = (PATTERN * (CHUNK // len(PATTERN) + 1))[:CHUNK]
        for index in range(self.size // CHUNK):
            if index == self.before:
                self.go_on.wait(timeout=90)
            self.digest.update(block)
            yield block
        yield tail

    def run(self) -> None:
        boundary = "kmflowimagetest"
        head, tail = multipart_envelope({"engagement_id": "ENG-1"}, "big.bin", boundary)
        try:
            self.outcome = httpx.post(
                f"{self.url}/api/v1/evidence/upload",
                content=self.body(head, tail),
                headers={
                    **AUTH,
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(len(head) + self.size + len(tail)),
                },
                timeout=90,
            )
        except Exception as error:
            self.outcome = error

    @property
    def record(self) -> dict[str, Any] | None:
        if isinstance(self.outcome, httpx.Response) and self.outcome.status_code == 201:
            record: dict[str, Any] = self.outcome.json()
            return record
        return None


def test_sigterm_during_uploads_leaves_no_partial_file_or_orphan_row(
    image: Container, container: LiveServer
) -> None:
    """Two uploads are in flight when SIGTERM comes. One goes on sending and is stored; the
    other stalls past the 30 s graceful shutdown, is cancelled and must leave nothing."""
    staging = Path(image.env["STATE_PATH"]) / "staging"
    store = Path(image.env["LOCAL_STORAGE_PATH"])
    terminated, never = threading.Event(), threading.Event()
    finishing = Upload(container.url, 24 * CHUNK, before=2, go_on=terminated)
    stalled = Upload(container.url, 64 * CHUNK, before=4, go_on=never)
    finishing.start()
    stalled.start()

    deadline = time.monotonic() + 30
    while sum(1 for part in staging.rglob("*.part") if part.stat().st_size >= CHUNK) < 2:
        assert time.monotonic() < deadline, f"uploads did not start:\n{container.log()}"
        time.sleep(0.05)
    container.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    terminated.set()
    finishing.join(timeout=30)
    exit_code = container.process.wait(timeout=45)
    shutdown_seconds = time.monotonic() - signalled
    never.set()
    stalled.join(timeout=30)

    log = container.log()
    # uvicorn shuts down cleanly, then re-raises the signal it caught: the exit status of a
    # process ended by SIGTERM (143 in a container), after its lifespan shutdown ran.
    assert exit_code in (0, -signal.SIGTERM), log
    assert "Application shutdown complete." in log
    assert "timeout graceful shutdown exceeded" in log  # the stalled upload was cancelled
    assert finishing.record is not None, f"{finishing.outcome!r}\n{log}"
    assert stalled.record is None, log
    assert shutdown_seconds < 40, log  # 30 s of grace for the stalled upload, then cancelled

    assert list(staging.rglob("*.part")) == []
    files = {str(path.relative_to(store)) for path in store.rglob("*") if path.is_file()}
    with sqlite3.connect(Path(image.env["STATE_PATH"]) / "index.sqlite3") as index:
        rows = dict(index.execute("SELECT volume_path, content_hash FROM evidence_metadata"))
    assert files == set(rows) == {finishing.record["volume_path"]}
    assert open_intents(Path(image.env["STATE_PATH"])) == []
    stored = hashlib.sha256((store / finishing.record["volume_path"]).read_bytes()).hexdigest()
    assert stored == rows[finishing.record["volume_path"]] == finishing.digest.hexdigest()
