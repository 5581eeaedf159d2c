"""`kmflow` as an operator runs it: real subprocesses, real exit codes and messages."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.live_server import LiveServer, free_port


def run_kmflow(
    args: list[str], env: dict[str, str], cwd: Path, prelude: str = ""
) -> subprocess.CompletedProcess[str]:
    """`kmflow ARGS` in a fresh interpreter; `prelude` runs first (to hide a package)."""
    code = f"{prelude}\nimport sys\nfrom app.cli import main\nsys.exit(main({args!r}))"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_the_commands_even_without_the_optional_packages(tmp_path: Path) -> None:
    hide_extras = "import sys\nfor name in ('databricks', 'deltalake', 'obstore', 'requests'):\n"
    hide_extras += "    sys.modules[name] = None"
    result = run_kmflow(["--help"], {}, tmp_path, prelude=hide_extras)
    assert result.returncode == 0, result.stderr
    for command in ("serve", "migrate", "verify", "databricks", "catalog", "delta"):
        assert command in result.stdout


def test_unknown_backend_fails_at_startup_naming_the_valid_ones(tmp_path: Path) -> None:
    result = run_kmflow(["serve", "--port", str(free_port())], {"STORAGE_BACKEND": "s3"}, tmp_path)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "STORAGE_BACKEND" in lines[0]
    for name in ("local", "delta", "databricks"):
        assert name in lines[0]


def test_a_missing_optional_package_fails_at_startup_with_the_install_command(
    tmp_path: Path,
) -> None:
    # As on an install without the extra: the SDK and its own dependencies are absent.
    hide_sdk = "import sys; sys.modules['databricks'] = sys.modules['requests'] = None"
    result = run_kmflow(
        ["serve", "--port", str(free_port())],
        {"STORAGE_BACKEND": "databricks"},
        tmp_path,
        prelude=hide_sdk,
    )

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "kmflow: databricks-sdk is required for STORAGE_BACKEND=databricks: "
        "pip install 'kmflow[databricks]'"
    )


def test_open_bind_beyond_loopback_is_refused(tmp_path: Path) -> None:
    result = run_kmflow(["serve", "--host", "0.0.0.0"], {"API_KEYS": ""}, tmp_path)
    assert result.returncode == 2
    assert "API_KEYS" in result.stderr


def test_storage_backend_alone_picks_the_backend(tmp_path: Path) -> None:
    server = LiveServer({"STORAGE_BACKEND": "local"}, cwd=tmp_path)
    try:
        health = httpx.get(f"{server.url}/api/v1/health").json()
    finally:
        server.stop()
    assert health["storage"] == "local"
    assert (tmp_path / "evidence_store").is_dir()  # the default LOCAL_STORAGE_PATH


@pytest.mark.slow
def test_several_workers_share_one_store(tmp_path: Path) -> None:
    server = LiveServer({}, cwd=tmp_path, workers=2)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            ids = {
                http.post(
                    "/api/v1/evidence/upload",
                    data={"engagement_id": "W"},
                    files={"file": (f"{n}.txt", f"{n}".encode())},
                ).json()["id"]
                for n in range(20)
            }
            listed = {item["id"] for item in http.get("/api/v1/evidence/W").json()["items"]}
    finally:
        server.stop()
    assert len(ids) == 20
    assert listed == ids


def worker_cpus(server: LiveServer, workers: int) -> list[set[int]]:
    """The CPUs each worker process of `server` may run on, once all of them have started."""
    deadline = time.monotonic() + 60
    while server.log_path.read_text().count("Application startup complete") < workers:
        assert time.monotonic() < deadline, server.log_path.read_text()
        time.sleep(0.1)
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    spawned = [
        int(pid)
        for pid in children
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()  # not resource_tracker
    ]
    assert len(spawned) == workers
    return [os.sched_getaffinity(pid) for pid in spawned]


@pytest.mark.slow
@pytest.mark.parametrize("pin", [True, False])
def test_as_many_workers_as_cpus_run_on_one_cpu_each_unless_told_not_to(
    tmp_path: Path, pin: bool
) -> None:
    allowed = os.sched_getaffinity(0)
    if not 2 <= len(allowed) <= 8:
        pytest.skip(f"a server of {len(allowed)} workers is not what this test is for")
    server = LiveServer({"API_PIN_WORKERS": str(pin).lower()}, cwd=tmp_path, workers=len(allowed))
    try:
        cpus = worker_cpus(server, len(allowed))
    finally:
        server.stop()
    if pin:
        assert sorted(cpus, key=min) == [{cpu} for cpu in sorted(allowed)]  # one each
    else:
        assert cpus == [allowed] * len(allowed)


def test_one_worker_is_left_to_the_scheduler(tmp_path: Path) -> None:
    """With cores to spare, a large upload hashes and writes on one while it receives on
    another: only workers that fill the CPUs are pinned."""
    code = (
        "import os, sys\nfrom pathlib import Path\nfrom app.cli.worker_cpus import pin_worker\n"
        "print(pin_worker(Path(sys.argv[1]), 1), sorted(os.sched_getaffinity(0)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "cpus")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == f"None {sorted(os.sched_getaffinity(0))}"
