"""Copy evidence from one place to another: the one migration behind `kmflow migrate` and the
runbook's (`docs/databricks-upgrade-runbook.md`) `scripts/migrate_to_databricks.py` and
`scripts/migrate_from_databricks.py`.

A record keeps its identity across backends: the target stores it with the same `id`,
`stored_at`, file name and client metadata (`StorageBackend.restore`), and the bytes must hash
to the recorded `content_hash`. That makes a migration

- idempotent: a record whose id the target already holds with the same hash, and whose file
  is there with the recorded size (`--verify`: and hashes to it), is skipped, so a second run
  copies nothing and a row is never duplicated; a record the target lists but whose file is
  gone is put back; and the end of a run checks that every record is in the target, rather
  than counting what it did;
- resumable: a run killed halfway leaves only what the target's own startup cleanup removes
  (staged files, unfinished uploads), and the next run copies the rest;
- honest about conflicts: the same id with different bytes is reported, never overwritten.

The evidence lifecycle moves with the records: a withdrawn record's tombstone is copied as
a tombstone (it has no bytes; a record the target holds live is withdrawn there), and each
engagement's audit trail and legal hold are copied as they are (events by id, so a rerun adds
none twice).

A bare directory laid out as `<engagement_id>/<file>` (no index) can be a source too: a file
named `<32 hex>_<name>` (kmflow's own layout) keeps that id, any other file gets an id derived
from its path, so reruns still recognise it. Plan, copy and final check are one procedure
read from top to bottom, hence the length.
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
from app.storage.base import StorageBackend
from app.storage.digest import sha256_of
from app.storage.errors import EvidenceNotFound, InvalidInput, StorageError
from app.storage.names import clean_file_name, evidence_id_for_file, validate_engagement_id
from app.storage.pagination import MAX_PAGE_SIZE
from app.storage.records import EvidenceRecord, Tombstone, utc_timestamp
from app.storage.walk import all_events, all_records


@dataclass(frozen=True)
class MigrationItem:
    record: EvidenceRecord  # as the target will store it
    open: Callable[[], BinaryIO]
    origin: str  # where it comes from, for messages


@dataclass
class MigrationPlan:
    to_copy: list[MigrationItem] = field(default_factory=list)
    # The target lists these records (same id and hash) but their files are gone.
    to_put_back: list[tuple[MigrationItem, EvidenceRecord]] = field(default_factory=list)
    # The target holds these, as checked: the target's record of each.
    skipped: list[EvidenceRecord] = field(default_factory=list)
    refused: list[tuple[MigrationItem, str]] = field(default_factory=list)
    # Withdrawn in the source: the tombstones the target lacks, and those it has already.
    to_withdraw: list[Tombstone] = field(default_factory=list)
    tombstones_there: int = 0

    @property
    def records(self) -> int:
        """Records with bytes (tombstones are counted apart)."""
        return len(self.to_copy) + len(self.to_put_back) + len(self.skipped) + len(self.refused)

    @property
    def tombstones(self) -> int:
        return len(self.to_withdraw) + self.tombstones_there

    @property
    def bytes_to_copy(self) -> int:
        return sum(item.record.size_bytes for item in self.to_copy) + sum(
            record.size_bytes for _, record in self.to_put_back
        )


@dataclass
class MigrationReport:
    copied: int = 0
    put_back: int = 0
    skipped: int = 0
    bytes_copied: int = 0
    bytes_put_back: int = 0
    records: int = 0  # every record of the source
    failures: list[tuple[str, str]] = field(default_factory=list)  # (origin, reason)
    # The target's records of everything copied, put back or skipped, checked at the end.
    in_target: list[EvidenceRecord] = field(default_factory=list)
    present: int | None = None  # of `in_target`, how many the check found; None: not checked
    tombstones: int = 0  # of the source
    tombstones_present: int | None = None  # how many the check found withdrawn in the target
    events_copied: int = 0
    holds_copied: int = 0

    @property
    def ok(self) -> bool:
        return (
            not self.failures
            and self.present == self.records
            and self.tombstones_present == self.tombstones
        )

    def summary(self) -> str:
        lines = [
            f"copied: {self.copied} ({self.bytes_copied} bytes), put back (file was missing): "
            f"{self.put_back} ({self.bytes_put_back} bytes), skipped (already there): "
            f"{self.skipped}, failed: {len(self.failures)}"
        ]
        lines += [f"  FAILED {origin}: {reason}" for origin, reason in self.failures]
        if self.present is None:
            lines.append("in the target: not checked (the check itself failed, see above)")
        else:
            lines.append(
                f"in the target: {self.present} of the source's {self.records} records, with "
                "their recorded size (checked after copying)"
            )
        if self.tombstones or self.events_copied or self.holds_copied:
            lines.append(
                f"withdrawn: {self.tombstones_present} of the source's {self.tombstones} "
                f"tombstones in the target; audit events copied: {self.events_copied}; legal "
                f"holds copied: {self.holds_copied}"
            )
        return "\n".join(lines)


def backend_items(backend: StorageBackend) -> Iterator[MigrationItem]:
    """Every record of every engagement, tombstones included, with its bytes opened on
    demand (a tombstone has none: it is never opened)."""
    for engagement_id in backend.engagements():
        for record in all_records(backend, engagement_id, include_withdrawn=True):
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


def plan_migration(
    items: Iterable[MigrationItem],
    target: StorageBackend | None,
    *,
    verify: bool = False,
    workers: int = 1,
) -> MigrationPlan:
    """Sort items into copy / put back / skip / refuse, reading the target's records once per
    engagement (`None`: a target that does not exist yet, so holds nothing). A record the
    target lists is skipped only if its file is there with the recorded size, and with
    `verify` only if it hashes to the record too (read with `workers` threads)."""
    plan = MigrationPlan()
    known: dict[str, dict[str, EvidenceRecord]] = {}
    listed: list[tuple[MigrationItem, EvidenceRecord]] = []  # same id and hash in the target
    planned: set[str] = set()
    for item in items:
        record = item.record
        try:
            validate_engagement_id(record.engagement_id)
            clean_file_name(record.file_name)
        except InvalidInput as error:
            plan.refused.append((item, str(error)))
            continue
        if record.engagement_id not in known:
            held = (
                all_records(target, record.engagement_id, include_withdrawn=True)
                if target is not None
                else ()
            )
            known[record.engagement_id] = {existing.id: existing for existing in held}
        existing = known[record.engagement_id].get(record.id)
        if isinstance(record, Tombstone):
            if isinstance(existing, Tombstone):
                plan.tombstones_there += 1
            else:
                plan.to_withdraw.append(record)
            continue
        if isinstance(existing, Tombstone):
            plan.refused.append(
                (item, f"{record.id} is withdrawn in the target; its bytes are not copied back")
            )
            continue
        if existing is None:
            plan.to_copy.append(item)
            known[record.engagement_id][record.id] = record
            planned.add(record.id)
        elif existing.content_hash != record.content_hash:
            plan.refused.append(
                (
                    item,
                    f"id {record.id} is already in the target (or earlier in this source) "
                    "with different content; not overwritten",
                )
            )
        elif record.id not in planned:  # else the same record twice in the source: copied once
            listed.append((item, existing))
    if target is not None and listed:
        _sort_listed(plan, listed, target, verify=verify, workers=workers)
    return plan


def _sort_listed(
    plan: MigrationPlan,
    listed: list[tuple[MigrationItem, EvidenceRecord]],
    target: StorageBackend,
    *,
    verify: bool,
    workers: int,
) -> None:
    sizes = target.stored_sizes([existing for _, existing in listed])
    present: list[tuple[MigrationItem, EvidenceRecord]] = []
    for item, existing in listed:
        size = sizes[existing.id]
        if size is None:
            plan.to_put_back.append((item, existing))
        elif size != existing.size_bytes:
            plan.refused.append(
                (
                    item,
                    f"the target's file of {existing.id} has {size} bytes, its record "
                    f"{existing.size_bytes}: damaged in the target; not overwritten",
                )
            )
        else:
            present.append((item, existing))
    if not verify:
        plan.skipped += [existing for _, existing in present]
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashes = pool.map(lambda pair: _target_hash(target, pair[1]), present)
        for (item, existing), content_hash in zip(present, hashes, strict=True):
            if content_hash == existing.content_hash:
                plan.skipped.append(existing)
            else:
                plan.refused.append(
                    (
                        item,
                        f"the target's file of {existing.id} does not hash to its record "
                        f"(sha256 {content_hash}): damaged in the target; not overwritten",
                    )
                )


def _target_hash(target: StorageBackend, record: EvidenceRecord) -> str:
    with target.open(record) as stream:
        content_hash, _ = sha256_of(stream)
    return content_hash


def run_migration(
    plan: MigrationPlan,
    target: StorageBackend,
    *,
    workers: int,
    progress_stream: TextIO | None,
    source: StorageBackend | None = None,
) -> MigrationReport:
    """Copy what the plan says; with a `source` backend, then its engagements' audit trails
    and legal holds too."""
    report = MigrationReport(
        skipped=len(plan.skipped),
        in_target=list(plan.skipped),
        records=plan.records,
        tombstones=plan.tombstones,
    )
    report.failures += [(item.origin, reason) for item, reason in plan.refused]
    files = len(plan.to_copy) + len(plan.to_put_back)
    progress = Progress(files, plan.bytes_to_copy, "migrating", progress_stream)
    try:
        with target.bulk(), ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(_copy, item, target, progress): (item, False) for item in plan.to_copy
            }
            futures |= {
                pool.submit(_put_back, item, existing, target, progress): (item, True)
                for item, existing in plan.to_put_back
            }
            for future in as_completed(futures):
                item, putting_back = futures[future]
                try:
                    stored = future.result()
                except (StorageError, OSError) as error:
                    report.failures.append((item.origin, f"{type(error).__name__}: {error}"))
                    continue
                report.in_target.append(stored)
                if putting_back:
                    report.put_back += 1
                    report.bytes_put_back += stored.size_bytes
                else:
                    report.copied += 1
                    report.bytes_copied += stored.size_bytes
    except StorageError as error:  # the target's final step (Databricks: metadata rows)
        report.failures.append(("metadata", str(error)))
    progress.finish()
    for tombstone in plan.to_withdraw:  # after the records: a bulk's rows are in by now
        try:
            target.restore_tombstone(tombstone)
        except StorageError as error:
            report.failures.append((tombstone.volume_path, f"tombstone: {error}"))
    if source is not None:
        _copy_lifecycle(source, target, report)
    try:
        sizes = target.stored_sizes(report.in_target)
        report.tombstones_present = _tombstones_in(target, plan)
    except StorageError as error:
        report.failures.append(("check", f"cannot check the target: {error}"))
    else:
        report.present = sum(sizes[record.id] == record.size_bytes for record in report.in_target)
    return report


def _tombstones_in(target: StorageBackend, plan: MigrationPlan) -> int:
    """How many of the source's tombstones the target holds withdrawn, as checked now."""
    found = plan.tombstones_there
    for tombstone in plan.to_withdraw:
        try:
            held = target.get(tombstone.engagement_id, tombstone.id, include_withdrawn=True)
        except EvidenceNotFound:
            continue
        found += isinstance(held, Tombstone)
    return found


def _copy_lifecycle(
    source: StorageBackend, target: StorageBackend, report: MigrationReport
) -> None:
    """Each engagement's audit events (those the target lacks, by id) and legal hold."""
    try:
        engagements = sorted(set(source.engagements()) | set(source.audit.store.engagements()))
        for engagement_id in engagements:
            there = {event.id for event in all_events(target, engagement_id)}
            missing = [e for e in all_events(source, engagement_id) if e.id not in there]
            for start in range(0, len(missing), MAX_PAGE_SIZE):
                target.audit.store.append(missing[start : start + MAX_PAGE_SIZE])
            report.events_copied += len(missing)
            hold = source.hold(engagement_id)
            if hold is not None and target.hold(engagement_id) is None:
                target.restore_hold(hold)
                report.holds_copied += 1
    except StorageError as error:
        report.failures.append(("audit trail and holds", str(error)))


def describe_plan(plan: MigrationPlan) -> str:
    lines = [
        f"plan: copy {len(plan.to_copy)} file(s), put back {len(plan.to_put_back)} missing, "
        f"{plan.bytes_to_copy} bytes; skip {len(plan.skipped)} already there; "
        f"refuse {len(plan.refused)}"
    ]
    lines += [
        f"  copy {item.origin} -> {item.record.engagement_id}/{item.record.file_name}"
        for item in plan.to_copy
    ]
    lines += [
        f"  put back {item.origin} -> {existing.volume_path} (listed, file missing)"
        for item, existing in plan.to_put_back
    ]
    lines += [f"  REFUSE {item.origin}: {reason}" for item, reason in plan.refused]
    if plan.tombstones:
        lines.append(
            f"withdrawn: {len(plan.to_withdraw)} tombstone(s) to copy, "
            f"{plan.tombstones_there} already there"
        )
    return "\n".join(lines)


def _copy(item: MigrationItem, target: StorageBackend, progress: Progress) -> EvidenceRecord:
    with item.open() as stream:
        stored = target.restore(item.record, _CountingReader(stream, progress))
    progress.advance(files=1)
    return stored


def _put_back(
    item: MigrationItem, existing: EvidenceRecord, target: StorageBackend, progress: Progress
) -> EvidenceRecord:
    with item.open() as stream:
        target.put_back(existing, _CountingReader(stream, progress))
    progress.advance(files=1)
    return existing


class _CountingReader:
    """Reports bytes to the progress line as the target reads them."""

    def __init__(self, stream: BinaryIO, progress: Progress) -> None:
        self._stream = stream
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._progress.advance(nbytes=len(data))
        return data


def _open_binary(path: Path) -> BinaryIO:
    return path.open("rb")
