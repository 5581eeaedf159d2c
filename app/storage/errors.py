"""Domain errors raised by backends; `app.api.errors` maps each to one HTTP status."""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error a backend raises on purpose."""


class InvalidInput(StorageError):
    """A name, id or value the client sent cannot be accepted as given."""


class EvidenceNotFound(StorageError):
    """No record with that id in that engagement."""


class EvidenceWithdrawn(StorageError):
    """The record was withdrawn: its bytes are gone; the tombstone says by whom and why."""

    def __init__(self, message: str, tombstone: object) -> None:
        super().__init__(message)
        self.tombstone = tombstone  # a records.Tombstone (records imports this module)


class LegalHoldActive(StorageError):
    """The engagement is under legal hold: nothing of it may be withdrawn or purged."""


class InvalidCursor(InvalidInput):
    """A pagination cursor that this service did not issue."""


class EvidenceExists(StorageError):
    """A record with that id, or its file, is already stored: nothing is replaced or removed.

    New writes get fresh ids; this is a migration restoring a record the target already has
    (two runs at once, a source that repeats an id).
    """


class StorageUnavailable(StorageError):
    """The backend cannot be reached now; retrying later may succeed."""


class CommitOutcomeUnknown(StorageUnavailable):
    """The store failed in a way that leaves unknown whether the record was committed: its
    file stays, and the write intent lets the next startup decide (`write_intents`)."""


class StorageMisconfigured(StorageError):
    """The backend's target is missing or refuses us; an operator must act."""


class BackendNotInstalled(ImportError):
    """The optional package a backend needs is not installed."""


class DigestMismatch(StorageError):
    """The bytes received do not hash to the digest the client sent: nothing was stored."""


class IdempotencyKeyReused(StorageError):
    """An Idempotency-Key already stands for another engagement or other content."""


class IdempotencyKeyInProgress(StorageError):
    """The upload that claimed this Idempotency-Key has not finished yet; retry shortly."""
