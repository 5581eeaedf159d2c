"""Copy evidence from one place to another: the one migration behind `kmflow migrate` and the
runbook's `scripts/migrate_to_databricks.py` / `scripts/migrate_from_databricks.py`.

A record keeps its identity across backends: the target stores it with the same `id`,
`stored_at`, file name and client metadata (`StorageBackend.restore`), and the bytes must hash
to the recorded `content_hash`. That makes a migration

- idempotent: a record whose id the target already holds with the same hash is skipped, so a
  second run copies nothing and a row is never duplicated;
- resumable: a run killed halfway leaves only what the target's own startup cleanup removes
  (staged files, unfinished uploads), and the next run copies the rest;
- honest about conflicts: the same id with different bytes is reported, never overwritten.

A bare directory laid out as `<engagement_id>/<file>` (no index) can be a source too: a file
named `<32 hex>_<name>` (kmflow's own layout) keeps that id, any other file gets an id derived
from its path, so reruns still recognise it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import BinaryIO, TextIO

from app.progress import Progress
from app.storage.base import EvidenceRecord, StorageBackend, utc_timestamp
from app.storage.digest import sha256_of
from app.storage.errors import InvalidInput, StorageError
from app.storage.names import clean_file_name, evidence_id_for_file, validate_engagement_id
from app.storage.pagination import MAX_PAGE_SIZE


@dataclass(frozen=True)
class MigrationItem:
    record: EvidenceRecord  # as the target will store it
    open: Callable[[], BinaryIO]
    origin: str  # where it comes from, for messages


@dataclass
class MigrationPlan:
    to_copy: list[MigrationItem] = field(default_factory=list)
    skipped: list[MigrationItem] = field(default_factory=list)
    refused: list[tuple[MigrationItem, str]] = field(default_factory=list)

    @property
    def bytes_to_copy(self) -> int:
        return sum(item.record.size_bytes for item in self.to_copy)


@dataclass
class MigrationReport:
    copied: int = 0
    skipped: int = 0
    bytes_copied: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (origin, reason)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        lines = [
            f"copied: {self.copied} ({self.bytes_copied} bytes), skipped (already there): "
            f"{self.skipped}, failed: {len(self.failures)}"
        ]
        lines += [f"  FAILED {origin}: {reason}" for origin, reason in self.failures]
        return "\n".join(lines)


def backend_items(backend: StorageBackend) -> Iterator[MigrationItem]:
    """Every record of every engagement, with its bytes opened on demand."""
    for engagement_id in backend.engagements():
        for record in all_records(backend, engagement_id):
            yield MigrationItem(record, partial(backend.open, record), record.volume_path)


def directory_items(root: Path) -> Iterator[MigrationItem]:
    """Files of a bare `<engagement_id>/<file>` tree; each is hashed here, once."""
    for engagement_dir in sorted(path for path in root.iterdir() if path.is_dir()):
        for path in sorted(p for p in engagement_dir.rglob("*") if p.is_file()):
            evidence_id, file_name = evidence_id_for_file(path.relative_to(root).as_posix())
            with path.open("rb") as stream:
                content_hash, size = sha256_of(stream)
            modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            record = EvidenceRecord(
                id=evidence_id,
                engagement_id=engagement_dir.name,
                file_name=file_name,
                volume_path=path.relative_to(root).as_posix(),
                content_hash=content_hash,
                size_bytes=size,
                stored_at=utc_timestamp(modified),
                metadata_json=None,
            )
            yield MigrationItem(record, partial(_open_binary, path), str(path))


def plan_migration(items: Iterable[MigrationItem], target: StorageBackend | None) -> MigrationPlan:
    """Sort items into copy / skip / refuse, reading the target's records once per engagement
    (`None`: a target that does not exist yet, so holds nothing)."""
    plan = MigrationPlan()
    known: dict[str, dict[str, EvidenceRecord]] = {}
    for item in items:
        record = item.record
        try:
            validate_engagement_id(record.engagement_id)
            clean_file_name(record.file_name)
        except InvalidInput as error:
            plan.refused.append((item, str(error)))
            continue
        if record.engagement_id not in known:
            held = all_records(target, record.engagement_id) if target is not None else ()
            known[record.engagement_id] = {existing.id: existing for existing in held}
        existing = known[record.engagement_id].get(record.id)
        if existing is None:
            plan.to_copy.append(item)
            known[record.engagement_id][record.id] = record  # a repeat in the source: refuse it
        elif existing.content_hash == record.content_hash:
            plan.skipped.append(item)
        else:
            plan.refused.append(
                (
                    item,
                    f"id {record.id} is already in the target (or earlier in this source) "
                    "with different content; not overwritten",
                )
            )
    return plan


def run_migration(
    plan: MigrationPlan, target: StorageBackend, *, workers: int, progress_stream: TextIO | None
) -> MigrationReport:
    report = MigrationReport(skipped=len(plan.skipped))
    report.failures += [(item.origin, reason) for item, reason in plan.refused]
    progress = Progress(len(plan.to_copy), plan.bytes_to_copy, "migrating", progress_stream)
    try:
        with target.bulk(), ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_copy, item, target, progress): item for item in plan.to_copy}
            for future in as_completed(futures):
                item = futures[future]
                try:
                    future.result()
                except (StorageError, OSError) as error:
                    report.failures.append((item.origin, f"{type(error).__name__}: {error}"))
                else:
                    report.copied += 1
                    report.bytes_copied += item.record.size_bytes
    except StorageError as error:  # the target's final step (Databricks: metadata rows)
        report.failures.append(("metadata", str(error)))
    progress.finish()
    return report


def describe_plan(plan: MigrationPlan) -> str:
    lines = [
        f"plan: copy {len(plan.to_copy)} file(s), {plan.bytes_to_copy} bytes; "
        f"skip {len(plan.skipped)} already there; refuse {len(plan.refused)}"
    ]
    lines += [
        f"  copy {item.origin} -> {item.record.engagement_id}/{item.record.file_name}"
        for item in plan.to_copy
    ]
    lines += [f"  REFUSE {item.origin}: {reason}" for item, reason in plan.refused]
    return "\n".join(lines)


def _copy(item: MigrationItem, target: StorageBackend, progress: Progress) -> None:
    with item.open() as stream:
        target.restore(item.record, _CountingReader(stream, progress))
    progress.advance(files=1)


class _CountingReader:
    """Reports bytes to the progress line as the target reads them."""

    def __init__(self, stream: BinaryIO, progress: Progress) -> None:
        self._stream = stream
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._progress.advance(nbytes=len(data))
        return data


def all_records(backend: StorageBackend, engagement_id: str) -> Iterator[EvidenceRecord]:
    cursor = None
    while True:
        page = backend.list(engagement_id, limit=MAX_PAGE_SIZE, cursor=cursor)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _open_binary(path: Path) -> BinaryIO:
    return path.open("rb")
