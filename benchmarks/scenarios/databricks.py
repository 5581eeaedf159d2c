"""Scenario 5: the Databricks path, against MiniLake (a local Databricks API emulator; see
`benchmarks.minilake_server`). MiniLake is one Python process answering every call, so these
figures are about round trips and concurrency more than about Databricks' own speed.

Per round, in alternation:
- kmflow upload: `kmflow serve` with STORAGE_BACKEND=databricks; a few uploads one at a time
  (wrk, 1 connection) while MiniLake counts the requests they cause (round trips per upload),
  then a bounded wrk run at concurrency 8 (uploads/s);
- migration: `scripts/migrate_to_databricks.py` (the runbook's script, default 8 workers)
  copying a local kmflow store of small files into a fresh schema; files/s from its wall time,
  Python start-up included, as an operator sees it;
- sequential loop: `sdk_loop.sequential_upload`, the same files into another fresh schema;
- MiniLake PUT ceiling: as many plain Files API PUTs of the same size from wrk (8
  connections, no SDK, no SQL): what MiniLake itself can take, so a slow figure can be put
  on the client or on the emulator.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from app.storage.local.backend import LocalBackend
from benchmarks.context import Context, Outcome
from benchmarks.labels import count_label, size_label
from benchmarks.minilake import CATALOG, VOLUME, MiniLake, start_minilake
from benchmarks.multipart_body import multipart_form, unique_content
from benchmarks.results import Check, Row, Target, round_details
from benchmarks.rounds import alternate
from benchmarks.sdk_loop import sequential_upload
from benchmarks.servers import REPO, ServerProcess, kmflow_server, python_env
from benchmarks.stats import median
from benchmarks.wrk import Load, run_wrk

SCENARIO = "5 databricks (MiniLake)"
ENGAGEMENTS = 10
COUNTED_UPLOADS = 20
UPLOAD_CONCURRENCY = 8
_COPIED = re.compile(r"copied: (\d+) .*failed: (\d+)")


@dataclass(frozen=True)
class Sample:
    per_second: float
    round_trips: float  # HTTP requests MiniLake received per upload or file
    kinds: dict[str, int] = field(default_factory=dict)

    def show(self) -> str:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.kinds.items()))
        return f"{self.per_second:.0f}/s, {self.round_trips:.2f} requests each ({kinds})"


def run(context: Context) -> Outcome:
    sizes = context.options.sizes
    work = context.workdir
    source = work.fresh("migration-source")
    context.log(f"databricks: storing {sizes.migration_files} files in a local kmflow store")
    seed_store(source, sizes.migration_files, sizes.small_bytes)
    payload = work.fresh("databricks-payload")
    form, form_type = multipart_form(
        {"engagement_id": "databricks-bench"}, "evidence.bin", unique_content(sizes.small_bytes)
    )
    (payload / "form.bin").write_bytes(form)
    (payload / "raw.bin").write_bytes(unique_content(sizes.small_bytes))
    with ExitStack() as stack:
        minilake = MiniLake(stack.enter_context(start_minilake(work.fresh("minilake"), work.logs)))
        minilake.new_schema("uploads")
        kmflow_dir = work.fresh("kmflow-databricks")
        env = {**minilake.env("uploads"), "STATE_PATH": str(kmflow_dir / "state")}
        kmflow = stack.enter_context(
            kmflow_server("kmflow-databricks", env, workers=1, cwd=kmflow_dir, log_dir=work.logs)
        )

        def upload(round_number: int) -> Sample:
            return _kmflow_uploads(
                kmflow, minilake, payload / "form.bin", form_type, sizes.databricks_uploads,
                sizes.wrk_cap_seconds,
            )  # fmt: skip

        def migrate(round_number: int) -> Sample:
            schema = f"migration_r{round_number}"
            minilake.new_schema(schema)
            return _counted(minilake, sizes.migration_files, lambda: migrate_store(
                minilake, schema, source, work.fresh(f"migration-r{round_number}"),
                sizes.migration_files,
            ))  # fmt: skip

        def loop(round_number: int) -> Sample:
            schema = f"loop_r{round_number}"
            minilake.new_schema(schema)
            return _counted(
                minilake,
                sizes.migration_files,
                lambda: _expect(sequential_upload(minilake, schema, source / "evidence_store"),
                                sizes.migration_files),
            )  # fmt: skip

        def ceiling(round_number: int) -> Sample:
            return _put_ceiling(
                minilake, f"ceiling-r{round_number}", payload / "raw.bin",
                Load(sizes.migration_files, UPLOAD_CONCURRENCY, sizes.wrk_cap_seconds),
            )  # fmt: skip

        samples = alternate(
            {
                "kmflow upload": upload,
                "migration": migrate,
                "sequential loop": loop,
                "MiniLake PUT ceiling": ceiling,
            },
            context.options.rounds,
            sizes.scenario_budget_seconds,
            on_sample=lambda name, n, s: context.log(f"databricks r{n + 1}: {name} {s.show()}"),
        )
    return _outcome(samples, sizes.migration_files, sizes.small_bytes)


def seed_store(directory: Path, count: int, size: int) -> None:
    """A local kmflow store (`evidence_store/` and its index in `state/`) of random files."""
    backend = LocalBackend(directory / "evidence_store", directory / "state")
    backend.startup()
    try:
        for n in range(count):
            backend.write(
                f"eng-{n % ENGAGEMENTS:02d}", f"file-{n:05d}.bin", io.BytesIO(os.urandom(size))
            )
    finally:
        backend.close()


def _counted(minilake: MiniLake, items: int, work: Callable[[], None]) -> Sample:
    minilake.reset_counts()
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    kinds = minilake.counts()
    return Sample(items / seconds, sum(kinds.values()) / items, kinds)


def migrate_store(
    minilake: MiniLake, schema: str, source: Path, state: Path, expected: int
) -> None:
    """The runbook's script, as an operator runs it, into a schema of its own."""
    command = [sys.executable, str(REPO / "scripts" / "migrate_to_databricks.py")]
    command += [
        "--source-dir",
        str(source / "evidence_store"),
        "--state-dir",
        str(source / "state"),
    ]
    command += ["--catalog", CATALOG, "--schema", schema, "--volume", VOLUME]
    env = python_env({**minilake.env(schema), "STATE_PATH": str(state / "state")})
    finished = subprocess.run(
        command, env=env, cwd=state, capture_output=True, text=True, timeout=1800, check=False
    )
    output = finished.stdout + finished.stderr
    copied = _COPIED.search(output)
    if finished.returncode != 0 or copied is None or int(copied[2]) != 0:
        raise RuntimeError(f"migration failed ({finished.returncode}):\n{output[-2000:]}")
    _expect(int(copied[1]), expected)


def _expect(copied: int, expected: int) -> None:
    if copied != expected:
        raise RuntimeError(f"copied {copied} files, expected {expected}")


def _kmflow_uploads(
    server: ServerProcess, minilake: MiniLake, body: Path, content_type: str, count: int,
    cap_seconds: int,
) -> Sample:  # fmt: skip
    """Round trips from uploads one at a time (exact: no request in flight at the end),
    uploads/s from a run at concurrency 8."""
    prefix = "/api/v1/evidence/upload?n="
    minilake.reset_counts()
    counted = Load(COUNTED_UPLOADS, 1, cap_seconds)
    result = run_wrk(server.url + "/", "POST", prefix, counted, body, content_type)
    kinds = minilake.counts()
    if not result.ok:
        raise server.failure(f"uploads failed: {result}")
    busy = run_wrk(
        server.url + "/", "POST", prefix, Load(count, UPLOAD_CONCURRENCY, cap_seconds), body,
        content_type,
    )  # fmt: skip
    if not busy.ok:
        raise server.failure(f"uploads failed under load: {busy}")
    per_upload = {kind: round(n / COUNTED_UPLOADS) for kind, n in kinds.items()}
    return Sample(busy.requests_per_second, sum(kinds.values()) / COUNTED_UPLOADS, per_upload)


def _put_ceiling(minilake: MiniLake, directory: str, body: Path, load: Load) -> Sample:
    """How many small files/s MiniLake's Files API takes from wrk, with no SDK and no SQL:
    the most any client (the migration included) could get from this MiniLake."""
    path = f"/api/2.0/fs/files/Volumes/{CATALOG}/uploads/{VOLUME}/{directory}/f"
    result = run_wrk(minilake.url + "/", "PUT", path, load, body, "application/octet-stream")
    if not result.ok:
        raise RuntimeError(f"MiniLake refused plain PUTs: {result}")
    return Sample(result.requests_per_second, 1.0, {"files PUT": 1})


def _outcome(samples: dict[str, list[Sample]], files: int, size: int) -> Outcome:
    rate = {name: median([s.per_second for s in values]) for name, values in samples.items()}
    trips = {name: median([s.round_trips for s in values]) for name, values in samples.items()}
    kinds = samples["kmflow upload"][-1].kinds
    breakdown = ", ".join(f"{kind}: {n}" for kind, n in sorted(kinds.items()))
    loop = "sequential loop (files.upload + INSERT per file)"
    batch = f"{count_label(files)} x {size_label(size)}"
    rows = [
        Row(SCENARIO, "HTTP round trips per upload via kmflow", trips["kmflow upload"], "",
            loop, trips["sequential loop"], note=f"per upload: {breakdown}"),
        Row(SCENARIO, f"uploads/s via kmflow (c{UPLOAD_CONCURRENCY})", rate["kmflow upload"],
            "/s", loop, rate["sequential loop"]),
        Row(SCENARIO, f"migration script, files/s ({batch})", rate["migration"], "files/s",
            loop, rate["sequential loop"], (Target(Check.RATIO_AT_LEAST, 5),)),
        Row(SCENARIO, f"migration script, files/s ({batch})", rate["migration"], "files/s",
            f"MiniLake alone: Files API PUTs from wrk (c{UPLOAD_CONCURRENCY}), the ceiling",
            rate["MiniLake PUT ceiling"]),
        Row(SCENARIO, "HTTP round trips per migrated file", trips["migration"], "", loop,
            trips["sequential loop"]),
    ]  # fmt: skip
    return Outcome(
        rows, [round_details("Databricks path (MiniLake), per round", samples, Sample.show)]
    )
