"""A real browser for the tests in this folder: Debian's Chromium, headless, driven by
Playwright for Python with that executable (Playwright's own browser download cannot work
offline). `scripts/test` installs the `chromium` package where it can; elsewhere these tests
skip, saying why. Screenshots go to test-artifacts/browser (KMFLOW_TEST_ARTIFACTS), never
committed.

One kmflow server serves every test here: API keys, a link signing secret, and one CORS
origin, a page on another port of this machine. The same page under `localhost` is another
origin, not listed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.keys import LINK_SECRET, NAMED_KEYS
from tests.live_server import LiveServer, free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("KMFLOW_CHROMIUM", "/usr/bin/chromium"))
# The flags the machine's notes give for Chromium on a network without egress: without the
# background-networking ones it keeps trying Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

try:
    from playwright.sync_api import Browser, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]


# Package scope, not session: while Playwright's sync API runs, its event loop is the thread's
# running loop, and every later test calling asyncio.run() would fail.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: install Debian's chromium package (scripts/test does, "
            "as root with apt-get) or set KMFLOW_CHROMIUM"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    directory = Path(os.environ.get("KMFLOW_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class BlankPage(BaseHTTPRequestHandler):
    """The front-end origin: an empty page a test's script runs fetch() from."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>front-end</title><p>another origin</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass(frozen=True)
class WebServer:
    url: str
    listed_origin: str  # in CORS_ORIGINS
    unlisted_origin: str  # the same page under another host name: not listed


@pytest.fixture(scope="session")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    front_end = ThreadingHTTPServer(("127.0.0.1", free_port()), BlankPage)
    threading.Thread(target=front_end.serve_forever, daemon=True).start()
    port = front_end.server_address[1]
    listed = f"http://127.0.0.1:{port}"
    home = tmp_path_factory.mktemp("browser-server")
    env = {
        "STORAGE_BACKEND": "local",
        "LOCAL_STORAGE_PATH": str(home / "evidence_store"),
        "STATE_PATH": str(home / "kmflow_state"),
        "API_KEYS": NAMED_KEYS,
        "LINK_SIGNING_SECRET": LINK_SECRET,
        "CORS_ORIGINS": listed,
    }
    server = LiveServer(env, cwd=home)
    yield WebServer(server.url, listed, f"http://localhost:{port}")
    server.stop()
    front_end.shutdown()
