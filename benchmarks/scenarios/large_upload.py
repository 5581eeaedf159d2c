"""Scenario 1: one large file uploaded as a client uploads it, next to the disk's own limit
and to other servers taking the same bytes, in alternated rounds.

Each round, in this order (every target writes into a new directory or a new name):
- `dd conv=fsync`: the bytes copied to a new file and flushed: the physical limit;
- kmflow (local backend, 1 worker): `curl -F` multipart POST to /api/v1/evidence/upload;
  streamed, hashed, fsynced and indexed before its 201 (the hash is checked against ours);
- naive multipart: FastAPI `UploadFile` + `shutil.copyfileobj` (no hash, no fsync);
- naive raw stream: PUT, `request.stream()` to a file (no multipart parsing, no fsync);
- nginx WebDAV PUT (no fsync).
`sync` runs between targets (outside the timing), so no target pays for the writeback of
the bytes another one left dirty. Then one more kmflow upload of the big file (4 GiB by
default), for the memory target. Peak RSS: VmHWM of the server process, reset before each
upload (`memory`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from benchmarks import transfers
from benchmarks.context import Context, Outcome
from benchmarks.datafiles import random_file, repeated_file
from benchmarks.labels import size_label
from benchmarks.nginx import nginx_server
from benchmarks.results import Check, Row, Target, round_details
from benchmarks.rounds import alternate
from benchmarks.servers import ServerProcess, kmflow_server, local_backend_env, naive_server
from benchmarks.stats import median, megabytes_per_second

SCENARIO = "1 large upload"
MIN_RATE = 5_000_000  # bytes/s below which a transfer counts as hung (curl's time bound)


@dataclass(frozen=True)
class Sample:
    mb_per_s: float
    peak_mib: float | None = None

    def show(self) -> str:
        peak = f" (peak {self.peak_mib:.0f} MiB)" if self.peak_mib is not None else ""
        return f"{self.mb_per_s:.0f} MB/s{peak}"


def max_seconds(nbytes: int) -> int:
    return int(nbytes / MIN_RATE) + 60


def run(context: Context) -> Outcome:
    sizes = context.options.sizes
    work = context.workdir
    payload = work.fresh("large-payload")
    context.log(f"large upload: writing a {size_label(sizes.large_bytes)} random file")
    source = random_file(payload / "large.bin", sizes.large_bytes)
    expected = _sha256(source)
    with ExitStack() as stack:
        kmflow_dir = work.fresh("kmflow-large")
        kmflow = stack.enter_context(
            kmflow_server(
                "kmflow-large", local_backend_env(kmflow_dir), workers=1, cwd=kmflow_dir,
                log_dir=work.logs,
            )
        )  # fmt: skip
        naive = stack.enter_context(
            naive_server("naive-large", work.fresh("naive-large"), workers=1, log_dir=work.logs)
        )
        nginx = stack.enter_context(
            nginx_server("nginx-large", work.fresh("nginx-large"), log_dir=work.logs)
        )

        limit = max_seconds(sizes.large_bytes)

        def dd(round_number: int) -> Sample:
            target = work.fresh(f"dd-r{round_number}") / "large.bin"
            nbytes, seconds = transfers.dd_fsync(source, target, limit)
            return _synced(Sample(megabytes_per_second(nbytes, seconds)))

        def kmflow_upload(round_number: int) -> Sample:
            return _synced(_kmflow(kmflow, source, expected, f"large-r{round_number}", payload))

        def naive_multipart(round_number: int, response: Path) -> transfers.Transfer:
            url, fields = f"{naive.url}/upload", {"engagement_id": "bench"}
            return transfers.upload_multipart(url, source, fields, response, limit)

        def naive_raw(round_number: int, response: Path) -> transfers.Transfer:
            url = f"{naive.url}/raw/large-r{round_number}.bin"
            return transfers.put_file(url, source, response, limit)

        def nginx_put(round_number: int, response: Path) -> transfers.Transfer:
            url = f"{nginx.url}/r{round_number}/large.bin"  # a new directory each round
            return transfers.put_file(url, source, response, limit)

        targets = {
            "dd conv=fsync": dd,
            "kmflow": kmflow_upload,
            "naive multipart": _over_http(naive, source, payload, naive_multipart),
            "naive raw stream": _over_http(naive, source, payload, naive_raw),
            "nginx PUT": _over_http(nginx, source, payload, nginx_put),
        }
        samples = alternate(
            targets,
            context.options.rounds,
            context.options.sizes.scenario_budget_seconds,
            on_sample=lambda name, n, s: context.log(f"large upload r{n + 1}: {name} {s.show()}"),
        )
        big, big_size = None, None
        if sizes.big_bytes:
            times = max(1, round(sizes.big_bytes / sizes.large_bytes))
            big_size = times * sizes.large_bytes
            context.log(f"large upload: kmflow with {size_label(big_size)}")
            big_source = repeated_file(payload / "big.bin", source, times)
            big = _kmflow(kmflow, big_source, None, "large-big", payload)
            context.log(f"large upload: big file {big.show()}")
    return _outcome(samples, big, sizes.large_bytes, big_size)


def _over_http(
    server: ServerProcess,
    source: Path,
    scratch: Path,
    send: Callable[[int, Path], transfers.Transfer],
) -> Callable[[int], Sample]:
    """A target that sends `source` once per round, measured and then synced; each answer
    is kept in a file of its own."""

    def measure(round_number: int) -> Sample:
        response = scratch / f"{server.name}-{send.__name__}-r{round_number}.txt"
        return _synced(_measured(server, source, lambda: send(round_number, response)))

    return measure


def _kmflow(
    server: ServerProcess, source: Path, expected_hash: str | None, engagement: str, scratch: Path
) -> Sample:
    """One upload to kmflow; its answer must be the record of exactly these bytes."""
    response = scratch / f"kmflow-{engagement}.json"
    url, fields = f"{server.url}/api/v1/evidence/upload", {"engagement_id": engagement}
    limit = max_seconds(source.stat().st_size)
    sample = _measured(
        server, source, lambda: transfers.upload_multipart(url, source, fields, response, limit)
    )
    record = json.loads(response.read_text())
    if record.get("size_bytes") != source.stat().st_size or (
        expected_hash is not None and record.get("content_hash") != expected_hash
    ):
        raise server.failure(f"stored something else: {record}")
    return sample


def _measured(
    server: ServerProcess, source: Path, transfer: Callable[[], transfers.Transfer]
) -> Sample:
    server.reset_peak()
    result = transfer()
    if result.status not in (200, 201, 204):
        raise server.failure(f"answered {result.status}: {result.body[:300]}")
    size = source.stat().st_size
    if result.bytes_up < size:
        raise server.failure(f"only {result.bytes_up} of {size} bytes were sent")
    return Sample(megabytes_per_second(size, result.seconds), server.peak_rss_mib())


def _synced(sample: Sample) -> Sample:
    """Write back everything dirty before the next target starts (not timed)."""
    os.sync()
    return sample


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(8 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _outcome(
    samples: dict[str, list[Sample]], big: Sample | None, size: int, big_size: int | None
) -> Outcome:
    label = size_label(size)
    rate = {name: median([s.mb_per_s for s in values]) for name, values in samples.items()}
    peak = {
        name: max(s.peak_mib for s in values if s.peak_mib is not None)
        for name, values in samples.items()
        if any(s.peak_mib is not None for s in values)
    }
    metric = f"{label} multipart upload, MB/s"
    under_100 = Target(Check.VALUE_BELOW, 100, "MiB")
    rows = [
        Row(
            SCENARIO, metric, rate["kmflow"], "MB/s",
            "naive multipart (UploadFile + copyfileobj, no fsync)", rate["naive multipart"],
            (Target(Check.RATIO_AT_LEAST, 2),), "kmflow: fsynced, hashed, indexed",
        ),
        Row(
            SCENARIO, metric, rate["kmflow"], "MB/s", "dd conv=fsync (raw disk write)",
            rate["dd conv=fsync"], (Target(Check.RATIO_AT_LEAST, 0.8),),
        ),
        Row(SCENARIO, metric, rate["kmflow"], "MB/s", "nginx WebDAV PUT (no fsync)",
            rate["nginx PUT"]),
        Row(SCENARIO, metric, rate["kmflow"], "MB/s", "naive raw-body stream PUT (no fsync)",
            rate["naive raw stream"]),
        Row(
            SCENARIO, f"server peak RSS at {label} (max of rounds)", peak["kmflow"], "MiB",
            "naive multipart", peak["naive multipart"], (under_100,),
            f"nginx (max over master+worker): {peak['nginx PUT']:.0f} MiB",
        ),
    ]  # fmt: skip
    if big is not None and big_size:
        rows.append(
            Row(
                SCENARIO, f"server peak RSS at {size_label(big_size)}", big.peak_mib, "MiB",
                f"kmflow at {label}", peak["kmflow"], (under_100,),
                f"{size_label(big_size)} upload at {big.mb_per_s:.0f} MB/s",
            )
        )  # fmt: skip
    details = [round_details(f"Large upload ({label}), per round", samples, Sample.show)]
    if big is not None and big_size:
        details.append(f"- kmflow {size_label(big_size)}: {big.show()}")
    return Outcome(rows, details)
