"""List latency of the delta and local backends at 1k, 10k and 50k records, in one run.

    python -m benchmarks.list_latency [--sizes 1000,10000,50000] [--iterations 200]

For each size both backends get one engagement holding that many records (the hardest case
for a page: the newest 100 of N), then `backend.list(engagement, limit=100)` is timed,
alternating delta and local call by call so both see the same machine state. Two pages are
timed: the first page, and a page in the middle of the engagement (through a cursor).

How the records are put in place (listing reads metadata only, so no evidence files are
written for the bulk; the last uploads below are real):
- local: rows inserted straight into the SQLite index (one transaction); the B-tree and its
  index are the same as uploads would leave.
- delta: rows appended in commits of 100, each followed by the compaction the maintenance
  policy runs, so the data files are what steady-state uploads leave after maintenance
  (files of about COMPACT_TARGET_BYTES, in time order). Then `compact_every - 1` real uploads
  through `backend.write` add one small file each: the worst point of the maintenance cycle,
  just before the next compaction. What this shape does not reproduce is the length of the
  log (one version per upload in real use): lists of an unchanged table never read the log,
  and the cost of the refresh after a write is given separately in docs/backends.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.storage.base import StorageBackend
from app.storage.delta.backend import DeltaLakeBackend
from app.storage.delta.location import DeltaLocation
from app.storage.delta.maintenance import MaintenancePolicy
from app.storage.local.backend import LocalBackend
from app.storage.pagination import encode_cursor
from app.storage.records import EvidenceRecord

ENGAGEMENT = "ENG-BENCH"
PAGE = 100
BULK_COMMIT_ROWS = 100
TIME_BUDGET_SECONDS = 60.0  # per size, for the timed loop of both backends together


def synthetic_records(count: int, engagement: str = ENGAGEMENT) -> Iterator[EvidenceRecord]:
    """Records shaped like real uploads: one every ~1.3 s, realistic names and metadata."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(count):
        evidence_id = uuid.uuid4().hex
        name = f"board-pack-{n:06d}.pdf"
        yield EvidenceRecord(
            id=evidence_id,
            engagement_id=engagement,
            file_name=name,
            volume_path=f"evidence_store/{engagement}/{evidence_id}_{name}",
            content_hash=hashlib.sha256(evidence_id.encode()).hexdigest(),
            size_bytes=10_000 + n,
            stored_at=(start + timedelta(milliseconds=1300 * n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            metadata_json=f'{{"source":"sharepoint","custodian":"cfo","n":{n}}}',
        )


def populate_delta(
    root: Path, count: int, policy: MaintenancePolicy, engagement: str = ENGAGEMENT
) -> DeltaLakeBackend:
    backend = DeltaLakeBackend(
        DeltaLocation.parse(str(root / "delta_store")), root / "state" / "staging", policy
    )
    backend.startup()
    batch: list[EvidenceRecord] = []
    for record in synthetic_records(count - (policy.compact_every - 1), engagement):
        batch.append(record)
        if len(batch) == BULK_COMMIT_ROWS:
            backend.table.append(batch)
            backend.table.compact()
            batch = []
    if batch:
        backend.table.append(batch)
        backend.table.compact()
    # Stop maintenance first: these uploads must stay small files, and nothing may run in
    # the background while timing.
    backend.maintenance.close()
    for n in range(policy.compact_every - 1):
        backend.write(engagement, f"latest-{n}.pdf", io.BytesIO(b"%d" % n))
    return backend


def populate_local(root: Path, count: int, engagement: str = ENGAGEMENT) -> LocalBackend:
    backend = LocalBackend(root / "evidence_store", root / "state")
    backend.startup()
    columns = list(EvidenceRecord.model_fields)
    with sqlite3.connect(root / "state" / "index.sqlite3") as db:
        db.executemany(
            f"INSERT INTO evidence_metadata ({', '.join(columns)}) "  # noqa: S608
            f"VALUES ({', '.join('?' for _ in columns)})",
            (
                [getattr(record, column) for column in columns]
                for record in synthetic_records(count, engagement)
            ),
        )
    return backend


def middle_cursor(backend: StorageBackend, count: int) -> str:
    """The cursor of the page that starts halfway through the engagement."""
    cursor = None
    for _ in range(count // 2 // 1000):
        cursor = backend.list(ENGAGEMENT, limit=1000, cursor=cursor).next_cursor
    if cursor is None:
        last = backend.list(ENGAGEMENT, limit=count // 2).items[-1]
        cursor = encode_cursor(last.stored_at, last.id)
    return cursor


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def time_alternating(
    calls: dict[str, Callable[[], object]], iterations: int
) -> dict[str, list[float]]:
    """Milliseconds per call, calling each backend in turn (A B A B ...)."""
    for call in calls.values():  # warm caches, as a running service has
        for _ in range(5):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    deadline = time.monotonic() + TIME_BUDGET_SECONDS
    for _ in range(iterations):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - started) * 1000)
        if time.monotonic() > deadline:
            break
    return samples


def run(sizes: list[int], iterations: int) -> None:
    policy = MaintenancePolicy()
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="kmflow-bench-") as scratch:
            root = Path(scratch)
            started = time.perf_counter()
            delta = populate_delta(root / "delta", size, policy)
            local = populate_local(root / "local", size)
            populate_seconds = time.perf_counter() - started
            try:
                assert len(delta.list(ENGAGEMENT, limit=PAGE).items) == PAGE
                files = len(delta.table.open().file_uris())
                cursors = {"delta": middle_cursor(delta, size), "local": middle_cursor(local, size)}
                backends: dict[str, StorageBackend] = {"delta": delta, "local": local}
                first = time_alternating(
                    {name: _lister(backend, None) for name, backend in backends.items()},
                    iterations,
                )
                middle = time_alternating(
                    {name: _lister(backend, cursors[name]) for name, backend in backends.items()},
                    iterations,
                )
            finally:
                delta.close()
                local.close()
                shutil.rmtree(root, ignore_errors=True)
        rows.append((size, files, populate_seconds, first, middle))
        print(f"measured {size} records ({populate_seconds:.0f} s to populate)", flush=True)
    print_table(rows)


def _lister(backend: StorageBackend, cursor: str | None) -> Callable[[], object]:
    return lambda: backend.list(ENGAGEMENT, limit=PAGE, cursor=cursor)


def print_table(
    rows: list[tuple[int, int, float, dict[str, list[float]], dict[str, list[float]]]],
) -> None:
    print()
    print(f"List latency, `list(engagement, limit={PAGE})`, one engagement of N records (ms)")
    print()
    print(
        "| records | delta data files | page | delta p50 | delta p99 | local p50 | local p99 "
        "| delta/local p50 | delta/local p99 | samples |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for size, files, _, first, middle in rows:
        for label, samples in (("first", first), ("middle", middle)):
            d50, d99 = percentile(samples["delta"], 0.5), percentile(samples["delta"], 0.99)
            l50, l99 = percentile(samples["local"], 0.5), percentile(samples["local"], 0.99)
            print(
                f"| {size:,} | {files} | {label} | {d50:.2f} | {d99:.2f} | {l50:.2f} | {l99:.2f} "
                f"| {d50 / l50:.1f}x | {d99 / l99:.1f}x | {len(samples['delta'])} |"
            )
    print()
    spread = [statistics.median(first["delta"]) for _, _, _, first, _ in rows]
    print(f"delta first-page p50 from smallest to largest size: {spread[-1] / spread[0]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000", help="comma-separated")
    parser.add_argument("--iterations", type=int, default=200, help="timed lists per page")
    args = parser.parse_args()
    run([int(size) for size in args.sizes.split(",")], args.iterations)


if __name__ == "__main__":
    main()
