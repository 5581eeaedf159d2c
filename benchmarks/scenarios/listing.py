"""Scenario 3: `GET /api/v1/evidence/{engagement_id}` (the newest 100 records) on a running
kmflow per backend, with 1k, 10k and 100k records in the engagement.

Each backend gets one store holding all three engagements (`listing_seed`) and one kmflow
process (1 worker). The timed client is wrk with one connection (so a latency is one
request's, not a queue's), a fixed number of GETs per engagement and round (fewer if the time
cap ends the run first: the details give n); targets run in alternation, engagement size by
engagement size, backend by backend. Baselines: the same
backend's 1k figure (is the list flat?) and the local backend at the same size. For
databricks also the page's own SELECT sent straight to MiniLake with the SDK, one at a time:
what the emulator alone costs, so kmflow's share of the figure can be told apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
from databricks.sdk.errors.base import DatabricksError
from databricks.sdk.service.sql import StatementParameterListItem

from app.storage.databricks.sql import COLUMNS
from benchmarks.context import Context, Outcome
from benchmarks.labels import count_label
from benchmarks.listing_seed import engagement_for, seed_databricks, seed_delta, seed_local
from benchmarks.minilake import MiniLake, start_minilake
from benchmarks.results import Check, Row, Target, failed_row, round_details
from benchmarks.rounds import alternate
from benchmarks.servers import ServerProcess, kmflow_server
from benchmarks.stats import median, percentile
from benchmarks.wrk import Load, run_wrk

SCENARIO = "3 listing"
PAGE = 100
WARMUP_REQUESTS = 20
MIN_SAMPLES = 10  # fewer GETs than this in a capped run: something is wrong
DIRECT_REQUESTS = 100  # at most, per round, for the MiniLake-alone figure
SCHEMA = "listing"


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p99_ms: float
    samples: int

    def show(self) -> str:
        return f"{self.p50_ms:.2f} / {self.p99_ms:.2f} ms (n={self.samples})"


def run(context: Context) -> Outcome:
    sizes = context.options.sizes
    counts = sizes.listing_records
    work = context.workdir
    outcome = Outcome()
    with ExitStack() as stack:
        servers: dict[str, ServerProcess] = {}
        minilake: MiniLake | None = None

        def serve(backend: str, env: dict[str, str], directory: Path) -> None:
            server = kmflow_server(
                f"kmflow-list-{backend}", env, workers=1, cwd=directory, log_dir=work.logs
            )
            servers[backend] = stack.enter_context(server)

        for backend, seed in (("local", seed_local), ("delta", seed_delta)):
            directory = work.fresh(f"listing-{backend}")
            context.log(f"listing: seeding {backend} with {counts} records")
            serve(backend, seed(directory, counts), directory)
        try:
            context.log(f"listing: seeding databricks (MiniLake) with {counts} records")
            minilake = MiniLake(
                stack.enter_context(start_minilake(work.fresh("listing-minilake"), work.logs))
            )
            directory = work.fresh("listing-databricks")
            env = seed_databricks(minilake, SCHEMA, counts, directory / "state")
            serve("databricks", env, directory)
        except (RuntimeError, OSError, DatabricksError, httpx.HTTPError) as error:
            context.log(f"listing: databricks skipped: {error}")
            outcome.rows.append(failed_row(f"{SCENARIO} (databricks)", str(error)))
            minilake = None

        for server in servers.values():
            for count in counts:
                _check_page(server, count)
        load = Load(sizes.listing_requests, 1, sizes.listing_cap_seconds)
        warmup = Load(WARMUP_REQUESTS, 1, sizes.listing_cap_seconds)
        targets: dict[str, Callable[[int], Latency]] = {}
        for count in counts:
            for backend, server in servers.items():
                _list(server, count, warmup)
                targets[f"{backend} {count_label(count)}"] = _over_http(server, count, load)
            if minilake is not None and count in (counts[0], counts[-1]):
                requests = min(DIRECT_REQUESTS, sizes.listing_requests)
                targets[f"MiniLake alone {count_label(count)}"] = _direct(
                    minilake, count, requests, sizes.listing_cap_seconds
                )
        samples = alternate(
            targets,
            context.options.rounds,
            sizes.scenario_budget_seconds,
            on_sample=lambda name, n, r: context.log(f"listing r{n + 1}: {name} {r.show()}"),
        )
    outcome.rows += _rows(samples, list(servers), counts)
    outcome.details.append(round_details("Listing, p50 / p99 per round", samples, Latency.show))
    return outcome


def _over_http(server: ServerProcess, count: int, load: Load) -> Callable[[int], Latency]:
    return lambda _round: _list(server, count, load)


def _list(server: ServerProcess, count: int, load: Load) -> Latency:
    prefix = f"/api/v1/evidence/{engagement_for(count)}?limit={PAGE}&n="
    result = run_wrk(server.url + "/", "GET", prefix, load)
    # A run cut by the time cap is fine (fewer samples, said in the details); errors are not.
    if result.non_2xx or result.socket_errors or result.responses < MIN_SAMPLES:
        raise server.failure(f"listing failed: {result}")
    return Latency(result.p50_ms, result.p99_ms, result.responses)


def _direct(
    minilake: MiniLake, count: int, requests: int, cap_seconds: float
) -> Callable[[int], Latency]:
    """The SELECT kmflow's databricks backend sends for the first page, sent by the SDK."""
    statement = (
        f"SELECT {', '.join(COLUMNS)} FROM {minilake.metadata_table(SCHEMA)} "  # noqa: S608
        f"WHERE engagement_id = :engagement_id ORDER BY stored_at DESC, id DESC LIMIT {PAGE + 1}"
    )
    parameter = StatementParameterListItem(name="engagement_id", value=engagement_for(count))

    def measure(_round: int) -> Latency:
        timings: list[float] = []
        deadline = time.monotonic() + cap_seconds
        while len(timings) < requests and (not timings or time.monotonic() < deadline):
            started = time.perf_counter()
            minilake.sql(statement, [parameter])
            timings.append((time.perf_counter() - started) * 1000)
        return Latency(percentile(timings, 0.5), percentile(timings, 0.99), len(timings))

    return measure


def _check_page(server: ServerProcess, count: int) -> None:
    """The page must be what the figures claim: 100 records (or all) and a cursor if more."""
    url = f"{server.url}/api/v1/evidence/{engagement_for(count)}?limit={PAGE}"
    page = httpx.get(url, timeout=60).raise_for_status().json()
    expected = min(PAGE, count)
    if len(page["items"]) != expected or (count > PAGE) != (page["next_cursor"] is not None):
        raise server.failure(f"unexpected page for {count} records")


def _rows(
    samples: dict[str, list[Latency]], backends: list[str], counts: tuple[int, ...]
) -> list[Row]:
    p50 = {name: median([r.p50_ms for r in rs]) for name, rs in samples.items()}
    p99 = {name: median([r.p99_ms for r in rs]) for name, rs in samples.items()}
    smallest, largest = count_label(counts[0]), count_label(counts[-1])
    flat = Target(Check.RATIO_AT_MOST, 2)
    rows = []
    for backend in backends:
        low, high = f"{backend} {smallest}", f"{backend} {largest}"
        baseline = f"{backend}, {smallest} records"
        for count in counts[1:-1]:
            middle = f"{backend} {count_label(count)}"
            rows.append(
                Row(SCENARIO, f"p99, {count_label(count)} records ({backend})", p99[middle],
                    "ms", baseline, p99[low])
            )  # fmt: skip
        p99_targets = (Target(Check.VALUE_BELOW, 20, "ms"), flat) if backend == "local" else (flat,)
        rows += [
            Row(SCENARIO, f"p50, {largest} records ({backend})", p50[high], "ms", baseline,
                p50[low], (flat,)),
            Row(SCENARIO, f"p99, {largest} records ({backend})", p99[high], "ms", baseline,
                p99[low], p99_targets),
        ]  # fmt: skip
        if backend != "local" and "local" in backends:
            rows.append(
                Row(SCENARIO, f"p99, {largest} records ({backend})", p99[high], "ms",
                    f"local, {largest} records", p99[f"local {largest}"])
            )  # fmt: skip
    alone_low, alone_high = f"MiniLake alone {smallest}", f"MiniLake alone {largest}"
    if "databricks" in backends and alone_high in p50:
        rows.append(
            Row(SCENARIO, f"p50, {largest} records (databricks)", p50[f"databricks {largest}"],
                "ms", f"the same SELECT sent straight to MiniLake, {largest}", p50[alone_high],
                note=f"MiniLake alone at {smallest}: {p50[alone_low]:.1f} ms")
        )  # fmt: skip
    return rows
