"""Scenario 4: a large stored file downloaded with curl, from kmflow
(`GET /api/v1/evidence/{engagement_id}/{id}/content`, local backend, 1 worker), from nginx
(static file, sendfile) and from the naive app (`FileResponse`), in alternated rounds.

All three serve the very same inode: the file kmflow stored is hard-linked into nginx's and
the naive app's directories, so page-cache state is the same for each. Peak RSS is each
server's VmHWM, reset before every download.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

from benchmarks import transfers
from benchmarks.context import Context, Outcome
from benchmarks.datafiles import random_file
from benchmarks.labels import size_label
from benchmarks.nginx import nginx_server, www
from benchmarks.results import Row, round_details
from benchmarks.rounds import alternate
from benchmarks.servers import ServerProcess, kmflow_server, local_backend_env, naive_server
from benchmarks.stats import median, megabytes_per_second

SCENARIO = "4 download"
MIN_RATE = 5_000_000  # bytes/s: below this a download counts as hung


@dataclass(frozen=True)
class Sample:
    mb_per_s: float
    peak_mib: float

    def show(self) -> str:
        return f"{self.mb_per_s:.0f} MB/s (peak {self.peak_mib:.0f} MiB)"


def run(context: Context) -> Outcome:
    size = context.options.sizes.large_bytes
    work = context.workdir
    payload = work.fresh("download-payload")
    source = random_file(payload / "large.bin", size)
    max_seconds = int(size / MIN_RATE) + 60
    with ExitStack() as stack:
        kmflow_dir = work.fresh("kmflow-download")
        env = local_backend_env(kmflow_dir)
        kmflow = stack.enter_context(
            kmflow_server("kmflow-download", env, workers=1, cwd=kmflow_dir, log_dir=work.logs)
        )
        context.log(f"download: storing a {size_label(size)} file in kmflow")
        upload = transfers.upload_multipart(
            f"{kmflow.url}/api/v1/evidence/upload", source, {"engagement_id": "download"},
            payload / "record.json", max_seconds,
        )  # fmt: skip
        if upload.status != 201:
            raise kmflow.failure(f"refused the upload: {upload.status} {upload.body[:300]}")
        record = json.loads(upload.body)
        stored = kmflow_dir / "evidence_store" / record["volume_path"]
        nginx_dir = work.fresh("nginx-download")
        naive_dir = work.fresh("naive-download")
        (naive_dir / "files").mkdir()
        nginx = stack.enter_context(nginx_server("nginx-download", nginx_dir, log_dir=work.logs))
        os.link(stored, www(nginx_dir) / "large.bin")
        os.link(stored, naive_dir / "files" / "large.bin")
        naive = stack.enter_context(
            naive_server("naive-download", naive_dir, workers=1, log_dir=work.logs)
        )
        content = f"/api/v1/evidence/download/{record['id']}/content"
        urls = {
            "kmflow": (kmflow, content),
            "nginx": (nginx, "/large.bin"),
            "naive FileResponse": (naive, "/files/large.bin"),
        }

        def measure(server: ServerProcess, path: str) -> Sample:
            server.reset_peak()
            result = transfers.download(server.url + path, max_seconds)
            if result.status != 200 or result.bytes_down != size:
                raise server.failure(f"answered {result.status} with {result.bytes_down} bytes")
            return Sample(megabytes_per_second(size, result.seconds), server.peak_rss_mib())

        def target(server: ServerProcess, path: str) -> Callable[[int], Sample]:
            return lambda _round: measure(server, path)

        samples = alternate(
            {name: target(server, path) for name, (server, path) in urls.items()},
            context.options.rounds,
            context.options.sizes.scenario_budget_seconds,
            on_sample=lambda name, n, s: context.log(f"download r{n + 1}: {name} {s.show()}"),
        )
    return _outcome(samples, size)


def _outcome(samples: dict[str, list[Sample]], size: int) -> Outcome:
    rate = {name: median([s.mb_per_s for s in values]) for name, values in samples.items()}
    peak = {name: max(s.peak_mib for s in values) for name, values in samples.items()}
    label = size_label(size)
    rows = [
        Row(SCENARIO, f"{label} download, MB/s", rate["kmflow"], "MB/s",
            "nginx (sendfile)", rate["nginx"]),
        Row(SCENARIO, f"{label} download, MB/s", rate["kmflow"], "MB/s",
            "naive FileResponse", rate["naive FileResponse"]),
        Row(SCENARIO, "server peak RSS (max of rounds)", peak["kmflow"], "MiB",
            "nginx (max over master+worker)", peak["nginx"],
            note=f"naive FileResponse: {peak['naive FileResponse']:.0f} MiB"),
    ]  # fmt: skip
    return Outcome(rows, [round_details(f"Download ({label}), per round", samples, Sample.show)])
