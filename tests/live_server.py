"""A real `kmflow serve` process on a free loopback port, for tests that need real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """`kmflow serve` with this environment plus `env`; or, given `command` (a container's CMD),
    that command with `env` as its whole environment and the port passed as API_PORT. Ready
    when `ready_path` answers 200 (the liveness route for a server whose backend is down)."""

    def __init__(
        self,
        env: dict[str, str],
        cwd: Path,
        workers: int = 1,
        command: list[str] | None = None,
        log_dir: Path | None = None,
        ready_path: str = "/api/v1/health",
    ) -> None:
        self.port = free_port()
        self.ready_path = ready_path
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = (log_dir or cwd) / f"server-{self.port}.log"
        self._log = self.log_path.open("wb")
        if command is None:
            command = [sys.executable, "-m", "app.cli", "serve"]
            command += ["--port", str(self.port), "--workers", str(workers)]
            env = {**os.environ, **env}
        else:
            env = {**env, "API_PORT": str(self.port)}
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_healthy()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}{self.ready_path}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not healthy after {timeout}s:\n{self.log()}")

    def peak_rss_mib(self) -> float:
        """VmHWM: the most resident memory the server process has ever used."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc status")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
