"""Idempotency-Key claims on an object store (the delta backend on `s3://`), against moto.

The store is shared by every replica of a deployment, so these check what `KeyClaims`
promises across processes: of concurrent claims or takeovers of one key exactly one wins,
and a release never drops a binding that is no longer the releaser's.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import obstore
import pytest
from obstore.store import ObjectStore, from_url

from app.storage.delta.files import ObjectStoreFiles
from app.storage.delta.object_store_key_claims import (
    CLAIMS_PREFIX,
    ObjectStoreKeyClaims,
    claim_path,
)
from app.storage.errors import StorageUnavailable
from app.storage.idempotency import DEFAULT_WINDOW_SECONDS, KEY_CLAIM_LEASE_SECONDS, KeyBinding
from app.storage.staging import LOCK_SUFFIX, StagingArea
from tests.storage.s3_server import BUCKET, object_keys

THREADS = 16


@pytest.fixture
def store(base_uri: str) -> ObjectStore:
    return ObjectStoreFiles(base_uri).store


@pytest.fixture
def claims(store: ObjectStore, tmp_path: Path) -> ObjectStoreKeyClaims:
    return ObjectStoreKeyClaims(store, tmp_path / "staging")


def binding(owner: str = "4242-0123456789ab", **changes: str) -> KeyBinding:
    fields = {
        "engagement_id": "ENG-K",
        "content_hash": hashlib.sha256(b"board pack").hexdigest(),
        "evidence_id": uuid.uuid4().hex,
        "owner": owner,
    } | changes
    return KeyBinding(**fields)


def write_binding(store: ObjectStore, key: str, held: KeyBinding, claimed_at: float) -> None:
    """A binding as another replica left it, `claimed_at` chosen (no waiting in tests)."""
    body = {
        "engagement_id": held.engagement_id,
        "content_hash": held.content_hash,
        "evidence_id": held.evidence_id,
        "owner": held.owner,
        "claimed_at": claimed_at,
    }
    obstore.put(store, claim_path(key), json.dumps(body).encode())


def all_at_once(count: int, task: Callable[[int], KeyBinding]) -> list[KeyBinding]:
    """`task(n)` for n in range(count), each on its own thread, released together."""
    start = threading.Barrier(count)
    results: list[KeyBinding | None] = [None] * count
    errors: list[BaseException] = []

    def run(n: int) -> None:
        start.wait()
        try:
            results[n] = task(n)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return [result for result in results if result is not None]


def test_the_first_claim_wins_and_later_claims_are_told_its_binding(
    claims: ObjectStoreKeyClaims, s3_endpoint: str, base_uri: str
) -> None:
    key = "retry/" + "?%&=#'\"\\" + "k" * 240  # 255 visible ASCII characters
    first, second = binding(), binding(owner="99-ba9876543210")

    won = claims.claim(key, first)
    told = claims.claim(key, second)

    assert won == first and won.claimed_at > 0
    assert told == first and told != second
    assert told.claimed_at == won.claimed_at
    prefix = base_uri.removeprefix(f"s3://{BUCKET}/")
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert object_keys(s3_endpoint, f"{prefix}/{CLAIMS_PREFIX}") == [
        f"{prefix}/{CLAIMS_PREFIX}/{digest}.json"
    ]  # one object, named by the key's hash: the key itself is in no object name


def test_an_expired_binding_is_taken_over_and_a_live_one_is_not(
    claims: ObjectStoreKeyClaims, store: ObjectStore
) -> None:
    old, live, newcomer = binding(), binding(), binding()
    write_binding(store, "expired", old, time.time() - DEFAULT_WINDOW_SECONDS - 60)
    # Past the lease but within the window: still in force (its record may well exist).
    write_binding(store, "leased", live, time.time() - KEY_CLAIM_LEASE_SECONDS - 60)

    assert claims.claim("expired", newcomer) == newcomer
    assert claims.claim("expired", binding()) == newcomer
    assert claims.claim("leased", newcomer) == live


def test_the_window_set_by_the_registry_decides_expiry(
    claims: ObjectStoreKeyClaims, store: ObjectStore
) -> None:
    old, newcomer = binding(), binding()
    write_binding(store, "key", old, time.time() - 120)
    claims.window_seconds = 3600
    assert claims.claim("key", newcomer) == old
    claims.window_seconds = 60
    assert claims.claim("key", newcomer) == newcomer


def test_release_drops_only_its_own_binding(claims: ObjectStoreKeyClaims) -> None:
    first, other, later = binding(), binding(), binding()
    claims.claim("key", first)

    claims.release("key", other.evidence_id)  # not the binding in force: nothing happens
    assert claims.claim("key", later) == first
    claims.release("key", first.evidence_id)
    assert claims.claim("key", later) == later
    claims.release("key", first.evidence_id)  # released long ago: leaves `later` alone
    assert claims.claim("key", binding()) == later
    claims.release("never-claimed", first.evidence_id)  # no object: nothing to do


def test_a_release_never_drops_the_binding_that_replaced_the_one_it_read(
    claims: ObjectStoreKeyClaims, store: ObjectStore, tmp_path: Path
) -> None:
    """Two retries find a dead replica's binding abandoned; the first releases it and claims
    the key while the second is between reading that binding and releasing it. The second's
    release must then leave the first's claim alone, or both would store a record."""
    dead, first, second = binding(), binding(), binding()
    write_binding(store, "key", dead, time.time() - KEY_CLAIM_LEASE_SECONDS - 60)

    class ReadsThenWaits(ObjectStoreKeyClaims):
        def _read(self, path: str) -> tuple[KeyBinding | None, str] | None:
            read = super()._read(path)
            if not meanwhile.is_set():
                meanwhile.set()
                claims.release("key", dead.evidence_id)
                assert claims.claim("key", first) == first
            return read

    meanwhile = threading.Event()
    ReadsThenWaits(store, tmp_path / "other").release("key", dead.evidence_id)

    assert meanwhile.is_set()
    assert claims.claim("key", second) == first


def test_concurrent_claims_of_one_key_have_exactly_one_winner(
    claims: ObjectStoreKeyClaims,
) -> None:
    for round_ in range(4):
        key = f"race-{round_}"
        wanted = [binding() for _ in range(THREADS)]

        told = all_at_once(THREADS, lambda n, key=key, wanted=wanted: claims.claim(key, wanted[n]))

        winners = [n for n in range(THREADS) if told[n] == wanted[n]]
        assert len(winners) == 1
        assert told == [wanted[winners[0]]] * THREADS


def test_concurrent_takeovers_of_an_expired_binding_have_exactly_one_winner(
    claims: ObjectStoreKeyClaims, store: ObjectStore
) -> None:
    for round_ in range(4):
        key = f"expired-{round_}"
        write_binding(store, key, binding(), time.time() - DEFAULT_WINDOW_SECONDS - 60)
        wanted = [binding() for _ in range(THREADS)]

        told = all_at_once(THREADS, lambda n, key=key, wanted=wanted: claims.claim(key, wanted[n]))

        winners = [n for n in range(THREADS) if told[n] == wanted[n]]
        assert len(winners) == 1
        assert told == [wanted[winners[0]]] * THREADS


def test_concurrent_takeovers_of_an_abandoned_binding_have_exactly_one_winner(
    claims: ObjectStoreKeyClaims, store: ObjectStore, tmp_path: Path
) -> None:
    """What `StorageBackend._commit_once` does when a binding's upload died: release it,
    then claim again. Retries racing through that must not each end up holding the key."""
    dead = "7-deadbeef0123"
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / f"{dead}{LOCK_SUFFIX}").touch()  # nobody holds its lock

    def retry(key: str, wanted: KeyBinding) -> KeyBinding:
        while True:
            held = claims.claim(key, wanted)
            if held == wanted or not claims.is_abandoned(held):
                return held
            claims.release(key, held.evidence_id)

    for round_ in range(8):
        key = f"abandoned-{round_}"
        write_binding(store, key, binding(owner=dead), time.time())
        wanted = [binding() for _ in range(THREADS)]

        told = all_at_once(THREADS, lambda n, key=key, wanted=wanted: retry(key, wanted[n]))

        winners = [n for n in range(THREADS) if told[n] == wanted[n]]
        assert len(winners) == 1
        assert told == [wanted[winners[0]]] * THREADS


def test_abandoned_means_a_dead_process_of_this_machine_or_a_claim_past_its_lease(
    store: ObjectStore, tmp_path: Path
) -> None:
    staging = StagingArea(tmp_path / "staging")
    try:
        claims = ObjectStoreKeyClaims(store, staging.root)
        (staging.root / f"7-deadbeef0123{LOCK_SUFFIX}").touch()  # a process that died
        long_ago = time.time() - KEY_CLAIM_LEASE_SECONDS - 60

        def held(owner: str, claimed_at: float) -> KeyBinding:
            return KeyBinding("ENG-K", "0" * 64, uuid.uuid4().hex, owner, claimed_at)

        # Of this machine: its lock decides, however old the claim.
        assert claims.is_abandoned(held(staging.owner, long_ago)) is False
        assert claims.is_abandoned(held("7-deadbeef0123", time.time())) is True
        # Of another replica: only the lease.
        assert claims.is_abandoned(held("8-0123456789ab", time.time())) is False
        assert claims.is_abandoned(held("8-0123456789ab", long_ago)) is True
        # Never a path: an owner that is not a staging owner is another machine's.
        assert claims.is_abandoned(held("../staging/7-deadbeef0123", time.time())) is False
    finally:
        staging.close()


def test_a_claim_on_a_store_that_is_not_there_is_storage_unavailable(
    base_uri: str, tmp_path: Path
) -> None:
    """A 503 for the client, as every other failure of the store is."""
    missing = from_url(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/prefix")
    claims = ObjectStoreKeyClaims(missing, tmp_path / "staging")
    with pytest.raises(StorageUnavailable):
        claims.claim("key", binding())
