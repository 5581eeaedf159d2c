"""`--backfill-metadata`: rows for files that are in the Volume but not in `evidence_metadata`.

The runbook's remedy for files uploaded while a warehouse was down. kmflow's outbox makes that
rare, but files can still arrive another way (copied in by hand, a table restored from an old
version). Each such file is read from the Volume to compute its hash and size; nothing is
uploaded. The client's original name and metadata are not in the Volume: the row gets the
readable part of the stored name and no metadata.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TextIO

from app.progress import Progress
from app.storage.capabilities import IndexesStrayFiles, StrayFile
from app.storage.digest import sha256_of
from app.storage.errors import InvalidInput, StorageError
from app.storage.names import evidence_id_for_file, validate_engagement_id
from app.storage.records import EvidenceRecord

DOWNLOAD_WORKERS = 4


@dataclass
class BackfillReport:
    scanned: int = 0
    indexed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        lines = [
            f"backfill: {self.scanned} file(s) in the Volume, {self.indexed} row(s) added, "
            f"failed: {len(self.failures)}"
        ]
        lines += [f"  FAILED {path}: {reason}" for path, reason in self.failures]
        return "\n".join(lines)


def backfill_metadata(
    backend: IndexesStrayFiles, *, dry_run: bool, progress_stream: TextIO | None
) -> BackfillReport:
    known = backend.known_ids()
    files = list(backend.volume_files())
    missing = [f for f in files if evidence_id_for_file(f.relative_path)[0] not in known]
    report = BackfillReport(scanned=len(files))
    if dry_run:
        for volume_file in missing:
            print(f"  would index {volume_file.path}")
        print(f"dry run: {len(missing)} row(s) missing, nothing changed")
        return report
    progress = Progress(len(missing), sum(f.size for f in missing), "backfilling", progress_stream)
    try:
        with backend.bulk(), ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS) as pool:
            futures = {pool.submit(_index, backend, f, progress): f for f in missing}
            for future in as_completed(futures):
                try:
                    future.result()
                except (StorageError, OSError) as error:
                    path = futures[future].path
                    report.failures.append((path, f"{type(error).__name__}: {error}"))
                else:
                    report.indexed += 1
    except StorageError as error:  # rows the warehouse did not take
        report.failures.append(("metadata", str(error)))
    progress.finish()
    return report


def _index(backend: IndexesStrayFiles, volume_file: StrayFile, progress: Progress) -> None:
    evidence_id, file_name = evidence_id_for_file(volume_file.relative_path)
    engagement_id, separator, _ = volume_file.relative_path.partition("/")
    if not separator:
        raise InvalidInput("not inside an engagement directory; not indexed")
    validate_engagement_id(engagement_id)
    record = EvidenceRecord(
        id=evidence_id,
        engagement_id=engagement_id,
        file_name=file_name,
        volume_path=volume_file.path,
        content_hash="",
        size_bytes=0,
        stored_at=volume_file.modified_at,
        metadata_json=None,
    )
    with backend.open(record) as stream:
        content_hash, size = sha256_of(stream)
    backend.index_existing(
        record.model_copy(update={"content_hash": content_hash, "size_bytes": size})
    )
    progress.advance(files=1, nbytes=size)
