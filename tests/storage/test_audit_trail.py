"""The audit trail's writer (`AuditTrail`) over the local backend's real SQLite store: events
queued by many callers share a few appends, a store that fails is retried until every event
is stored once, and what waits (durable records, reads past a full queue) waits as promised.
Store failures are injected: no real SQLite fails on demand."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from app.storage.audit import AuditEvent, AuditPage, audit_event
from app.storage.audit_trail import AuditTrail
from app.storage.errors import StorageUnavailable
from app.storage.local.backend import SqliteAuditStore
from app.storage.local.index import SqliteIndex


class GatedStore:
    """The real store behind a gate (appends wait while it is closed) that can also fail."""

    def __init__(self, store: SqliteAuditStore) -> None:
        self.store = store
        self.open = threading.Event()
        self.open.set()
        self.failures = 0  # appends still to fail
        self.appends: list[int] = []  # batch sizes, successful or not

    def append(self, events: Sequence[AuditEvent]) -> None:
        self.open.wait()
        self.appends.append(len(events))
        if self.failures:
            self.failures -= 1
            raise StorageUnavailable("store down (injected)")
        self.store.append(events)

    def page(self, engagement_id: str, limit: int, cursor: str | None) -> AuditPage:
        return self.store.page(engagement_id, limit, cursor)

    def engagements(self) -> list[str]:
        return list(self.store.engagements())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[GatedStore]:
    index = SqliteIndex(tmp_path / "index.sqlite3")
    yield GatedStore(SqliteAuditStore(index))
    index.close()


def event(n: int) -> AuditEvent:
    return audit_event("analyst", "read", "ENG", evidence_id=f"{n:032x}")


def stored(store: GatedStore) -> list[str | None]:
    return [e.evidence_id for e in store.page("ENG", 1000, None).items]


def test_events_recorded_meanwhile_share_one_append_and_land_in_order(store: GatedStore) -> None:
    trail = AuditTrail(store)
    store.open.clear()
    trail.record(event(0))  # taken by the first append, which waits at the gate
    threads = [threading.Thread(target=trail.record, args=(event(n),)) for n in range(1, 201)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert trail.waiting == 201
    store.open.set()

    assert trail.flush(10)
    assert store.appends == [1, 200]  # everything recorded during the first: one more append
    assert sorted(stored(store)) == sorted(f"{n:032x}" for n in range(201))
    trail.close()


def test_a_failing_store_is_retried_and_each_event_is_stored_once(store: GatedStore) -> None:
    trail = AuditTrail(store)
    store.failures = 2
    for n in range(5):
        trail.record(event(n))

    assert trail.flush(10)  # first retry after 0.5 s, second after 1 s
    assert stored(store) == [f"{n:032x}" for n in range(5)]
    assert len(store.appends) >= 3 and trail.last_error is None
    trail.close()


def test_a_durable_record_waits_for_its_store_and_says_when_it_could_not(
    store: GatedStore,
) -> None:
    trail = AuditTrail(store)
    trail.record_durably(event(1), timeout=5)
    assert stored(store) == [f"{1:032x}"]  # stored when it returned

    store.open.clear()
    with pytest.raises(StorageUnavailable, match="kept and retried"):
        trail.record_durably(event(2), timeout=0.2)
    store.open.set()
    assert trail.flush(5) and stored(store) == [f"{1:032x}", f"{2:032x}"]
    trail.close()


def test_reads_wait_past_a_full_queue_then_are_refused(store: GatedStore) -> None:
    trail = AuditTrail(store, max_waiting=3, full_wait_seconds=0.2)
    store.open.clear()
    for n in range(2):
        trail.record(event(n))
    trail.admit()  # two waiting to be stored (one at the gate): room for one more
    trail.record(event(2))

    with pytest.raises(StorageUnavailable, match="3 audit events wait"):
        trail.admit()
    store.open.set()
    assert trail.flush(5)
    trail.admit()  # room again
    trail.close()


def test_events_a_closing_process_cannot_store_are_counted_as_lost(
    store: GatedStore, caplog: pytest.LogCaptureFixture
) -> None:
    trail = AuditTrail(store)
    store.failures = 1_000
    trail.record(event(1))
    trail.record(event(2))

    trail.close(timeout=0.3)

    assert "2 audit event(s) could not be stored before shutdown" in caplog.text
    with pytest.raises(StorageUnavailable, match="closed"):
        trail.record(event(3))
