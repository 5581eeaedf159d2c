"""HTTP servers the harness starts on loopback ports and always stops again.

Every target runs as a child process of the harness (kmflow as `python -m app.cli serve`, the
naive app under uvicorn with uvloop and httptools, nginx in the foreground), so each can be
measured (`memory`) and killed by its own pid, never by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import httpx

from benchmarks import memory

REPO = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 90.0
STOP_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """A server child process; `with` it so it is stopped whatever happens in between."""

    def __init__(
        self,
        name: str,
        command: list[str],
        *,
        port: int,
        env: Mapping[str, str],
        cwd: Path,
        log_dir: Path,
        health_path: str,
        healthy: Callable[[int], bool] = lambda status: status == 200,
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}-{port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, env=dict(env), cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            self._wait_healthy(health_path, healthy)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        """The server process and its workers."""
        return memory.process_tree(self.pid)

    def reset_peak(self) -> None:
        memory.reset_peaks(self.pids())

    def peak_rss_mib(self) -> float:
        """The largest VmHWM among the server's processes (with one worker: the server)."""
        return max(memory.peak_rss_mib(pid) for pid in self.pids())

    def _wait_healthy(self, path: str, healthy: Callable[[int], bool]) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at startup:\n{self.log_tail()}")
            try:
                if healthy(httpx.get(self.url + path, timeout=2).status_code):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not healthy after {STARTUP_SECONDS} s:\n{self.log_tail()}")

    def failure(self, message: str) -> RuntimeError:
        """An error that carries the end of this server's log: the run's scratch space
        (and with it the log) is gone by the time anyone reads the report."""
        return RuntimeError(f"{self.name}: {message}\n--- end of its log ---\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_SECONDS)
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


def python_env(extra: Mapping[str, str], source: Path = REPO) -> dict[str, str]:
    """The harness's environment with the repository (or another checkout of it) importable
    first, plus `extra`."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))
    return env


def kmflow_server(
    name: str,
    backend_env: Mapping[str, str],
    *,
    workers: int,
    cwd: Path,
    log_dir: Path,
    source: Path = REPO,
) -> ServerProcess:
    """`kmflow serve` as docs/configuration.md says to run it, open on loopback (no API keys),
    from this checkout or `source` (another revision, see `revision_checkout`).

    `cwd` is a scratch directory so that no `.env` file of the checkout is picked up.
    """
    port = free_port()
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    command += ["--workers", str(workers)]
    env = python_env({"API_KEYS": "", **backend_env}, source)
    return ServerProcess(
        name, command, port=port, env=env, cwd=cwd, log_dir=log_dir, health_path="/api/v1/health"
    )


@contextmanager
def revision_checkout(revision: str, directory: Path) -> Iterator[Path]:
    """This repository at `revision`, checked out (detached) in `directory` for as long as
    the `with` lasts; it runs on this environment's packages."""
    target = directory / "checkout"
    git = ["git", "-C", str(REPO), "worktree"]
    add = [*git, "add", "--detach", str(target), revision]
    subprocess.run(add, check=True, capture_output=True)
    try:
        yield target
    finally:
        subprocess.run([*git, "remove", "--force", str(target)], check=False, capture_output=True)


def naive_server(name: str, store: Path, *, workers: int, log_dir: Path) -> ServerProcess:
    """benchmarks.naive_app under uvicorn with uvloop and httptools, as kmflow runs."""
    port = free_port()
    (store / "tmp").mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "uvicorn", "benchmarks.naive_app:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    command += ["--loop", "uvloop", "--http", "httptools"]
    # TMPDIR: where Starlette spools UploadFile bodies, on the same disk as the store.
    env = python_env({"NAIVE_STORE_DIR": str(store), "TMPDIR": str(store / "tmp")})
    return ServerProcess(
        name, command, port=port, env=env, cwd=store, log_dir=log_dir, health_path="/health"
    )


def local_backend_env(directory: Path) -> dict[str, str]:
    """kmflow's local backend in `directory`: store and state side by side, same disk."""
    return {
        "STORAGE_BACKEND": "local",
        "LOCAL_STORAGE_PATH": str(directory / "evidence_store"),
        "STATE_PATH": str(directory / "kmflow_state"),
    }
