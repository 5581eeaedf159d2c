"""The Unity Catalog Volume that holds the evidence files, through the Files API.

Files: `/Volumes/{catalog}/{schema}/{volume}/evidence_store/{engagement_id}/{id}_{slug}`,
uploaded from the staged local file (seekable, so the SDK streams it; parts and parallelism
are capped so memory stays bounded), never overwriting. What goes wrong here is said as the
runbook's troubleshooting cases (a missing volume, a missing grant, refused credentials).
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound, PermissionDenied, ResourceConflict, Unauthenticated
from databricks.sdk.service.files import DirectoryEntry

from app.storage.databricks.client import TRANSPORT_ERRORS
from app.storage.digest import sha256_of
from app.storage.errors import (
    EvidenceExists,
    StorageError,
    StorageMisconfigured,
    StorageUnavailable,
)
from app.storage.records import EvidenceRecord, utc_timestamp
from app.storage.staging import StagedFile

logger = logging.getLogger(__name__)

VOLUME_DIRECTORY = "evidence_store"
# Multipart uploads (real workspaces, files >= 50 MiB) hold about part size x parallelism in
# memory; the SDK's defaults would allow 10 parts of up to 500 MiB in flight.
UPLOAD_PART_BYTES = 16 * 1024 * 1024
UPLOAD_PARALLELISM = 2
# Files larger than a part may go up in parts; at most this many at once, so however many
# request threads wait on uploads, parts in memory stay under 4 x 2 x 16 MiB.
LARGE_UPLOADS_AT_ONCE = 4
# ... and a client that could not be built (see LazyWorkspaceClient): Databricks unreachable too.
UNREACHABLE = (*TRANSPORT_ERRORS, StorageError)


@dataclass(frozen=True)
class VolumeFile:
    path: str  # the full /Volumes/... path
    relative_path: str  # below the evidence_store directory: <engagement_id>/<name>
    size: int
    modified_at: str  # ISO-8601 UTC


class Volume:
    def __init__(
        self,
        client: WorkspaceClient,
        probe_client: WorkspaceClient,
        catalog: str,
        schema: str,
        volume: str,
        *,
        client_id: str | None,
        credentials: str,
    ) -> None:
        self.client = client
        self.probe_client = probe_client  # short timeouts: health answers fast in an outage
        self.name = f"{catalog}.{schema}.{volume}"
        self.root = f"/Volumes/{catalog}/{schema}/{volume}/{VOLUME_DIRECTORY}"
        # Grants name a service principal by its application id: the OAuth client id.
        self._client_id = client_id
        self._credentials = credentials
        self._large_uploads = threading.BoundedSemaphore(LARGE_UPLOADS_AT_ONCE)

    def path_of(self, engagement_id: str, stored_name: str) -> str:
        return f"{self.root}/{engagement_id}/{stored_name}"

    def upload(self, staged: StagedFile, volume_path: str, *, has_row: Callable[[], bool]) -> None:
        """Never over an existing file. `has_row`: whether the table holds a row for the id
        (True when that cannot be told), for a retried PUT that finds its own earlier file."""
        large = self._large_uploads if staged.size > UPLOAD_PART_BYTES else nullcontext()
        try:
            with large:
                self.client.files.upload_from(
                    volume_path,
                    str(staged.path),
                    overwrite=False,
                    part_size=UPLOAD_PART_BYTES,
                    use_parallel=True,
                    parallelism=UPLOAD_PARALLELISM,
                )
        except ResourceConflict as error:  # ALREADY_EXISTS: overwrite=False held
            # The SDK retries a PUT whose answer was lost (a timeout, a 503 from a proxy); the
            # retry then finds the file the first attempt wrote. Same bytes and no row for the
            # id yet: it is ours (a stored record's file, same bytes or not, is never taken).
            if self._holds(volume_path, staged) and not has_row():
                logger.info("%s was already written by an earlier attempt", volume_path)
                return
            raise EvidenceExists(
                f"{volume_path} is already in the Volume; nothing was replaced"
            ) from error
        except TRANSPORT_ERRORS as error:
            raise self.error(error, "WRITE VOLUME") from error
        except TypeError as error:
            # databricks-sdk 0.162 raises TypeError while logging a non-JSON error answer to a
            # streamed upload (a proxy's HTML page, say): it is still a failed request.
            raise StorageUnavailable(f"Databricks Files API upload failed: {error}") from error

    def _holds(self, volume_path: str, staged: StagedFile) -> bool:
        """Whether the Volume file has exactly the staged bytes: its size, then the SHA-256 of
        a streamed download. False when that cannot be told now."""
        try:
            if self.client.files.get_metadata(volume_path).content_length != staged.size:
                return False
            contents = self.client.files.download(volume_path).contents
            if contents is None:
                return False
            with contents:
                found = sha256_of(contents)
        except TRANSPORT_ERRORS as error:
            logger.warning("cannot compare %s with the upload: %s", volume_path, error)
            return False
        return found == (staged.content_hash, staged.size)

    def open(self, record: EvidenceRecord) -> BinaryIO:
        if not posixpath.normpath(record.volume_path).startswith(self.root + "/"):
            raise StorageMisconfigured(f"record {record.id} points outside {self.root}")
        try:
            contents = self.client.files.download(record.volume_path).contents
        except NotFound as error:
            raise self._missing_file(record, error) from error
        except TRANSPORT_ERRORS as error:
            raise self.error(error, "READ VOLUME") from error
        if contents is None:
            raise StorageUnavailable(f"Databricks returned no content for {record.id}")
        return contents

    def remove(self, volume_path: str) -> None:
        """Delete the file if it is there; unreachable Databricks raises (see UNREACHABLE)."""
        with contextlib.suppress(NotFound):
            self.client.files.delete(volume_path)

    def size(self, volume_path: str) -> int | None:
        try:
            return self.client.files.get_metadata(volume_path).content_length
        except NotFound:
            return None
        except TRANSPORT_ERRORS as error:
            raise self.error(error, "READ VOLUME") from error

    def sizes(self, records: Sequence[EvidenceRecord]) -> dict[str, int | None]:
        """One listing per engagement directory rather than one request per file."""
        found: dict[str, int] = {}
        for directory in sorted({posixpath.dirname(record.volume_path) for record in records}):
            for entry in self._entries(directory):
                if not entry.is_directory and entry.path:
                    found[entry.path] = entry.file_size or 0
        return {record.id: found.get(record.volume_path) for record in records}

    def files(self) -> Iterator[VolumeFile]:
        """Every file under the evidence directory, at any depth."""
        directories = [self.root]
        while directories:
            for entry in self._entries(directories.pop()):
                path = (entry.path or "").rstrip("/")
                if entry.is_directory:
                    directories.append(path)
                    continue
                modified = datetime.fromtimestamp((entry.last_modified or 0) / 1000, UTC)
                yield VolumeFile(
                    path=path,
                    relative_path=path.removeprefix(self.root + "/"),
                    size=entry.file_size or 0,
                    modified_at=utc_timestamp(modified),
                )

    def remove_tree(self, directory: str) -> list[str]:
        """Delete every file under `directory` (a Volume path), then its directories; the
        files' paths. Unreachable Databricks raises (see UNREACHABLE)."""
        removed: list[str] = []
        directories: list[str] = []
        pending = [directory.rstrip("/")]
        while pending:
            current = pending.pop()
            directories.append(current)
            for entry in self._entries(current):
                path = (entry.path or "").rstrip("/")
                if entry.is_directory:
                    pending.append(path)
                else:
                    self.remove(path)
                    removed.append(path)
        for emptied in reversed(directories):  # deepest first
            with contextlib.suppress(NotFound):
                self.client.files.delete_directory(emptied)
        return removed

    def _entries(self, directory: str) -> list[DirectoryEntry]:
        """A Volume directory's entries; none if it does not exist."""
        try:
            return list(self.client.files.list_directory_contents(directory))
        except NotFound:
            return []
        except TRANSPORT_ERRORS as error:
            raise self.error(error, "READ VOLUME") from error

    def probe(self) -> dict[str, object]:
        try:
            self.probe_client.volumes.read(self.name)
        except UNREACHABLE as error:
            failure = error if isinstance(error, StorageError) else None  # no client built
            message = str(failure or self.error(error, "READ VOLUME"))
            return {"volume_reachable": False, "volume_error": message.splitlines()[0][:200]}
        return {"volume_reachable": True}

    def _missing_file(self, record: EvidenceRecord, error: NotFound) -> StorageError:
        """A record whose file is gone: said as such (as the local backend says it), with the
        advice to create the volume only when the volume itself is what is missing."""
        try:
            self.client.volumes.read(self.name)
        except NotFound:
            return self.error(error, "READ VOLUME")
        except UNREACHABLE:
            pass  # the file is missing; whether its volume is too cannot be told now
        return StorageUnavailable(
            f"the file of record {record.id} is missing from volume {self.name} "
            f"({record.volume_path}): it was removed outside kmflow"
        )

    def error(self, error: Exception, privilege: str) -> StorageError:
        """The runbook's troubleshooting cases as messages an operator can act on. A NotFound
        here is the volume's (a record's missing file is told apart in `open`)."""
        if isinstance(error, NotFound):
            return StorageMisconfigured(
                f"Unity Catalog volume {self.name} does not exist "
                f"(RESOURCE_DOES_NOT_EXIST). Create it: "
                f"CREATE VOLUME IF NOT EXISTS {self.name};"
            )
        if isinstance(error, PermissionDenied):
            # Grants name a service principal by its application id, which is the OAuth
            # client id: that one is known when kmflow uses OAuth M2M.
            if self._client_id:
                grantee, note = f"`{self._client_id}`", ""
            else:
                grantee = "`<service principal application id>`"
                note = " (a service principal is named by its application id in grants)"
            return StorageMisconfigured(
                f"PERMISSION_DENIED: the service principal lacks {privilege} on volume "
                f"{self.name}. Grant it: GRANT {privilege} ON VOLUME {self.name} "
                f"TO {grantee};{note}"
            )
        if isinstance(error, Unauthenticated):
            reason = (str(error).splitlines() or ["HTTP 401"])[0][:300]
            if self._credentials in reason:  # said already (see _NamedCredentials)
                return StorageMisconfigured(reason)
            return StorageMisconfigured(
                f"Databricks refused kmflow's credentials (check {self._credentials}): {reason}"
            )
        return StorageUnavailable(f"Databricks Files API unavailable: {error}")
