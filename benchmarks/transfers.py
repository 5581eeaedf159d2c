"""One large transfer at a time, timed by the tool that does it: curl for HTTP (as a client
would upload or fetch a file) and dd for the raw disk write that bounds every upload."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

WRITE_OUT = "%{http_code} %{time_total} %{size_upload} %{size_download}"
_DD_LINE = re.compile(r"^(\d+) bytes .* copied, ([\d.]+) s", re.MULTILINE)


@dataclass(frozen=True)
class Transfer:
    status: int
    seconds: float
    bytes_up: int
    bytes_down: int
    body: str = ""  # the response body, for uploads (the record JSON)


def parse_write_out(text: str) -> tuple[int, float, int, int]:
    """curl's `-w WRITE_OUT` line: (status, seconds, bytes uploaded, bytes downloaded)."""
    status, seconds, up, down = text.strip().split()[-4:]
    return int(status), float(seconds), int(float(up)), int(float(down))


def _curl(arguments: list[str], response_file: Path | None, max_seconds: int) -> Transfer:
    output = str(response_file) if response_file else "/dev/null"
    command = ["curl", "-sS", "--max-time", str(max_seconds), "-H", "Expect:", "-o", output]
    command += ["-w", WRITE_OUT, *arguments]
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=max_seconds + 30, check=False
    )
    if finished.returncode != 0:
        raise RuntimeError(f"curl failed ({finished.returncode}): {finished.stderr.strip()}")
    status, seconds, up, down = parse_write_out(finished.stdout)
    body = response_file.read_text(errors="replace") if response_file else ""
    return Transfer(status, seconds, up, down, body)


def upload_multipart(
    url: str, source: Path, fields: dict[str, str], response_file: Path, max_seconds: int
) -> Transfer:
    """A multipart form upload, streamed from disk by curl (`-F file=@...`)."""
    arguments = [
        argument for name, value in fields.items() for argument in ("-F", f"{name}={value}")
    ]
    arguments += ["-F", f"file=@{source};type=application/octet-stream", url]
    return _curl(arguments, response_file, max_seconds)


def put_file(url: str, source: Path, response_file: Path, max_seconds: int) -> Transfer:
    """A raw-body PUT (`curl -T`)."""
    return _curl(["-T", str(source), url], response_file, max_seconds)


def download(url: str, max_seconds: int) -> Transfer:
    return _curl([url], None, max_seconds)


def parse_dd(text: str) -> tuple[int, float]:
    """(bytes, seconds) from dd's closing statistics line."""
    match = _DD_LINE.search(text)
    if match is None:
        raise ValueError(f"no statistics in dd's output: {text.strip()[-300:]}")
    return int(match[1]), float(match[2])


def dd_fsync(source: Path, target: Path, max_seconds: int) -> tuple[int, float]:
    """Copy `source` to a new file with `conv=fsync`: the time includes flushing to disk."""
    command = ["dd", f"if={source}", f"of={target}", "bs=1M", "conv=fsync,excl"]
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=max_seconds, check=False
    )
    if finished.returncode != 0:
        raise RuntimeError(f"dd failed: {finished.stderr.strip()}")
    return parse_dd(finished.stderr)
