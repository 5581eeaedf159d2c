"""Scenario 6: the Databricks path at a real workspace's speed.

MiniLake answers in milliseconds; a workspace does not. Here MiniLake runs behind the test
suite's latency model (`tests.datalake.latency_model`: a statement 0.3 s, a write statement a
1 s commit that takes its turn per table, 10 warehouse slots, Files API calls 0.08 s; scale it
with `--latency commit_seconds=2,files_put_seconds=0.3`), and every target meets the same
model in the same run:

- kmflow uploads at concurrency 16 and 64 (wrk against `kmflow serve`, 1 worker): uploads/s,
  p50/p99 latency, and the SQL statements the warehouse received per upload (all kinds);
- the runbook's migration script copying a local store of small files (8 workers);
- the sequential loop anyone would write first (`files.upload` + INSERT per file). A loop's
  rate does not depend on how many files it copies, so it copies a sample
  (`latency_loop_files`); 2,000 files would take it half an hour.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.context import Context, Outcome
from benchmarks.labels import count_label, size_label
from benchmarks.minilake import MiniLake, start_minilake
from benchmarks.multipart_body import multipart_form, unique_content
from benchmarks.results import Check, Row, Target, round_details
from benchmarks.rounds import alternate
from benchmarks.scenarios.databricks import migrate_store, seed_store
from benchmarks.sdk_loop import sequential_upload
from benchmarks.servers import ServerProcess, kmflow_server
from benchmarks.stats import median
from benchmarks.wrk import Load, run_wrk
from tests.datalake.latency_model import DEFAULT, Latency

SCENARIO = "6 databricks at workspace latency"
CONCURRENCIES = (16, 64)


@dataclass(frozen=True)
class Sample:
    per_second: float
    statements_each: float  # SQL statements the warehouse received per upload or file
    p50_ms: float | None = None
    p99_ms: float | None = None

    def show(self) -> str:
        text = f"{self.per_second:.2f}/s, {self.statements_each:.3f} statements each"
        if self.p50_ms is not None and self.p99_ms is not None:
            text += f", p50 {self.p50_ms / 1000:.2f} s, p99 {self.p99_ms / 1000:.2f} s"
        return text


def latency_of(overrides: dict[str, float]) -> Latency:
    """The default model with the run's `--latency name=value` overrides."""
    return replace(DEFAULT, **overrides)


def run(context: Context) -> Outcome:
    sizes = context.options.sizes
    latency = latency_of(context.options.latency)
    work = context.workdir
    source = work.fresh("latency-source")
    context.log(f"databricks-latency: storing {sizes.migration_files} files in a local store")
    seed_store(source, sizes.migration_files, sizes.small_bytes)
    payload = work.fresh("latency-payload")
    form, form_type = multipart_form(
        {"engagement_id": "latency-bench"}, "evidence.bin", unique_content(sizes.small_bytes)
    )
    (payload / "form.bin").write_bytes(form)
    with ExitStack() as stack:
        minilake = MiniLake(stack.enter_context(start_minilake(work.fresh("minilake"), work.logs)))
        minilake.new_schema("latency_uploads")
        kmflow_dir = work.fresh("kmflow-latency")
        env = {**minilake.env("latency_uploads"), "STATE_PATH": str(kmflow_dir / "state")}
        kmflow = stack.enter_context(
            kmflow_server("kmflow-latency", env, workers=1, cwd=kmflow_dir, log_dir=work.logs)
        )
        minilake.set_latency(latency)  # setup above ran at full speed; measurements do not

        def uploads(concurrency: int) -> Sample:
            count = sizes.latency_uploads_per_connection * concurrency
            load = Load(count, concurrency, sizes.wrk_cap_seconds)
            return _kmflow_uploads(kmflow, minilake, payload / "form.bin", form_type, load)

        def migrate(round_number: int) -> Sample:
            schema = f"latency_migration_r{round_number}"
            minilake.new_schema(schema)
            return _counted(minilake, sizes.migration_files, lambda: migrate_store(
                minilake, schema, source, work.fresh(f"latency-migration-r{round_number}"),
                sizes.migration_files,
            ))  # fmt: skip

        def loop(round_number: int) -> Sample:
            schema = f"latency_loop_r{round_number}"
            minilake.new_schema(schema)
            files = sizes.latency_loop_files
            return _counted(minilake, files, lambda: _expect(
                sequential_upload(minilake, schema, source / "evidence_store", files), files
            ))  # fmt: skip

        targets = {f"kmflow c{c}": (lambda n, c=c: uploads(c)) for c in CONCURRENCIES}
        samples = alternate(
            {**targets, "migration": migrate, "sequential loop": loop},
            context.options.rounds,
            sizes.scenario_budget_seconds,
            on_sample=lambda name, n, s: context.log(f"latency r{n + 1}: {name} {s.show()}"),
        )
    return _outcome(samples, latency, sizes.migration_files, sizes.small_bytes)


def _kmflow_uploads(
    server: ServerProcess, minilake: MiniLake, body: Path, content_type: str, load: Load
) -> Sample:
    prefix = "/api/v1/evidence/upload?n="
    minilake.reset_counts()
    result = run_wrk(server.url + "/", "POST", prefix, load, body, content_type)
    statements = sum(minilake.statement_counts().values())
    if not result.ok:
        raise server.failure(f"uploads failed at c{load.concurrency}: {result}")
    return Sample(
        result.requests_per_second,
        statements / result.responses,
        result.p50_ms,
        result.p99_ms,
    )


def _counted(minilake: MiniLake, items: int, work: Callable[[], None]) -> Sample:
    minilake.reset_counts()
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    return Sample(items / seconds, sum(minilake.statement_counts().values()) / items)


def _expect(copied: int, expected: int) -> None:
    if copied != expected:
        raise RuntimeError(f"copied {copied} files, expected {expected}")


def _outcome(samples: dict[str, list[Sample]], latency: Latency, files: int, size: int) -> Outcome:
    rate = {name: median([s.per_second for s in values]) for name, values in samples.items()}
    each = {name: median([s.statements_each for s in values]) for name, values in samples.items()}
    loop = "sequential loop (files.upload + INSERT per file)"
    model = (
        f"model: statement {latency.statement_seconds:g} s, commit {latency.commit_seconds:g} s "
        f"per table, {latency.warehouse_slots} slots, PUT {latency.files_put_seconds:g} s"
    )
    rows: list[Row] = []
    for concurrency, ratio_target in zip(CONCURRENCIES, (10, 25), strict=True):
        name = f"kmflow c{concurrency}"
        p50 = median([s.p50_ms for s in samples[name] if s.p50_ms is not None])
        p99 = median([s.p99_ms for s in samples[name] if s.p99_ms is not None])
        first = concurrency == CONCURRENCIES[0]
        rows += [
            Row(SCENARIO, f"uploads/s via kmflow (c{concurrency})", rate[name], "/s", loop,
                rate["sequential loop"], (Target(Check.RATIO_AT_LEAST, ratio_target),),
                note=model if first else ""),
            Row(SCENARIO, f"SQL statements per upload (c{concurrency})", each[name], "", loop,
                each["sequential loop"],
                (Target(Check.VALUE_AT_MOST, 0.2),) if first else ()),
            Row(SCENARIO, f"p50 upload latency (c{concurrency})", p50, "ms", "", None,
                (Target(Check.VALUE_AT_MOST, 3000, "ms"),) if first else ()),
            Row(SCENARIO, f"p99 upload latency (c{concurrency})", p99, "ms"),
        ]  # fmt: skip
    batch = f"{count_label(files)} x {size_label(size)}"
    rows += [
        Row(SCENARIO, f"migration script, files/s ({batch})", rate["migration"], "files/s",
            loop, rate["sequential loop"], (Target(Check.RATIO_AT_LEAST, 20),)),
        Row(SCENARIO, "SQL statements per migrated file", each["migration"], "", loop,
            each["sequential loop"]),
    ]  # fmt: skip
    details = round_details(f"Databricks at workspace latency ({model}), per round", samples,
                            Sample.show)  # fmt: skip
    return Outcome(rows, [details])
