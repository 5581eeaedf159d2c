"""The Databricks path when its peer fails: MiniLake behind the test bridge's fault injection
(tests/datalake/minilake_bridge.py `add_fault`), through the real API and the real SDK.

- Volume down (every Files API and volume call answers 503): an upload answers 503 with an
  error naming the Files API, within the configured retry budget, and stores nothing (Volume,
  table, outbox queue, staging); health says the Volume is unreachable; when the Volume is back,
  health and uploads recover without a restart, and the failed upload's outbox entry (kept to
  withdraw whatever it may have left in the Volume) is cleared by then too.
- 429/503 bursts on the calls an upload, a listing and a download make are retried by the SDK:
  every request succeeds and every row reaches the table once.
- A slow peer (every Files API upload stalls): the upload fails cleanly with 503 after the
  configured per-request timeout and retry budget, not before and not much later, and stores
  nothing, not even once the stalled requests reach the peer.

The warehouse's faults (stopped, statements pending) are covered in
tests/datalake/test_databricks_backend.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.storage.databricks.backend import DatabricksBackend
from app.storage.write_intents import open_intents
from tests.conftest import API_KEY, AUTH, ClientFactory
from tests.datalake.inspect import table_rows
from tests.datalake.minilake_bridge import MiniLakeBridge
from tests.datalake.workspace import DatabricksWorkspace
from tests.reliability.observe import staging_leftovers, stored_paths

pytestmark = pytest.mark.parametrize("backend_name", ["databricks"])

FILES_API = r"^/api/2\.0/fs/"
VOLUMES_API = r"^/api/2\.1/unity-catalog/volumes"
STATEMENTS = r"^/api/2\.0/sql/statements"
# Short budgets so an outage is declared quickly: the SDK's per-request timeout and its retry
# budget for 429/503, timeouts and connection errors (DATABRICKS_HTTP_TIMEOUT_SECONDS,
# DATABRICKS_RETRY_TIMEOUT_SECONDS).
HTTP_TIMEOUT_SECONDS = 1
RETRY_TIMEOUT_SECONDS = 2
FOREVER = 1_000_000


@pytest.fixture
def api(make_client: ClientFactory) -> TestClient:
    client = make_client(
        api_keys=API_KEY,
        databricks_http_timeout_seconds=HTTP_TIMEOUT_SECONDS,
        databricks_retry_timeout_seconds=RETRY_TIMEOUT_SECONDS,
    )
    client.headers.update(AUTH)
    return client


def upload(client: TestClient, engagement_id: str, content: bytes) -> httpx.Response:
    return client.post(
        "/api/v1/evidence/upload",
        data={"engagement_id": engagement_id},
        files={"file": ("evidence.bin", content)},
    )


def backend_of(client: TestClient) -> DatabricksBackend:
    storage: DatabricksBackend = client.app_state["storage"]
    return storage


def assert_nothing_stored(
    client: TestClient,
    env: dict[str, str],
    workspace: DatabricksWorkspace,
    engagement_id: str,
    kept: list[str],
    *,
    volume_down: bool = False,
) -> None:
    """Nothing of `engagement_id` in the Volume, the table, the outbox queue or staging;
    `kept` are the Volume files stored before. While the Volume is down, the failed upload's
    write intent waits to remove whatever part of its file the Volume kept
    (`test_a_failed_upload_leaves_no_write_intent_once_the_volume_is_back`)."""
    assert stored_paths(env, workspace) == kept
    assert table_rows(workspace, env, engagement_id) == []
    assert backend_of(client).rows_waiting() == 0
    assert client.get(f"/api/v1/evidence/{engagement_id}").json()["items"] == []
    leftovers = staging_leftovers(env)
    if volume_down:
        assert len([p for p in leftovers if p.startswith("intents/")]) == 1, leftovers
        leftovers = [p for p in leftovers if not p.startswith("intents/")]
    assert leftovers == []


def test_volume_down_is_a_clear_503_that_stores_nothing_and_recovers_by_itself(
    api: TestClient,
    bridge: MiniLakeBridge,
    backend_env: dict[str, str],
    databricks_workspace: DatabricksWorkspace,
) -> None:
    before = upload(api, "ENG-BEFORE", b"before the outage")
    assert before.status_code == 201, before.text
    for path in (FILES_API, VOLUMES_API):
        bridge.add_fault(path, 503, times=FOREVER)

    started = time.monotonic()
    down = upload(api, "ENG-OUTAGE", b"during the outage")
    took = time.monotonic() - started
    health_down = api.get("/api/v1/health")
    bridge.faults.clear()

    assert down.status_code == 503, down.text
    assert down.json()["error"] == "storage_unavailable"
    assert "Databricks Files API unavailable" in down.json()["detail"]
    # The upload's retry budget, then the same again to withdraw what it may have left.
    assert took < 2 * (RETRY_TIMEOUT_SECONDS + HTTP_TIMEOUT_SECONDS) + 3, took
    assert health_down.status_code == 503
    assert health_down.json()["details"]["volume_reachable"] is False
    assert_nothing_stored(
        api,
        backend_env,
        databricks_workspace,
        "ENG-OUTAGE",
        [before.json()["volume_path"]],
        volume_down=True,
    )

    # Back, without a restart.
    assert api.get("/api/v1/health").status_code == 200
    after = upload(api, "ENG-OUTAGE", b"after the outage")
    assert after.status_code == 201, after.text
    listed = api.get("/api/v1/evidence/ENG-OUTAGE").json()["items"]
    assert [item["id"] for item in listed] == [after.json()["id"]]
    content = api.get(f"/api/v1/evidence/ENG-OUTAGE/{after.json()['id']}/content").content
    assert content == b"after the outage"


def test_a_failed_upload_leaves_no_write_intent_once_the_volume_is_back(
    api: TestClient, bridge: MiniLakeBridge, backend_env: dict[str, str]
) -> None:
    for path in (FILES_API, VOLUMES_API):
        bridge.add_fault(path, 503, times=FOREVER)
    down = upload(api, "ENG-WITHDRAW", b"during the outage")
    bridge.faults.clear()
    assert down.status_code == 503

    state = Path(backend_env["STATE_PATH"])
    deadline = time.monotonic() + 5  # 10 rounds of DATABRICKS_OUTBOX_RETRY_SECONDS
    while open_intents(state) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_intents(state) == []


def test_429_and_503_bursts_are_retried_on_every_call(
    api: TestClient,
    bridge: MiniLakeBridge,
    backend_env: dict[str, str],
    databricks_workspace: DatabricksWorkspace,
) -> None:
    contents = [b"burst %d" % n for n in range(3)]
    bridge.add_fault(FILES_API, 429, method="PUT", times=2)
    bridge.add_fault(FILES_API, 503, method="GET", times=2)
    bridge.add_fault(STATEMENTS, 503, method="POST", times=2)
    bridge.add_fault(STATEMENTS, 429, method="POST", times=1)

    records = [upload(api, "ENG-BURST", content) for content in contents]
    listing = api.get("/api/v1/evidence/ENG-BURST")
    downloads = [
        api.get(f"/api/v1/evidence/ENG-BURST/{r.json()['id']}/content").content for r in records
    ]

    assert [r.status_code for r in records] == [201] * 3, [r.text for r in records]
    assert listing.status_code == 200, listing.text
    assert downloads == contents
    assert all(fault.times == 0 for fault in bridge.faults)  # every burst was met and retried
    rows = table_rows(databricks_workspace, backend_env, "ENG-BURST")
    assert sorted(row[0] for row in rows) == sorted(r.json()["id"] for r in records)


def test_a_slow_volume_times_out_cleanly_at_the_configured_limit(
    api: TestClient,
    bridge: MiniLakeBridge,
    backend_env: dict[str, str],
    databricks_workspace: DatabricksWorkspace,
) -> None:
    stall = HTTP_TIMEOUT_SECONDS + RETRY_TIMEOUT_SECONDS + 1  # longer than kmflow will wait
    bridge.add_fault(FILES_API, None, method="PUT", times=FOREVER, delay=stall)

    started = time.monotonic()
    slow = upload(api, "ENG-SLOW", b"never arrives")
    took = time.monotonic() - started
    bridge.faults.clear()

    assert slow.status_code == 503, slow.text
    assert slow.json()["error"] == "storage_unavailable"
    # At least one whole per-request timeout was waited, and not much more than the budget.
    assert HTTP_TIMEOUT_SECONDS <= took < HTTP_TIMEOUT_SECONDS + RETRY_TIMEOUT_SECONDS + 3, took
    time.sleep(stall)  # the stalled requests reach MiniLake now, their clients long gone
    assert_nothing_stored(api, backend_env, databricks_workspace, "ENG-SLOW", [])
    assert upload(api, "ENG-SLOW", b"fast again").status_code == 201
