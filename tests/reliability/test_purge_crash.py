"""`kmflow purge` killed with SIGKILL in the middle of removing files, then run again: the
rerun finishes, its certificate names every record (the plan the killed run wrote to the
audit trail included), and nothing of another engagement is touched."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.storage.registry import create_backend
from app.storage.walk import all_events, all_records
from tests.conftest import settings_from_env
from tests.reliability.observe import sha256_of, store_files

pytestmark = pytest.mark.slow

PURGED, KEPT = "ENDED", "ONGOING"
FILES = 1500


def purge_command(env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "purge", PURGED, "--reason", "engagement ended",
         "--by", "ops@test", "--workers", "1", "--certificate", str(cwd / "certificate.json")],
        env={**os.environ, **env}, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.parametrize("backend_name", ["local"])
def test_a_purge_killed_while_removing_files_is_finished_by_the_next_run(
    backend_env: dict[str, str], tmp_path: Path
) -> None:
    backend = create_backend(settings_from_env(backend_env))
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            purged = list(pool.map(
                lambda n: backend.write(PURGED, f"{n}.txt", io.BytesIO(f"ended {n}".encode())),
                range(FILES),
            ))  # fmt: skip
        kept = [backend.write(KEPT, f"{n}.txt", io.BytesIO(f"kept {n}".encode())) for n in range(5)]
    finally:
        backend.close()
    directory = Path(backend_env["LOCAL_STORAGE_PATH"]) / PURGED
    kept_files = {path: sha256_of(file) for path, file in store_files(backend_env).items()
                  if path.startswith(f"{KEPT}/")}  # fmt: skip

    killed = purge_command(backend_env, tmp_path)
    deadline = time.monotonic() + 120
    while len(os.listdir(directory)) == FILES:  # planned; killed once removals have begun
        assert killed.poll() is None, killed.communicate()
        assert time.monotonic() < deadline, "the purge never started removing files"
        time.sleep(0.002)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    left_at_kill = len(os.listdir(directory))
    assert 0 < left_at_kill < FILES  # killed in the middle

    rerun = purge_command(backend_env, tmp_path)
    out, err = rerun.communicate(timeout=300)

    assert rerun.returncode == 0, err.decode()
    certificate = json.loads(out)
    assert certificate == json.loads((tmp_path / "certificate.json").read_text())
    assert certificate["records"] == FILES and certificate["resumed"] is True
    assert {entry["id"] for entry in certificate["evidence"]} == {r.id for r in purged}
    assert not directory.exists()
    after = {path: sha256_of(file) for path, file in store_files(backend_env).items()}
    assert after == kept_files  # nothing else touched, byte for byte
    backend = create_backend(settings_from_env(backend_env))
    try:
        assert list(all_records(backend, PURGED, include_withdrawn=True)) == []
        assert list(all_records(backend, KEPT)) == list(reversed(kept))
        outcomes = [e.outcome for e in all_events(backend, PURGED) if e.action == "purge"]
        assert outcomes.count("planned") == FILES and outcomes.count("completed") == 1
    finally:
        backend.close()
    print(f"killed with {left_at_kill} of {FILES} files left; the rerun finished the purge")
