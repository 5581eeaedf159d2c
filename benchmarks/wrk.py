"""The one load client for request-rate and latency figures: wrk with `bounded.lua`.

Every target of a scenario is driven by the same wrk command line, so the client's own cost
is the same for all of them. A run stops after a fixed number of responses (the script) or
after a time cap (`-d`), whichever comes first; a run cut by the cap is reported as such.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("bounded.lua")
WRK = "/usr/bin/wrk"
_BOUNDED = re.compile(r"BOUNDED: (\d+) responses \((\d+) non-2xx\) in ([\d.]+) s")
_DONE = re.compile(r"DONE: (.*)")
_FIRST_ERROR = re.compile(r"FIRST_ERROR: (.*)")


@dataclass(frozen=True)
class WrkResult:
    responses: int
    non_2xx: int
    seconds: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    complete: bool  # all N responses arrived before the time cap
    first_error: str = ""

    @property
    def requests_per_second(self) -> float:
        return self.responses / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.complete and self.non_2xx == 0 and self.socket_errors == 0


def parse_output(text: str) -> WrkResult:
    """wrk's stdout with bounded.lua's BOUNDED (if N was reached) and DONE lines."""
    done = _DONE.search(text)
    if done is None:
        raise ValueError(f"wrk printed no DONE line:\n{text[-2000:]}")
    fields = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", done.group(1))}
    socket_errors = sum(fields[key] for key in ("connect", "read", "write", "timeout"))
    first_error = _FIRST_ERROR.search(text)
    error_text = first_error.group(1)[:300] if first_error else ""
    bounded = _BOUNDED.search(text)
    if bounded is not None:
        responses, non_2xx, seconds = int(bounded[1]), int(bounded[2]), float(bounded[3])
    else:  # stopped by the time cap: wrk's own totals
        responses, non_2xx = fields["requests"], fields["status"]
        seconds = fields["duration_us"] / 1e6
    return WrkResult(
        responses=responses,
        non_2xx=non_2xx,
        seconds=seconds,
        p50_ms=fields["p50_us"] / 1000,
        p99_ms=fields["p99_us"] / 1000,
        socket_errors=socket_errors,
        complete=bounded is not None,
        first_error=error_text,
    )


@dataclass(frozen=True)
class Load:
    """What to send: the same for every target of a comparison but for URL and method."""

    count: int
    concurrency: int
    time_cap_seconds: int


def run_wrk(
    url: str,
    method: str,
    path_prefix: str,
    load: Load,
    body_file: Path | None = None,
    content_type: str = "-",
) -> WrkResult:
    binary = shutil.which("wrk") or WRK
    command = [binary, "-t1", f"-c{load.concurrency}", f"-d{load.time_cap_seconds}s"]
    command += ["--timeout", "30s", "-s", str(SCRIPT), url, "--", method, path_prefix]
    command += [str(body_file) if body_file else "-", content_type, str(load.count)]
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=load.time_cap_seconds + 60, check=False
    )
    return parse_output(finished.stdout + finished.stderr)
