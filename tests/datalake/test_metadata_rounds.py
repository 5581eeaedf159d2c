"""Metadata rows in rounds: how many statements concurrent uploads, a backlog and a failure
cost, against MiniLake through the real SDK (statements counted at the bridge). Counts and
contents only; timings belong to the benchmark (`python -m benchmarks --only databricks-latency`).
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.storage.databricks.backend import DatabricksBackend
from app.storage.databricks.outbox import MetadataOutbox
from app.storage.databricks.sql import (
    FIELD_SEPARATOR,
    MAX_MERGE_ROWS,
    MAX_MERGE_VALUE_BYTES,
    MAX_STATEMENT_PARAMETERS,
    StatementRunner,
    copies_statement,
    create_table_statement,
    merge_chunks,
    merge_rows_statement,
    packed_row,
    quote_name,
)
from app.storage.errors import InvalidInput
from app.storage.records import EvidenceRecord, utc_timestamp
from app.storage.registry import create_backend
from tests.conftest import API_KEY, AUTH, settings_from_env, stored_record
from tests.datalake.inspect import table_rows
from tests.datalake.latency_model import DEFAULT, ZERO, LatencyModel
from tests.datalake.minilake_bridge import FAILED, METADATA_MERGE, MiniLakeBridge
from tests.datalake.workspace import DatabricksWorkspace
from tests.live_server import LiveServer
from tests.multipart import multipart_body

UPLOAD = "/api/v1/evidence/upload"


def record(n: int, **changes: object) -> EvidenceRecord:
    values: dict[str, object] = {
        "id": uuid.uuid4().hex,
        "engagement_id": "ENG-ROUNDS",
        "file_name": f"file {n}.txt",
        "volume_path": f"/Volumes/kmflow/s/raw_evidence/evidence_store/ENG-ROUNDS/{n}.txt",
        "content_hash": f"{n:064x}",
        "size_bytes": n,
        "stored_at": utc_timestamp(),
        "metadata_json": json.dumps({"n": n}),
    }
    return EvidenceRecord(**(values | changes))


# -- the statements, without a warehouse -------------------------------------------------------


def test_a_full_merge_stays_within_the_parameter_limit() -> None:
    _, params = merge_rows_statement("`c`.`s`.`t`", [record(n) for n in range(MAX_MERGE_ROWS)])
    assert len(params) == MAX_STATEMENT_PARAMETERS == 255
    with pytest.raises(ValueError, match="1 to 255 rows"):
        merge_rows_statement("`c`.`s`.`t`", [record(n) for n in range(MAX_MERGE_ROWS + 1)])


def test_one_merge_never_carries_an_id_twice() -> None:
    """An insert-only MERGE inserts every source row the table lacks: twice, if twice."""
    twice = record(1)
    with pytest.raises(ValueError, match="twice"):
        merge_rows_statement("`c`.`s`.`t`", [twice, record(2), twice])


def test_rows_are_cut_into_merges_by_count_and_by_size() -> None:
    small = [record(n) for n in range(600)]
    assert [len(chunk) for chunk in merge_chunks(small)] == [255, 255, 90]
    assert [r for chunk in merge_chunks(small) for r in chunk] == small

    big_metadata = json.dumps({"notes": "x" * 60_000})
    big = [record(n, metadata_json=big_metadata) for n in range(150)]
    chunks = merge_chunks(big)
    assert len(chunks) > 1
    assert all(
        sum(len(packed_row(r).encode()) for r in chunk) <= MAX_MERGE_VALUE_BYTES for chunk in chunks
    )
    assert [r for chunk in chunks for r in chunk] == big


def test_a_value_holding_the_field_separator_is_refused_not_split() -> None:
    with pytest.raises(InvalidInput, match="control character"):
        packed_row(record(1, file_name=f"a{FIELD_SEPARATOR}b.txt"))


def test_a_lookup_names_each_record_with_four_parameters() -> None:
    records = [record(n, engagement_id="ENG-LOOKUP") for n in range(63)]
    sql, params = copies_statement("`c`.`s`.`t`", "`c`.`s`.`w`", records, per_record=10)
    assert len(params) == 252
    assert "ENG-LOOKUP" not in sql and sql.count("LIMIT 10") == 63
    with pytest.raises(ValueError, match="1 to 63 records"):
        copies_statement("`c`.`s`.`t`", "`c`.`s`.`w`", [*records, records[0]], per_record=10)


# -- against MiniLake -------------------------------------------------------------------------


@pytest.fixture
def minilake(databricks_workspace: DatabricksWorkspace) -> MiniLakeBridge:
    if databricks_workspace.bridge is None:
        pytest.skip("counts statements at MiniLake's bridge; not run against a real workspace")
    return databricks_workspace.bridge


@pytest.fixture
def make_backend(
    databricks_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[float], DatabricksBackend]]:
    """Backends on the test's schema, with the delivery thread's retry interval given."""
    backends: list[DatabricksBackend] = []

    def make(retry_seconds: float) -> DatabricksBackend:
        state = tmp_path_factory.mktemp("state")
        env = {
            **databricks_env,
            "STATE_PATH": str(state),
            "DATABRICKS_OUTBOX_RETRY_SECONDS": str(retry_seconds),
        }
        backend = create_backend(settings_from_env(env))
        assert isinstance(backend, DatabricksBackend)
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        backend.close()


def statements_since(bridge: MiniLakeBridge, since: int, schema: str) -> Counter[str]:
    """Statements on `schema`'s tables by first keyword (other tests share the bridge)."""
    sent = [s["statement"] for s in bridge.statements[since:]]
    return Counter(sql.split(None, 1)[0].upper() for sql in sent if f"`{schema}`" in sql)


def test_a_backlog_of_600_rows_takes_three_merges_and_lands_exactly_once(
    make_backend: Callable[[float], DatabricksBackend],
    minilake: MiniLakeBridge,
    databricks_workspace: DatabricksWorkspace,
    databricks_env: dict[str, str],
) -> None:
    odd = {"note": "quote ' backslash \\ unicode é 漢字 \u2028", "n": [1, 2.5, None, True]}
    rows = [record(n) for n in range(598)]
    rows += [
        record(
            598, file_name='it\'s "quoted"; DROP TABLE x; --.txt', metadata_json=json.dumps(odd)
        ),
        record(599, metadata_json=None, size_bytes=5 * 1024**4),
    ]
    backend = make_backend(3600)  # the delivery thread stays out of the way: one drain counted
    for row in rows:
        backend.outbox.queue(row)
    since = len(minilake.statements)

    assert backend.rows.deliver_outbox() == 0

    assert statements_since(minilake, since, databricks_env["DATABRICKS_SCHEMA"]) == {"MERGE": 3}
    stored = table_rows(databricks_workspace, databricks_env, "ENG-ROUNDS")
    assert sorted(row[0] for row in stored) == sorted(r.id for r in rows)  # each exactly once
    by_id = {r.id: r for r in rows}
    assert backend.get("ENG-ROUNDS", rows[598].id) == rows[598]
    assert backend.get("ENG-ROUNDS", rows[599].id) == rows[599]
    for row_id, content_hash, size, metadata in stored:
        assert (content_hash, int(str(size)), metadata) == (
            by_id[str(row_id)].content_hash,
            by_id[str(row_id)].size_bytes,
            by_id[str(row_id)].metadata_json,
        )


def test_a_round_whose_merge_fails_leaves_its_rows_queued_and_they_land_once(
    make_backend: Callable[[float], DatabricksBackend],
    minilake: MiniLakeBridge,
    databricks_workspace: DatabricksWorkspace,
    databricks_env: dict[str, str],
) -> None:
    backend = make_backend(0.2)
    warm_up = backend.write("ENG-ROUNDS", "warm-up.txt", io.BytesIO(b"warm"))  # table exists
    minilake.add_fault(r"^/api/2\.0/sql/statements$", FAILED, statement=METADATA_MERGE, times=1)
    since = len(minilake.statements)
    try:
        written = [backend.write("ENG-ROUNDS", f"{n}.txt", io.BytesIO(b"%d" % n)) for n in range(3)]
        assert backend.wait_until_delivered(timeout=30)
    finally:
        minilake.faults.clear()

    sent = statements_since(minilake, since, databricks_env["DATABRICKS_SCHEMA"])
    assert sent["MERGE"] >= 2  # the failed one, then the delivery that took its rows
    stored = [row[0] for row in table_rows(databricks_workspace, databricks_env, "ENG-ROUNDS")]
    assert sorted(stored) == sorted([warm_up.id] + [r.id for r in written])  # each once


# -- under the latency model: a workspace's speed ---------------------------------------------


@pytest.fixture
def workspace_speed(databricks_workspace: DatabricksWorkspace) -> Iterator[LatencyModel]:
    """MiniLake at the default model's speed (commit 1 s per table, statement 0.3 s, PUT 0.08
    s) for one test; ZERO again afterwards (MiniLake is shared by the session)."""
    model = databricks_workspace.latency
    if model is None:
        pytest.skip("the latency model wraps MiniLake; not run against a real workspace")
    model.latency = DEFAULT
    yield model
    model.latency = ZERO
    model.reset_counts()


@pytest.fixture
def server(databricks_env: dict[str, str], tmp_path: Path) -> Iterator[LiveServer]:
    env = {
        **databricks_env,
        "STATE_PATH": str(tmp_path / "state"),
        "API_KEYS": API_KEY,
        "DATABRICKS_STATEMENT_TIMEOUT_SECONDS": "30",  # as deployed: waits, does not poll
    }
    server = LiveServer(env, cwd=tmp_path)
    yield server
    server.stop()


def upload_many(
    server: LiveServer,
    engagement: str,
    connections: int,
    each: int,
    check: bool = False,
    keyed: bool = False,
) -> list[dict[str, Any]]:
    """`connections` clients uploading `each` files one after another, all at once; with
    `check`, every client reads its record by id and in the first listing page right after
    its 201 (read-your-writes); with `keyed`, each upload has an Idempotency-Key."""

    def client(n: int) -> list[dict[str, Any]]:
        records = []
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
            for k in range(each):
                body, content_type = multipart_body(
                    {"engagement_id": engagement}, f"{n}-{k}.txt", b"%d-%d" % (n, k)
                )
                headers = {"Content-Type": content_type}
                if keyed:
                    headers["Idempotency-Key"] = f"{engagement}-{n}-{k}"
                answer = http.post(UPLOAD, content=body, headers=headers)
                assert answer.status_code == 201, answer.text
                record = answer.json()
                if check:
                    by_id = http.get(f"/api/v1/evidence/{engagement}/{record['id']}")
                    assert by_id.status_code == 200 and by_id.json() == stored_record(record)
                    page = http.get(f"/api/v1/evidence/{engagement}", params={"limit": 1000})
                    assert record["id"] in [item["id"] for item in page.json()["items"]]
                records.append(record)
        return records

    with ThreadPoolExecutor(max_workers=connections) as pool:
        return [r for records in pool.map(client, range(connections)) for r in records]


def test_concurrent_uploads_share_statements_and_each_row_lands_once(
    server: LiveServer,
    workspace_speed: LatencyModel,
    databricks_workspace: DatabricksWorkspace,
    databricks_env: dict[str, str],
) -> None:
    workspace_speed.reset_counts()  # the server's startup (CREATE TABLE) is not counted

    records = upload_many(server, "ENG-C16", connections=16, each=6)

    counts = workspace_speed.statements
    # Rows and duplicate lookups; the audit trail's INSERTs (one per batch of events, each
    # shared by the uploads of a round or so) are counted apart.
    assert (counts["SELECT"] + counts["MERGE"]) / len(records) <= 0.2, counts
    assert counts["MERGE"] < len(records) / 8
    assert counts["INSERT"] <= counts["MERGE"] + 1, counts
    stored = [row[0] for row in table_rows(databricks_workspace, databricks_env, "ENG-C16")]
    assert sorted(stored) == sorted(record["id"] for record in records)  # each exactly once


def test_idempotency_keys_of_concurrent_uploads_share_their_claim_statements(
    server: LiveServer,
    workspace_speed: LatencyModel,
    databricks_workspace: DatabricksWorkspace,
    databricks_env: dict[str, str],
) -> None:
    """A key is claimed in `kmflow_claims` before its upload commits (every replica must see
    it): the claims of uploads in flight together share one MERGE and one SELECT."""
    workspace_speed.reset_counts()
    assert databricks_workspace.bridge is not None
    since = len(databricks_workspace.bridge.statements)

    records = upload_many(server, "ENG-KEYS", connections=16, each=6, keyed=True)

    sent = [s["statement"] for s in databricks_workspace.bridge.statements[since:]]
    claims = Counter(sql.split(None, 1)[0] for sql in sent if "`kmflow_claims`" in sql)
    assert 0 < claims["MERGE"] < len(records) / 3, claims  # one per upload without rounds
    assert claims["SELECT"] <= claims["MERGE"], claims
    counts = workspace_speed.statements
    # 4 one by one; the audit trail's INSERTs (paced, shared by every event meanwhile) apart
    assert (sum(counts.values()) - counts["INSERT"]) / len(records) <= 0.75, counts
    assert counts["INSERT"] < claims["MERGE"], counts
    stored = [row[0] for row in table_rows(databricks_workspace, databricks_env, "ENG-KEYS")]
    assert sorted(stored) == sorted(record["id"] for record in records)


def test_each_upload_reads_back_by_id_and_in_the_first_page_right_after_its_201(
    server: LiveServer, workspace_speed: LatencyModel
) -> None:
    records = upload_many(server, "ENG-RYW", connections=16, each=2, check=True)
    assert len({record["id"] for record in records}) == 32


def test_a_merge_sent_twice_inserts_each_row_once(
    databricks_workspace: DatabricksWorkspace, databricks_env: dict[str, str]
) -> None:
    """What a retry after a lost answer does: the second MERGE finds every id there."""
    schema = databricks_env["DATABRICKS_SCHEMA"]
    table = quote_name(databricks_env["DATABRICKS_CATALOG"], schema, "evidence_metadata")
    runner = StatementRunner(databricks_workspace.client(), databricks_workspace.warehouse_id, 30)
    runner.run(create_table_statement(table))
    rows = [record(n) for n in range(3)]

    runner.run(*merge_rows_statement(table, rows))
    runner.run(*merge_rows_statement(table, [*rows[1:], record(3)]))

    stored = [row[0] for row in table_rows(databricks_workspace, databricks_env, "ENG-ROUNDS")]
    assert len(stored) == 4 and set(stored) >= {r.id for r in rows}


def test_earlier_copies_come_from_the_table_the_outbox_and_the_same_round(
    databricks_env: dict[str, str], minilake: MiniLakeBridge, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    env = {**databricks_env, "STATE_PATH": str(state), "API_KEYS": API_KEY,
           "DATABRICKS_OUTBOX_RETRY_SECONDS": "3600"}  # fmt: skip
    server = LiveServer(env, cwd=tmp_path)
    try:
        in_table = [upload_one(server, "ENG-COPIES", "scan.pdf", b"the scan") for _ in range(9)]
        outbox = MetadataOutbox(state / "databricks_outbox.sqlite3")
        queued = [record(n, engagement_id="ENG-COPIES", content_hash=in_table[0]["content_hash"])
                  for n in range(2)]  # fmt: skip
        for row in queued:  # rows the warehouse has not taken yet (nobody delivers them here)
            outbox.queue(row)
        outbox.close()
        # A slow MERGE keeps one round busy; the two uploads then share the next round.
        minilake.add_fault(r"^/api/2\.0/sql/statements$", None, statement=METADATA_MERGE, delay=1.5)
        with ThreadPoolExecutor(max_workers=3) as pool:
            pool.submit(upload_one, server, "ENG-COPIES", "other.txt", b"other bytes")
            threading.Event().wait(0.5)
            pair = list(
                pool.map(lambda _: upload_one(server, "ENG-COPIES", "scan.pdf", b"the scan"),
                         range(2))
            )  # fmt: skip
    finally:
        minilake.faults.clear()
        server.stop()

    everyone = [(r["stored_at"], r["id"]) for r in in_table + pair]
    everyone += [(r.stored_at, r.id) for r in queued]
    for upload in pair:
        key = (upload["stored_at"], upload["id"])
        expected = [i for _, i in sorted((k for k in everyone if k < key), reverse=True)][:10]
        assert upload["duplicate_of"] == expected
    later = max(pair, key=lambda r: (r["stored_at"], r["id"]))
    assert min(pair, key=lambda r: (r["stored_at"], r["id"]))["id"] in later["duplicate_of"]


def test_an_upload_answered_before_its_merge_is_readable_at_once(
    databricks_env: dict[str, str],
    minilake: MiniLakeBridge,
    databricks_workspace: DatabricksWorkspace,
    tmp_path: Path,
) -> None:
    env = {**databricks_env, "STATE_PATH": str(tmp_path / "state"), "API_KEYS": API_KEY}
    with TestClient(create_app(settings_from_env(env))) as api:
        api.headers.update(AUTH)
        backend = api.app_state["storage"]
        backend.rows._wait_seconds = 0.2  # the 201 does not wait for the 1.5 s MERGE below
        minilake.add_fault(r"^/api/2\.0/sql/statements$", None, statement=METADATA_MERGE, delay=1.5)
        try:
            body, content_type = multipart_body({"engagement_id": "ENG-EARLY"}, "a.txt", b"a")
            answer = api.post(UPLOAD, content=body, headers={"Content-Type": content_type})
            in_table_then = table_rows(databricks_workspace, databricks_env, "ENG-EARLY")
            by_id = api.get(f"/api/v1/evidence/ENG-EARLY/{answer.json()['id']}")
            listing = api.get("/api/v1/evidence/ENG-EARLY")
            assert backend.wait_until_delivered(timeout=30)
        finally:
            minilake.faults.clear()

    assert answer.status_code == 201
    assert in_table_then == []  # answered before the MERGE committed
    assert by_id.status_code == 200 and by_id.json() == stored_record(answer.json())
    assert [item["id"] for item in listing.json()["items"]] == [answer.json()["id"]]
    stored = table_rows(databricks_workspace, databricks_env, "ENG-EARLY")
    assert [row[0] for row in stored] == [answer.json()["id"]]


def upload_one(server: LiveServer, engagement: str, name: str, content: bytes) -> dict[str, Any]:
    body, content_type = multipart_body({"engagement_id": engagement}, name, content)
    answer = httpx.post(
        f"{server.url}{UPLOAD}", content=body, timeout=60,
        headers={**AUTH, "Content-Type": content_type},
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    uploaded: dict[str, Any] = answer.json()
    return uploaded
