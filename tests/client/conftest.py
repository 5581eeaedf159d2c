"""The client's tests run `kmflow upload/ls/download` against a real server on the local
backend (the client speaks HTTP; which backend serves it is the API suite's concern)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.cli import main
from tests.conftest import API_KEY
from tests.live_server import LiveServer


@pytest.fixture
def backend_name() -> str:
    return "local"


@dataclass
class Run:
    code: int
    out: str
    err: str


Kmflow = Callable[..., Run]


@pytest.fixture
def kmflow(
    live_server: LiveServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Kmflow:
    """`kmflow ARGS` in this process, pointed at the live server through the environment
    (as a person would set it up), run in a fresh working directory; `key=None` unsets it."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)

    def run(*args: str, key: str | None = API_KEY) -> Run:
        monkeypatch.setenv("KMFLOW_URL", live_server.url)
        if key is None:
            monkeypatch.delenv("KMFLOW_API_KEY", raising=False)
        else:
            monkeypatch.setenv("KMFLOW_API_KEY", key)
        code = main(list(args))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def write_file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path
