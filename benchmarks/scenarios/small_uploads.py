"""Scenario 2: many small uploads at once, every target driven by the same wrk command.

Targets (all started once, then measured in alternation, each warmed up first): kmflow
(local backend) with 1 and 2 workers, the naive multipart endpoint with 1 and 2 workers,
and nginx WebDAV PUT (1 worker). The multipart targets get the same pre-built form body (an
`engagement_id` field and a 16 KiB file), nginx the bare 16 KiB; wrk makes 32 bytes of the
file unique per request, so no upload duplicates another. Every request goes to a new
path: kmflow and the naive app ignore the `?n=` that makes it unique, and nginx gets a new
directory per round. Requests/s counts from the first request to the N-th response.

Each round also reads the server's CPU time (user and kernel, all its processes and threads)
before and after, so the report says what one upload costs the server, next to what the naive
endpoint's costs it. With `--before-rev REV`, kmflow as it was at that git revision runs as one
more target (one worker, from a worktree of this repository): the same figures, before and
after, in the same run.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from benchmarks.context import Context, Outcome
from benchmarks.cpu_time import cpu_time
from benchmarks.labels import count_label, size_label
from benchmarks.multipart_body import multipart_form, unique_content
from benchmarks.nginx import nginx_server
from benchmarks.results import Check, Row, Target, round_details
from benchmarks.rounds import alternate
from benchmarks.servers import (
    ServerProcess,
    kmflow_server,
    local_backend_env,
    naive_server,
    revision_checkout,
)
from benchmarks.stats import median
from benchmarks.wrk import Load, WrkResult, run_wrk

SCENARIO = "2 small uploads"
BEFORE = "kmflow before 1w"
WORKER_COUNTS = (1, 2)
WARMUP_REQUESTS = 200


@dataclass(frozen=True)
class Sample:
    """One round of one target: wrk's figures and the server's CPU time per response."""

    wrk: WrkResult
    user_us: float
    kernel_us: float

    @property
    def cpu_us(self) -> float:
        return self.user_us + self.kernel_us


@dataclass(frozen=True)
class Endpoint:
    """Where and what one target is sent; `prefix` gives the path prefix for a round."""

    server: ServerProcess
    method: str
    prefix: Callable[[int], str]
    body: Path
    content_type: str

    def load(self, load: Load, round_number: int) -> Sample:
        pids = self.server.pids()
        before = cpu_time(pids)
        result = run_wrk(
            self.server.url + "/", self.method, self.prefix(round_number), load, self.body,
            self.content_type,
        )  # fmt: skip
        spent = cpu_time(pids) - before
        us = 1e6 / max(result.responses, 1)  # per response
        return Sample(result, spent.user_seconds * us, spent.kernel_seconds * us)


def run(context: Context) -> Outcome:
    sizes = context.options.sizes
    work = context.workdir
    payload = work.fresh("small-payload")
    content = unique_content(sizes.small_bytes)
    form, form_type = multipart_form({"engagement_id": "small-bench"}, "evidence.bin", content)
    form_file, raw_file = payload / "form.bin", payload / "raw.bin"
    form_file.write_bytes(form)
    raw_file.write_bytes(content)
    load = Load(sizes.small_count, sizes.concurrency, sizes.wrk_cap_seconds)
    warmup = Load(min(WARMUP_REQUESTS, sizes.small_count), sizes.concurrency, sizes.wrk_cap_seconds)

    with ExitStack() as stack:
        endpoints: dict[str, Endpoint] = {}
        for workers in WORKER_COUNTS:
            directory = work.fresh(f"kmflow-small-{workers}w")
            kmflow = stack.enter_context(
                kmflow_server(
                    f"kmflow-small-{workers}w", local_backend_env(directory), workers=workers,
                    cwd=directory, log_dir=work.logs,
                )
            )  # fmt: skip
            endpoints[f"kmflow {workers}w"] = Endpoint(
                kmflow, "POST", lambda _: "/api/v1/evidence/upload?n=", form_file, form_type
            )
        before_rev = context.options.before_rev
        if before_rev:
            checkout = stack.enter_context(revision_checkout(before_rev, work.fresh("before-rev")))
            directory = work.fresh("kmflow-small-before")
            kmflow = stack.enter_context(
                kmflow_server(
                    "kmflow-small-before", local_backend_env(directory), workers=1,
                    cwd=directory, log_dir=work.logs, source=checkout,
                )
            )  # fmt: skip
            endpoints[BEFORE] = Endpoint(
                kmflow, "POST", lambda _: "/api/v1/evidence/upload?n=", form_file, form_type
            )
        for workers in WORKER_COUNTS:
            naive = stack.enter_context(
                naive_server(
                    f"naive-small-{workers}w", work.fresh(f"naive-small-{workers}w"),
                    workers=workers, log_dir=work.logs,
                )
            )  # fmt: skip
            endpoints[f"naive multipart {workers}w"] = Endpoint(
                naive, "POST", lambda _: "/upload?n=", form_file, form_type
            )
        nginx = stack.enter_context(
            nginx_server("nginx-small", work.fresh("nginx-small"), log_dir=work.logs)
        )
        endpoints["nginx PUT"] = Endpoint(
            nginx, "PUT", lambda n: f"/r{n}/f", raw_file, "application/octet-stream"
        )

        for name, endpoint in endpoints.items():
            warm = endpoint.load(warmup, -1)
            context.log(f"small uploads warm-up: {name} {show(warm)}")
            if not warm.wrk.ok:
                raise endpoint.server.failure(f"fails under load: {problems(warm.wrk)}")

        def measure(endpoint: Endpoint) -> Callable[[int], Sample]:
            return lambda round_number: endpoint.load(load, round_number)

        samples = alternate(
            {name: measure(endpoint) for name, endpoint in endpoints.items()},
            context.options.rounds,
            sizes.scenario_budget_seconds,
            on_sample=lambda name, n, r: context.log(f"small uploads r{n + 1}: {name} {show(r)}"),
        )
    return _outcome(samples, load, sizes.small_bytes, before_rev)


def show(sample: Sample) -> str:
    result = sample.wrk
    text = (
        f"{result.requests_per_second:.0f} req/s, "
        f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
        f"server CPU {sample.user_us:.0f} + {sample.kernel_us:.0f} us/upload (user + kernel)"
    )
    return text if result.ok else f"{text} [{problems(result)}]"


def problems(result: WrkResult) -> str:
    found = []
    if not result.complete:
        found.append(f"only {result.responses} responses before the time cap")
    if result.non_2xx:
        found.append(f"{result.non_2xx} non-2xx, first: {result.first_error[:120]}")
    if result.socket_errors:
        found.append(f"{result.socket_errors} socket errors")
    return "; ".join(found)


def _outcome(
    samples: dict[str, list[Sample]], load: Load, size: int, before_rev: str | None
) -> Outcome:
    rps = {name: median([s.wrk.requests_per_second for s in ss]) for name, ss in samples.items()}
    p50 = {name: median([s.wrk.p50_ms for s in ss]) for name, ss in samples.items()}
    p99 = {name: median([s.wrk.p99_ms for s in ss]) for name, ss in samples.items()}
    cpu = {name: median([s.cpu_us for s in ss]) for name, ss in samples.items()}
    user = {name: median([s.user_us for s in ss]) for name, ss in samples.items()}
    kernel = {name: median([s.kernel_us for s in ss]) for name, ss in samples.items()}
    failing = {name for name, ss in samples.items() if not all(s.wrk.ok for s in ss)}

    def split(name: str) -> str:
        return f"user {user[name]:.0f} + kernel {kernel[name]:.0f} us"

    def note(*names: str) -> str:
        bad = sorted(failing.intersection(names))
        return f"errors in rounds of {', '.join(bad)} (see details)" if bad else ""

    shape = f"{count_label(load.count)} x {size_label(size)}, c{load.concurrency}"
    rows = []
    for workers in WORKER_COUNTS:
        kmflow, naive = f"kmflow {workers}w", f"naive multipart {workers}w"
        baseline = f"naive multipart, {workers} worker{'s' if workers > 1 else ''}"
        per = f"{workers} worker{'s' if workers > 1 else ''}"
        rows += [
            Row(SCENARIO, f"req/s, {per} ({shape})", rps[kmflow], "req/s", baseline, rps[naive],
                (Target(Check.RATIO_AT_LEAST, 1.5),), note(kmflow, naive)),
            Row(SCENARIO, f"p99 latency, {per}", p99[kmflow], "ms", baseline, p99[naive],
                (Target(Check.VALUE_BELOW, 50, "ms"),)),
            Row(SCENARIO, f"p50 latency, {per}", p50[kmflow], "ms", baseline, p50[naive]),
        ]  # fmt: skip
    rows += [
        Row(SCENARIO, "req/s, 2 workers", rps["kmflow 2w"], "req/s", "kmflow, 1 worker",
            rps["kmflow 1w"], (Target(Check.RATIO_AT_LEAST, 1.7),)),
        Row(SCENARIO, "server CPU per upload, 1 worker", cpu["kmflow 1w"], "us",
            "naive multipart, 1 worker", cpu["naive multipart 1w"],
            note=f"kmflow {split('kmflow 1w')}; naive {split('naive multipart 1w')}"),
    ]  # fmt: skip
    if before_rev:
        rows += [
            Row(SCENARIO, "req/s, 1 worker", rps["kmflow 1w"], "req/s",
                f"kmflow before ({before_rev}), 1 worker", rps[BEFORE], note=note(BEFORE)),
            Row(SCENARIO, "server CPU per upload, 1 worker", cpu["kmflow 1w"], "us",
                f"kmflow before ({before_rev})", cpu[BEFORE],
                note=f"now {split('kmflow 1w')}; before {split(BEFORE)}"),
        ]  # fmt: skip
    rows += [
        Row(SCENARIO, "req/s, 2 workers", rps["kmflow 2w"], "req/s",
            "nginx WebDAV PUT (1 worker, no fsync)", rps["nginx PUT"], note=note("nginx PUT")),
        Row(SCENARIO, "p99 latency, 2 workers", p99["kmflow 2w"], "ms", "nginx WebDAV PUT",
            p99["nginx PUT"]),
    ]  # fmt: skip
    return Outcome(rows, [round_details(f"Small uploads ({shape}), per round", samples, show)])
