"""Powers only some backends have, each a small protocol: a command asks a backend for the
power it needs (`isinstance(backend, IndexesStrayFiles)`), never for a particular backend."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import BinaryIO, Protocol, runtime_checkable

from app.storage.records import EvidenceRecord


class StrayFile(Protocol):
    """A file in the backend's storage, found by listing it rather than through a record."""

    @property
    def path(self) -> str: ...  # where the backend reads it
    @property
    def relative_path(self) -> str: ...  # <engagement_id>/<name>
    @property
    def size(self) -> int: ...
    @property
    def modified_at(self) -> str: ...  # ISO-8601 UTC


@runtime_checkable
class IndexesStrayFiles(Protocol):
    """Lists its files, and indexes one that has no record (`--backfill-metadata`): storage
    that files can reach without kmflow, such as a Databricks Volume."""

    def volume_files(self) -> Iterator[StrayFile]: ...

    def known_ids(self) -> set[str]: ...

    def index_existing(self, record: EvidenceRecord) -> None: ...

    def open(self, record: EvidenceRecord, start: int = 0) -> BinaryIO: ...

    def bulk(self) -> AbstractContextManager[None]: ...
