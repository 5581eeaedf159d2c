"""Purging an engagement (`app.purge`) on every backend in `tests.conftest.BACKENDS`: nothing
of it left where the backend keeps files and rows (looked at there, not through kmflow), a
certificate that names what went, nothing of other engagements touched, a legal hold obeyed,
and a purge interrupted at its last step finished by the next run."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from deltalake import DeltaTable, QueryBuilder
from deltalake.exceptions import DeltaError, TableNotFoundError

from app.purge import certificate_digest, plan_purge, purge
from app.storage.base import StorageBackend
from app.storage.delta.backend import DeltaLakeBackend
from app.storage.errors import EvidenceNotFound, LegalHoldActive, StorageUnavailable
from app.storage.local.backend import LocalBackend
from app.storage.records import EvidenceRecord
from app.storage.registry import create_backend
from app.storage.walk import all_events, all_records
from tests.conftest import settings_from_env
from tests.datalake.inspect import table_rows, volume_files

PURGED, KEPT = "ENG-ENDED", "ENG-ONGOING"


@pytest.fixture
def backend(backend_env: dict[str, str]) -> Iterator[StorageBackend]:
    # No log grace: nothing else writes while these tests purge (docs/operations.md).
    backend = create_backend(settings_from_env(backend_env, delta_purge_log_grace_seconds=0))
    yield backend
    backend.close()


def populate(backend: StorageBackend) -> tuple[list[EvidenceRecord], list[EvidenceRecord]]:
    """Three records of the purged engagement (one withdrawn), two of another."""
    purged = [
        backend.write(PURGED, f"memo {n}.txt", io.BytesIO(f"memo {n}".encode()), {"n": n})
        for n in range(3)
    ]
    backend.withdraw(PURGED, purged[0].id, "uploaded by mistake", "analyst")
    kept = [backend.write(KEPT, f"keep {n}.txt", io.BytesIO(f"keep {n}".encode())) for n in (1, 2)]
    return purged, kept


def nothing_left_in_storage(
    backend: StorageBackend, request: pytest.FixtureRequest, ids: set[str]
) -> None:
    """Where each backend keeps files and rows, no trace of the purged records."""
    if isinstance(backend, LocalBackend):
        assert not (backend.store / PURGED).exists()
        # The audit trail keeps ids and hashes by design; names, metadata and reasons must
        # not survive in the database file or its write-ahead log, freed pages included.
        index = backend.index.db.path
        raw = b"".join(path.read_bytes() for path in index.parent.glob(f"{index.name}*"))
        for trace in (b"memo 1.txt", b'{"n": 2}', b"uploaded by mistake"):
            assert trace not in raw
        with sqlite3.connect(index) as db:
            assert db.execute("SELECT COUNT(*) FROM evidence_metadata WHERE engagement_id = ?",
                              (PURGED,)).fetchone() == (0,)  # fmt: skip
    elif isinstance(backend, DeltaLakeBackend):
        root = backend.location.local_root
        assert root is not None
        assert not list((root / "evidence_store" / PURGED).glob("*"))
        for table in ("evidence_metadata", "evidence_withdrawals"):
            assert readable_rows(root / table, PURGED) == []
            assert parquet_holding(root / table, ids) == []
    else:
        workspace = request.getfixturevalue("databricks_workspace")
        env = request.getfixturevalue("backend_env")
        assert [path for path in volume_files(workspace, env) if f"/{PURGED}/" in path] == []
        assert table_rows(workspace, env, PURGED) == []
        if workspace.bridge is not None:  # what the tables' files went through (emulated)
            schema = f"{env['DATABRICKS_CATALOG']}.{env['DATABRICKS_SCHEMA']}"
            for table in (f"{schema}.evidence_metadata", f"{schema}.evidence_withdrawals"):
                done = [kind for kind, name in workspace.bridge.delta.maintenance if name == table]
                assert done[:4] == [
                    "REORG", "SET TBLPROPERTIES", "VACUUM", "UNSET TBLPROPERTIES",
                ]  # fmt: skip
                # the retention the VACUUM needed is gone again
                assert workspace.bridge.delta.properties.get(table, {}) == {}


def readable_rows(table: Path, engagement_id: str) -> list[Any]:
    """The engagement's rows at every version of the table that can still be read."""
    found = []
    versions = sorted(int(entry.stem) for entry in (table / "_delta_log").glob("*.json"))
    for version in range(0, versions[-1] + 1):
        try:
            snapshot = DeltaTable(str(table), version=version)
        except (DeltaError, TableNotFoundError):
            continue
        query = QueryBuilder().register("t", snapshot)
        sql = f"SELECT id FROM t WHERE engagement_id = '{engagement_id}'"  # noqa: S608
        found += query.execute(sql).read_all().column("id").to_pylist()
    return found


def parquet_holding(table: Path, ids: set[str]) -> list[str]:
    """Parquet files under the table (data and checkpoints) whose contents name any id."""
    holding = []
    for path in table.rglob("*.parquet"):
        rows = duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall()  # noqa: S608
        text = json.dumps(rows, default=str)
        if any(evidence_id in text for evidence_id in ids):
            holding.append(str(path))
    return holding


def test_a_purge_removes_every_file_and_row_and_certifies_what_went(
    backend: StorageBackend, request: pytest.FixtureRequest
) -> None:
    purged, kept = populate(backend)
    ids = {record.id for record in purged}

    outcome = purge(backend, PURGED, "engagement ended: return or destroy", "ops@host")

    certificate = outcome.certificate
    assert (certificate["engagement_id"], certificate["records"]) == (PURGED, 3)
    assert certificate["withdrawn_before_purge"] == 1
    assert certificate["bytes"] == sum(record.size_bytes for record in purged)
    assert {(e["id"], e["content_hash"]) for e in certificate["evidence"]} == {
        (record.id, record.content_hash) for record in purged
    }
    assert certificate["principal"] == "ops@host" and certificate["resumed"] is False
    planned_at = min(e.occurred_at for e in all_events(backend, PURGED) if e.outcome == "planned")
    assert certificate["started_at"] <= planned_at < certificate["completed_at"]
    assert certificate["certificate_sha256"] == certificate_digest(certificate)
    assert json.loads(outcome.text) == certificate
    assert "memo" not in outcome.text  # names and metadata are not in the certificate
    assert list(all_records(backend, PURGED, include_withdrawn=True)) == []
    with pytest.raises(EvidenceNotFound):
        backend.get(PURGED, purged[1].id, include_withdrawn=True)
    nothing_left_in_storage(backend, request, ids)

    assert list(all_records(backend, KEPT)) == list(reversed(kept))  # untouched
    for record in kept:
        with backend.open(record) as stream:
            assert stream.read() == record.file_name.replace(".txt", "").encode()
    events = [(e.action, e.outcome, e.evidence_id) for e in all_events(backend, PURGED)]
    assert sorted(e for e in events if e[1] == "planned") == sorted(
        ("purge", "planned", evidence_id) for evidence_id in ids
    )
    completed = [e for e in all_events(backend, PURGED) if e.outcome == "completed"]
    assert len(completed) == 1 and completed[0].principal == "ops@host"
    assert (
        json.loads(completed[0].detail or "{}")["certificate_sha256"]
        == (certificate["certificate_sha256"])
    )
    assert purge(backend, PURGED, "again", "ops@host").certificate["records"] == 0  # idempotent


def test_a_held_engagement_is_not_purged_and_a_dry_run_changes_nothing(
    backend: StorageBackend,
) -> None:
    purged, _ = populate(backend)
    backend.place_hold(PURGED, "regulator's inquiry", "lead")

    with pytest.raises(LegalHoldActive, match="regulator's inquiry"):
        purge(backend, PURGED, "engagement ended", "ops@host")
    backend.release_hold(PURGED)
    plan = plan_purge(backend, PURGED)

    assert sorted(plan.planned) == sorted(record.id for record in purged)
    assert f"{len(purged)} record(s)" in plan.describe()
    assert len(list(all_records(backend, PURGED, include_withdrawn=True))) == 3
    for record in purged[1:]:
        with backend.open(record) as stream:
            assert stream.read() == record.file_name.removesuffix(".txt").encode()
    assert not [e for e in all_events(backend, PURGED) if e.action == "purge"]


def test_a_purge_interrupted_after_its_deletes_is_finished_by_the_next_run(
    backend: StorageBackend, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows are deleted, then the process dies before the expunge (a crash injected: no
    real part fails at that point on demand); the rerun finds no rows left, yet certifies
    every record, from the plan the first run wrote to the audit trail."""
    purged, kept = populate(backend)
    expunge = backend.expunge

    def crash() -> dict[str, object]:
        raise StorageUnavailable("killed")

    monkeypatch.setattr(backend, "expunge", crash)
    with pytest.raises(StorageUnavailable):
        purge(backend, PURGED, "engagement ended", "ops@host")
    assert list(all_records(backend, PURGED, include_withdrawn=True)) == []
    monkeypatch.setattr(backend, "expunge", expunge)

    certificate = purge(backend, PURGED, "engagement ended", "ops@host").certificate

    assert certificate["resumed"] is True and certificate["records"] == 3
    assert {entry["id"] for entry in certificate["evidence"]} == {r.id for r in purged}
    nothing_left_in_storage(backend, request, {record.id for record in purged})
    assert list(all_records(backend, KEPT)) == list(reversed(kept))


@pytest.mark.parametrize("backend_name", ["delta"])
def test_a_replica_holding_a_snapshot_from_before_a_purge_commits_into_the_cut_log(
    backend: StorageBackend, backend_env: dict[str, str], tmp_path: Path
) -> None:
    """A purge cuts the Delta log (no version before it stays readable), so the next entry
    after a replica's old snapshot is gone, as if nothing had been committed since. A replica
    taking that for "current" would write a version number the table already used, and its
    row would be lost to every other reader. It must see the cut, reopen, and commit on top."""
    populate(backend)
    replica_env = {**backend_env, "STATE_PATH": str(tmp_path / "replica_state")}
    replica = create_backend(settings_from_env(replica_env))
    try:
        before = replica.write(KEPT, "before.txt", io.BytesIO(b"before"))
        assert before in replica.list(KEPT).items  # its snapshot: from before the purge

        purge(backend, PURGED, "engagement ended", "ops@host")
        after = replica.write(KEPT, "after.txt", io.BytesIO(b"after"))

        assert replica.list(KEPT).items[:2] == [after, before]
    finally:
        replica.close()
    fresh = create_backend(settings_from_env(replica_env))
    try:
        assert fresh.list(KEPT).items[:2] == [after, before]  # in the one log every reader reads
        assert fresh.list(PURGED, include_withdrawn=True).items == []
    finally:
        fresh.close()
