"""The issue's test: a 100 MiB file uploaded, listed and downloaded by the real command, in
its own process, with a matching digest and the client's memory independent of the size."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import API_KEY
from tests.live_server import LiveServer

MIB = 1024 * 1024
FILE_SIZE = 100 * MIB
# The interpreter with httpx and the CLI is ~40 MiB; holding the file would add 100 more.
MAX_CLIENT_PEAK_MIB = 90

# VmHWM, not ru_maxrss: Linux carries the spawning process's peak into ru_maxrss across exec.
RUN_AND_REPORT_PEAK = """\
import sys
from pathlib import Path
from app.cli import main
code = main(sys.argv[1:])
status = Path("/proc/self/status").read_text().splitlines()
print("peak-kib", *[line.split()[1] for line in status if line.startswith("VmHWM:")],
      file=sys.stderr)
sys.exit(code)
"""


def kmflow_process(
    args: list[str], server: LiveServer, cwd: Path
) -> tuple[subprocess.CompletedProcess[str], float]:
    """`kmflow ARGS` as a separate process: (result, its peak resident memory in MiB)."""
    env = {**os.environ, "KMFLOW_URL": server.url, "KMFLOW_API_KEY": API_KEY}
    result = subprocess.run(
        [sys.executable, "-c", RUN_AND_REPORT_PEAK, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    peak_line = result.stderr.strip().splitlines()[-1]
    assert peak_line.startswith("peak-kib "), result.stderr
    return result, int(peak_line.split()[1]) / 1024


def random_file(path: Path, size: int) -> str:
    """Written a MiB at a time; returns its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as file:
        for _ in range(size // MIB):
            chunk = os.urandom(MIB)
            file.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.slow
def test_100_mib_upload_list_download_round_trip(live_server: LiveServer, tmp_path: Path) -> None:
    source = tmp_path / "site-walkthrough.mp4"
    expected = random_file(source, FILE_SIZE)
    downloads = tmp_path / "downloads"
    downloads.mkdir()

    uploaded, upload_peak = kmflow_process(
        ["upload", str(source), "--engagement", "ENG-100"], live_server, tmp_path
    )
    assert uploaded.returncode == 0, uploaded.stderr
    evidence_id, printed_path = uploaded.stdout.split()
    assert printed_path == str(source)

    listed, _ = kmflow_process(["ls", "ENG-100"], live_server, tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "STORED_AT", "SIZE", "NAME"]
    assert row.split()[0] == evidence_id
    assert row.split()[2:] == ["100.0", "MiB", "site-walkthrough.mp4"]

    fetched, download_peak = kmflow_process(
        ["download", "ENG-100", evidence_id], live_server, downloads
    )
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.strip() == "site-walkthrough.mp4"
    target = downloads / "site-walkthrough.mp4"
    assert sha256_of(target) == expected
    assert target.stat().st_size == FILE_SIZE
    assert sorted(path.name for path in downloads.iterdir()) == ["site-walkthrough.mp4"]
    assert upload_peak < MAX_CLIENT_PEAK_MIB
    assert download_peak < MAX_CLIENT_PEAK_MIB
