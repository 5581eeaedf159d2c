"""Idempotency-Key claims on the object store, shared by every replica of a delta deployment.

A deployment of many replicas on an `s3://` base has no disk the replicas share, so a key's
claim is one small JSON object under the base, `_kmflow/idempotency/<sha256 of the key>.json`
(the key is hashed: client-chosen text never names an object, and any of the 255 visible
ASCII characters a key may hold is safe). Every write of it is conditional:

- a claim creates it with `If-None-Match: *` (obstore `mode="create"`);
- a binding that has expired (older than `window_seconds`) or was released is replaced only
  with `If-Match: <the ETag read>` (obstore `mode={"e_tag": ...}`);
- a release does not delete it but overwrites it, `If-Match` the ETag of the binding it read,
  with a "released" marker (see `release` for why not a delete).

What makes this atomic for the whole deployment is S3's own guarantee, in the S3 User Guide's
"How to prevent object overwrites with conditional writes"
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html): with
`If-None-Match` a PUT fails with "412 Precondition Failed" when an object already exists
under the key, with `If-Match` it fails with 412 unless the ETag still matches, and of
concurrent conditional writes to one key one succeeds while the others fail with 412 or
"409 Conflict" (ConditionalRequestConflict). obstore raises `AlreadyExistsError` or
`PreconditionError` for these; each is a lost race here. So of two claims, two takeovers, or
a takeover and a release racing on one key, exactly one write lands; every loser reads the
object again and is told the winner's binding.

A binding names its upload's owner (the claiming process's staging owner); whether the upload
is abandoned is decided as the Databricks backend decides it: a process of this machine (its
lock file is under our staging root) is asked through its lock, any other only ages out after
`KEY_CLAIM_LEASE_SECONDS`. Ages compare one replica's clock (`claimed_at`, written by the
claimer) with another's: a skew between them shortens or lengthens the lease and the window
by as much, so replicas keep their clocks synchronised (NTP), as any S3 client must anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import obstore
from obstore.exceptions import AlreadyExistsError, PreconditionError
from obstore.exceptions import BaseError as ObjectStoreError
from obstore.store import ObjectStore

from app.storage.errors import StorageUnavailable
from app.storage.idempotency import DEFAULT_WINDOW_SECONDS, KeyBinding, shared_claim_is_abandoned

logger = logging.getLogger(__name__)

CLAIMS_PREFIX = "_kmflow/idempotency"
# Losing a conditional write means another process changed the object between our read and
# our write; each loss is followed by a fresh read, so this bound is never reached in practice.
MAX_ATTEMPTS = 16
LOST_RACE = (AlreadyExistsError, PreconditionError, FileNotFoundError)  # 412, 409, or deleted


def claim_path(key: str) -> str:
    """The object that holds `key`'s claim, relative to the delta base."""
    return f"{CLAIMS_PREFIX}/{hashlib.sha256(key.encode()).hexdigest()}.json"


class ObjectStoreKeyClaims:
    """`KeyClaims` in one object per key on the delta base's object store; see the module
    docstring. Thread-safe (obstore stores are)."""

    poll_seconds = 0.5  # each poll of a key whose upload is in progress is a request to S3

    def __init__(
        self,
        store: ObjectStore,
        staging_root: Path,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
    ) -> None:
        self.window_seconds = window_seconds
        self._store = store
        self._staging_root = staging_root

    def claim(self, key: str, wanted: KeyBinding) -> KeyBinding:
        """Bind `key` to `wanted` unless a live binding exists; returns the binding in force."""
        path = claim_path(key)
        mine = replace(wanted, claimed_at=time.time())
        try:
            return self._claim(path, mine)
        except (ObjectStoreError, FileNotFoundError) as error:  # FileNotFound: no bucket
            # A write that failed (a timeout, a 5xx) may still have landed; our binding would
            # then hold the key with no upload behind it: a process of this machine that is
            # alive is never abandoned, so its retries would wait in vain. Best effort.
            with contextlib.suppress(ObjectStoreError, StorageUnavailable):
                self._release(path, mine.evidence_id)
            logger.warning("idempotency claim request failed: %s", error)
            raise StorageUnavailable(f"object store: {type(error).__name__}") from error

    def _claim(self, path: str, mine: KeyBinding) -> KeyBinding:
        body = _encode(mine)
        for _ in range(MAX_ATTEMPTS):
            try:
                obstore.put(self._store, path, body, mode="create")
                return mine
            except AlreadyExistsError:
                pass
            read = self._read(path)
            if read is None:
                continue  # gone since our create failed: create it again
            binding, etag = read
            if binding is not None and binding.claimed_at >= mine.claimed_at - self.window_seconds:
                return binding  # ours too, if a create retried by obstore had landed
            # Released or expired: replace it, unless another process just did.
            try:
                obstore.put(self._store, path, body, mode={"e_tag": etag})
                return mine
            except LOST_RACE:
                continue
        raise StorageUnavailable("the idempotency key's claim keeps changing; retry shortly")

    def release(self, key: str, evidence_id: str) -> None:
        """Mark the binding released if it still names `evidence_id`.

        Not a delete: obstore 0.12 has no conditional delete, and an unconditional one after
        our read could remove a binding another process wrote in between. That is no
        harmless race: two retries that both find a dead replica's claim abandoned both
        release it and claim again; had the second one's delete removed the first one's new
        claim, both would store a record. A conditional overwrite lands only on the binding
        we read, so at most one of them replaces it. Released markers (like expired bindings)
        stay until a claim of the same key replaces them; an S3 lifecycle rule on the prefix
        can expire them (docs/backends.md, "Delta Lake backend").
        """
        with _store_errors():
            self._release(claim_path(key), evidence_id)

    def _release(self, path: str, evidence_id: str) -> None:
        released = json.dumps({"released_at": time.time()}).encode()
        for _ in range(MAX_ATTEMPTS):
            read = self._read(path)
            if read is None:
                return
            binding, etag = read
            if binding is None or binding.evidence_id != evidence_id:
                return  # released already, or another upload's binding now
            try:
                obstore.put(self._store, path, released, mode={"e_tag": etag})
                return
            except LOST_RACE:
                continue  # changed since our read: look again
        raise StorageUnavailable("the idempotency key's claim keeps changing; retry shortly")

    def is_abandoned(self, binding: KeyBinding) -> bool:
        return shared_claim_is_abandoned(binding, self._staging_root)

    def close(self) -> None:
        """Nothing to close: every request stands alone."""

    def _read(self, path: str) -> tuple[KeyBinding | None, str] | None:
        """(binding or None if released, ETag), or None if there is no object."""
        try:
            result = obstore.get(self._store, path)
        except FileNotFoundError:
            return None
        etag = result.meta["e_tag"]
        if etag is None:
            raise StorageUnavailable("the object store returned no ETag: no conditional writes")
        return _decode(bytes(result.bytes())), etag


def _encode(binding: KeyBinding) -> bytes:
    return json.dumps(
        {
            "engagement_id": binding.engagement_id,
            "content_hash": binding.content_hash,
            "evidence_id": binding.evidence_id,
            "owner": binding.owner,
            "claimed_at": binding.claimed_at,
        }
    ).encode()


def _decode(body: bytes) -> KeyBinding | None:
    """The binding an object holds; None for a released marker (or anything unreadable,
    which is then replaced like one)."""
    try:
        fields = json.loads(body)
        return KeyBinding(
            str(fields["engagement_id"]),
            str(fields["content_hash"]),
            str(fields["evidence_id"]),
            str(fields["owner"]),
            float(fields["claimed_at"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


@contextmanager
def _store_errors() -> Iterator[None]:
    """Object-store failures (network, permissions) become `StorageUnavailable` (a 503)."""
    try:
        yield
    except ObjectStoreError as error:
        logger.warning("idempotency claim request failed: %s", error)
        raise StorageUnavailable(f"object store: {type(error).__name__}") from error
