"""Three `kmflow serve` replicas on one Databricks workspace (MiniLake), each with its own
throw-away STATE_PATH, as pods behind a load balancer: Idempotency-Keys hold for the whole
deployment, and a replica's disk holds nothing an acknowledged upload needs, also while the
warehouse is down."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, AUTH, stored_record
from tests.datalake.inspect import table_rows
from tests.datalake.workspace import DatabricksWorkspace
from tests.live_server import LiveServer
from tests.multipart import multipart_body

pytestmark = pytest.mark.slow

UPLOAD = "/api/v1/evidence/upload"
ENGAGEMENT = "ENG-REPLICAS"


@pytest.fixture
def replica_env(databricks_env: dict[str, str]) -> dict[str, str]:
    # Short timeouts, so the time after which any replica takes another's pending rows (the
    # longest a MERGE can run: 2 x statement timeout + retry budget + 10 s) is 16 s here.
    return {
        **databricks_env,
        "API_KEYS": API_KEY,
        "DATABRICKS_STATEMENT_TIMEOUT_SECONDS": "2",
        "DATABRICKS_RETRY_TIMEOUT_SECONDS": "2",
        "DATABRICKS_OUTBOX_RETRY_SECONDS": "0.5",
    }


class Replicas:
    """Replicas started with their own STATE_PATH under `root`; all stopped at the end."""

    def __init__(self, env: dict[str, str], root: Path) -> None:
        self.env = env
        self.root = root
        self.running: list[LiveServer] = []

    def start(self, name: str, ready_path: str = "/api/v1/health") -> LiveServer:
        state = self.root / name / "state"
        state.mkdir(parents=True, exist_ok=True)
        server = LiveServer(
            {**self.env, "STATE_PATH": str(state)}, cwd=state.parent, ready_path=ready_path
        )
        self.running.append(server)
        return server

    def kill_and_wipe(self, server: LiveServer, name: str) -> None:
        """SIGKILL, then its disk is gone (a pod rescheduled elsewhere)."""
        server.process.kill()
        server.process.wait()
        shutil.rmtree(self.root / name / "state")

    def stop_all(self) -> None:
        for server in self.running:
            server.stop()


@pytest.fixture
def replicas(replica_env: dict[str, str], tmp_path: Path) -> Iterator[Replicas]:
    started = Replicas(replica_env, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def upload(
    server: LiveServer, content: bytes, key: str | None = None, name: str = "minutes.pdf"
) -> httpx.Response:
    fields = {"engagement_id": ENGAGEMENT, "metadata": json.dumps({"name": name})}
    body, content_type = multipart_body(fields, name, content)
    headers = {**AUTH, "Content-Type": content_type}
    if key is not None:
        headers["Idempotency-Key"] = key
    with httpx.Client(base_url=server.url, timeout=120) as http:
        return http.post(UPLOAD, content=body, headers=headers)


def get(server: LiveServer, path: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
        return http.get(path)


def delivered_ids(workspace: DatabricksWorkspace, env: dict[str, str]) -> list[str]:
    return sorted(str(row[0]) for row in table_rows(workspace, env, ENGAGEMENT))


def wait_for_rows(
    workspace: DatabricksWorkspace, env: dict[str, str], count: int, timeout: float = 90
) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        ids = delivered_ids(workspace, env)
        if len(ids) >= count or time.monotonic() > deadline:
            return ids
        time.sleep(0.5)


def test_one_key_sent_to_three_replicas_at_once_stores_one_record(
    replicas: Replicas, minilake: DatabricksWorkspace, replica_env: dict[str, str]
) -> None:
    servers = [replicas.start(name) for name in ("a", "b", "c")]
    keys = [f"replica-key-{n}" for n in range(8)]
    answers: dict[str, list[httpx.Response]] = {key: [] for key in keys}
    lock = threading.Lock()

    def send(server: LiveServer, key: str) -> None:
        response = upload(server, f"the same bytes for {key}".encode(), key)
        with lock:
            answers[key].append(response)

    threads = [
        threading.Thread(target=send, args=(server, key)) for key in keys for server in servers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    rows = delivered_ids(minilake, replica_env)
    assert len(rows) == len(set(rows)) == len(keys), rows  # one record per key, none twice
    for key, responses in answers.items():
        assert len(responses) == 3
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {201, 409}, [r.text for r in responses]
        created = [r.json()["id"] for r in responses if r.status_code == 201]
        assert created and len(set(created)) == 1, key  # every 201 names the one record
        for response in responses:
            if response.status_code == 409:
                assert response.json()["error"] == "idempotency_key_in_progress"
    created_ids = {r.json()["id"] for rs in answers.values() for r in rs if r.status_code == 201}
    assert sorted(created_ids) == rows


def test_uploads_acknowledged_while_the_warehouse_is_down_survive_their_replica(
    replicas: Replicas, minilake: DatabricksWorkspace, replica_env: dict[str, str]
) -> None:
    """Replica A acknowledges uploads while the warehouse is stopped, then is killed and its
    disk removed. B and C serve every one of them by id at once, and once the warehouse is
    back each row reaches the table exactly once, client metadata included."""
    client = minilake.client()
    b, c = replicas.start("b"), replicas.start("c")
    a = replicas.start("a")
    client.warehouses.stop(minilake.warehouse_id).result()
    try:
        acknowledged = [upload(a, f"evidence {n}".encode(), name=f"memo-{n}.txt") for n in range(6)]
        assert [r.status_code for r in acknowledged] == [201] * 6, [r.text for r in acknowledged]
        records = [r.json() for r in acknowledged]
        replicas.kill_and_wipe(a, "a")
        by_id_while_down = [get(b, f"/api/v1/evidence/{ENGAGEMENT}/{r['id']}") for r in records]
    finally:
        client.warehouses.start(minilake.warehouse_id).result()

    ids = wait_for_rows(minilake, replica_env, len(records))
    listing = get(c, f"/api/v1/evidence/{ENGAGEMENT}?limit=100")
    content = get(c, f"/api/v1/evidence/{ENGAGEMENT}/{records[0]['id']}/content")
    time.sleep(2)  # a few more delivery passes: nothing arrives twice
    rows = table_rows(minilake, replica_env, ENGAGEMENT)

    assert [r.status_code for r in by_id_while_down] == [200] * len(records)
    assert [r.json() for r in by_id_while_down] == [stored_record(r) for r in records]
    assert ids == sorted(r["id"] for r in records)
    assert len(rows) == len(records)  # exactly once each
    assert sorted(json.loads(str(row[3]))["name"] for row in rows) == sorted(
        f"memo-{n}.txt" for n in range(6)
    )
    assert sorted(item["id"] for item in listing.json()["items"]) == ids
    assert content.content == b"evidence 0"
    assert get(b, "/api/v1/health").json()["details"]["pending_metadata_rows"] == 0


def test_every_replica_restarted_during_an_outage_delivers_each_row_once(
    replicas: Replicas, minilake: DatabricksWorkspace, replica_env: dict[str, str]
) -> None:
    """The warehouse is down for all replicas, every replica is restarted (two on a new
    disk), the warehouse comes back: every acknowledged row lands exactly once."""
    client = minilake.client()
    names = ("a", "b", "c")
    servers = {name: replicas.start(name) for name in names}
    client.warehouses.stop(minilake.warehouse_id).result()
    try:
        records = [
            upload(servers[name], f"{name} {n}".encode(), name=f"{name}-{n}.txt").json()
            for name in names
            for n in range(3)
        ]
        for name in names:
            servers[name].stop()
        replicas.kill_and_wipe(servers["b"], "b")
        replicas.kill_and_wipe(servers["c"], "c")
        restarted = [replicas.start(name, ready_path="/api/v1/health/live") for name in names]
    finally:
        client.warehouses.start(minilake.warehouse_id).result()

    ids = wait_for_rows(minilake, replica_env, len(records))
    time.sleep(2)
    rows = delivered_ids(minilake, replica_env)

    assert all("id" in record for record in records), records
    assert ids == rows == sorted(record["id"] for record in records)  # each exactly once
    assert all(server.process.poll() is None for server in restarted)


def test_load_across_replicas_through_an_outage_loses_and_doubles_nothing(
    replicas: Replicas, minilake: DatabricksWorkspace, replica_env: dict[str, str]
) -> None:
    """Clients spread uploads over three replicas; half carry an Idempotency-Key and are sent
    again to another replica (a retry after a lost answer). The warehouse stops in the middle
    and one replica is killed with its disk. Every acknowledged upload ends in the table
    exactly once, and every key names one record. Keys are claimed in a table, so while the
    warehouse is down an upload with a key is refused (503, nothing stored); one without a key
    is still taken."""
    client = minilake.client()
    servers = [replicas.start(name) for name in ("a", "b", "c")]
    acknowledged: dict[str, bytes] = {}  # id -> bytes
    keyed: dict[str, set[str]] = {}  # key -> ids answered for it
    refused: list[tuple[bool, int, str]] = []  # (keyed, status, error) of the rest
    lock = threading.Lock()

    def send(worker: int, rounds: int, alive: list[LiveServer]) -> None:
        for n in range(rounds):
            content = f"load {worker}-{n} {time.monotonic_ns()}".encode()
            key = f"load-{worker}-{n}-{content.hex()[-8:]}" if n % 2 else None
            targets = [alive[(worker + n) % len(alive)]]
            if key is not None:
                targets.append(alive[(worker + n + 1) % len(alive)])  # the retry
            for target in targets:
                response = upload(target, content, key, name=f"{worker}-{n}.txt")
                if response.status_code != 201:
                    with lock:
                        body = response.json()
                        error = body["error"] if "kmflow_claims" in body["detail"] else body
                        refused.append((key is not None, response.status_code, str(error)))
                    continue
                with lock:
                    acknowledged[response.json()["id"]] = content
                    if key is not None:
                        keyed.setdefault(key, set()).add(response.json()["id"])

    def load(alive: list[LiveServer], rounds: int) -> None:
        workers = [threading.Thread(target=send, args=(w, rounds, alive)) for w in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=300)

    load(servers, 4)
    client.warehouses.stop(minilake.warehouse_id).result()
    try:
        load(servers, 4)
        replicas.kill_and_wipe(servers[0], "a")
        load(servers[1:], 2)
    finally:
        client.warehouses.start(minilake.warehouse_id).result()

    ids = wait_for_rows(minilake, replica_env, len(acknowledged), timeout=120)
    time.sleep(2)
    rows = table_rows(minilake, replica_env, ENGAGEMENT)

    # 4 clients x 10 uploads, every other one with a key: the 12 keyed ones sent while the
    # warehouse was down refused at both replicas, the other 28 taken (a retry replays).
    assert not [r for r in refused if not r[0]], refused
    assert {(status, error) for _, status, error in refused} == {(503, "storage_unavailable")}
    assert len(refused) == 24 and len(acknowledged) == 28, refused
    assert sorted(str(row[0]) for row in rows) == sorted(acknowledged) == ids  # once each
    assert all(len(answered) == 1 for answered in keyed.values()), keyed
    sample = sorted(acknowledged)[::7]
    for evidence_id in sample:
        content = get(servers[1], f"/api/v1/evidence/{ENGAGEMENT}/{evidence_id}/content")
        assert content.content == acknowledged[evidence_id]
