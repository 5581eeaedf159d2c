"""The latency model (MiniLake at a workspace's speed): properties only, never a speed bound.

Commits to one table take turns, the warehouse runs at most its slots at once, wait_timeout
and cancel behave as the Statement Execution API documents, Files API bytes arrive intact,
and every request is counted. Sleeps are scaled down so the file runs in seconds.
"""

# ruff: noqa: S608 - the SQL names the tables this file creates; no outside input reaches it

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

import httpx
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.catalog import VolumeType
from databricks.sdk.service.sql import (
    StatementParameterListItem,
    StatementResponse,
    StatementState,
)

from tests.datalake.latency_model import (
    DEFAULT,
    ZERO,
    Latency,
    LatencyModel,
    Message,
    Receive,
    Scope,
    Send,
    first_keyword,
    write_target,
)
from tests.datalake.workspace import DatabricksWorkspace

# The default profile at a fifth of its times: commit 0.2 s, statement 0.06 s.
FAST = DEFAULT.scaled(0.2)
UNFINISHED = (StatementState.PENDING, StatementState.RUNNING)
T = TypeVar("T")


@pytest.fixture
def model(databricks_workspace: DatabricksWorkspace) -> Iterator[LatencyModel]:
    """The session's model, counting from zero; ZERO again afterwards (MiniLake is shared)."""
    if databricks_workspace.latency is None:
        pytest.skip("the latency model wraps MiniLake; not run against a real workspace")
    model = databricks_workspace.latency
    model.reset_counts()
    yield model
    model.latency = ZERO
    model.reset_counts()


@pytest.fixture
def schema(databricks_workspace: DatabricksWorkspace) -> str:
    """A fresh schema with a `raw_evidence` volume; its name, unquoted."""
    name = f"latency_{uuid.uuid4().hex[:12]}"
    client = databricks_workspace.client()
    client.schemas.create(name=name, catalog_name=databricks_workspace.catalog)
    client.volumes.create(databricks_workspace.catalog, name, "raw_evidence", VolumeType.MANAGED)
    return name


def execute(
    workspace: DatabricksWorkspace,
    statement: str,
    wait: str = "30s",
    client: WorkspaceClient | None = None,
    **parameters: str | int,
) -> StatementResponse:
    """One statement through the SDK; a new client makes one request of its own ("other")."""
    items = [
        StatementParameterListItem(
            name=name, value=str(value), type="BIGINT" if isinstance(value, int) else "STRING"
        )
        for name, value in parameters.items()
    ]
    return (client or workspace.client()).statement_execution.execute_statement(
        statement=statement,
        warehouse_id=workspace.warehouse_id,
        parameters=items or None,
        wait_timeout=wait,
    )


def state(response: StatementResponse) -> StatementState | None:
    return response.status.state if response.status else None


def rows(response: StatementResponse) -> list[list[str | None]]:
    """The rows as a workspace gives them, every value a string (MiniLake gives numbers)."""
    assert state(response) is StatementState.SUCCEEDED, response.status
    data = (response.result.data_array if response.result else None) or []
    return [[None if value is None else str(value) for value in row] for row in data]


def finished(workspace: DatabricksWorkspace, statement_id: str) -> StatementResponse:
    """Poll until the statement ends (bounded only so a bug cannot hang the suite)."""
    client = workspace.client()
    for _ in range(3000):
        response = client.statement_execution.get_statement(statement_id)
        if state(response) not in UNFINISHED:
            return response
        time.sleep(0.01)
    raise AssertionError(f"statement {statement_id} never finished")


def all_at_once(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run `calls` on threads of their own, released together."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


# -- the profile and the SQL it reads, without a warehouse --------------------------------------


def test_profiles_scale_round_trip_and_refuse_nonsense() -> None:
    assert FAST.commit_seconds == pytest.approx(0.2)
    assert FAST.files_bytes_per_second == pytest.approx(500e6)
    assert FAST.warehouse_slots == DEFAULT.warehouse_slots
    assert Latency.from_json(json.loads(json.dumps(FAST.to_json()))) == FAST
    assert Latency.from_json({"commit_seconds": 2}) == replace(DEFAULT, commit_seconds=2)
    assert (
        ZERO.is_zero
        and not DEFAULT.is_zero
        and DEFAULT.scaled(0) == replace(ZERO, warehouse_slots=DEFAULT.warehouse_slots)
    )
    assert replace(DEFAULT, warehouse_slots=4.0).warehouse_slots == 4  # type: ignore[arg-type]
    for bad in ({"commit": 2}, {"warehouse_slots": 0}, {"statement_seconds": -1}, [1]):
        with pytest.raises(ValueError):
            Latency.from_json(bad)


def test_statements_are_read_by_first_keyword_and_write_target() -> None:
    merge = "  -- upsert\n/* rows */ merge INTO `a`.`b`.`c` AS t USING (SELECT 1) s ON t.id = s.id"
    assert first_keyword(merge) == "MERGE"
    assert write_target(merge) == "`a`.`b`.`c`"
    assert write_target("INSERT INTO a.b.c (id) VALUES ('x')") == "a.b.c"
    assert write_target("UPDATE `a`.b.`c` SET x = 1") == "`a`.b.`c`"
    assert write_target("DELETE FROM a.b.c WHERE id = 'x'") == "a.b.c"
    assert write_target("SELECT * FROM a.b.c") is None
    assert write_target("CREATE TABLE a.b.c (id STRING)") is None
    assert first_keyword("  ") == ""


# -- through the real SDK, against the session's MiniLake ---------------------------------------


def test_commits_to_one_table_take_turns_and_every_row_lands(
    databricks_workspace: DatabricksWorkspace, model: LatencyModel, schema: str
) -> None:
    workspace = databricks_workspace
    table = f"`{workspace.catalog}`.`{schema}`.`merged`"
    execute(workspace, f"CREATE TABLE IF NOT EXISTS {table} (id STRING, n BIGINT) USING DELTA")
    merge = (
        f"MERGE INTO {table} AS t USING (SELECT :id AS id, :n AS n) AS s ON t.id = s.id "
        "WHEN NOT MATCHED THEN INSERT (id, n) VALUES (s.id, s.n)"
    )
    model.latency = FAST
    answers = all_at_once(
        [lambda n=n: execute(workspace, merge, id=f"row-{n}", n=n) for n in range(6)]
    )

    assert all(state(answer) is StatementState.SUCCEEDED for answer in answers)
    assert model.peak_running_statements > 1  # they did run side by side...
    windows = sorted((start, end) for name, start, end in model.commits if name == table)
    assert len(windows) == 6
    assert not any(overlap(a, b) for a, b in itertools.pairwise(windows))  # ...but took turns
    stored = rows(execute(workspace, f"SELECT id, n FROM {table} ORDER BY n"))
    assert stored == [[f"row-{n}", str(n)] for n in range(6)]


def test_writes_to_different_tables_do_not_wait_for_each_other(
    databricks_workspace: DatabricksWorkspace, model: LatencyModel, schema: str
) -> None:
    workspace = databricks_workspace
    tables = [f"{workspace.catalog}.{schema}.left_t", f"{workspace.catalog}.{schema}.right_t"]
    for table in tables:
        execute(workspace, f"CREATE TABLE IF NOT EXISTS {table} (id STRING) USING DELTA")
    model.latency = FAST
    answers = all_at_once([
        lambda table=table, n=n: execute(workspace, f"INSERT INTO {table} (id) VALUES (:id)",
                                         id=f"{n}")
        for table in tables for n in range(2)
    ])  # fmt: skip

    assert all(state(answer) is StatementState.SUCCEEDED for answer in answers)
    left, right = ([(s, e) for name, s, e in model.commits if name == t] for t in tables)
    assert len(left) == len(right) == 2
    assert not overlap(*left) and not overlap(*right)
    assert any(overlap(a, b) for a in left for b in right)
    assert model.statements["INSERT"] == 4


def test_the_warehouse_runs_at_most_its_slots_at_once(
    databricks_workspace: DatabricksWorkspace, model: LatencyModel
) -> None:
    model.latency = replace(FAST, statement_seconds=0.1, warehouse_slots=2)
    answers = all_at_once([lambda: execute(databricks_workspace, "SELECT 1 AS one")] * 6)

    assert [rows(answer) for answer in answers] == [[["1"]]] * 6
    assert model.peak_running_statements == 2
    assert model.statements == {"SELECT": 6}


def test_a_zero_wait_answers_at_once_and_the_statement_is_polled_to_its_rows(
    databricks_workspace: DatabricksWorkspace, model: LatencyModel, schema: str
) -> None:
    workspace = databricks_workspace
    table = f"`{workspace.catalog}`.`{schema}`.`polled`"
    execute(workspace, f"CREATE TABLE IF NOT EXISTS {table} (id STRING) USING DELTA")
    execute(workspace, f"INSERT INTO {table} (id) VALUES ('only')")
    model.latency = FAST

    answer = execute(workspace, f"SELECT id FROM {table}", wait="0s")
    assert state(answer) in UNFINISHED
    assert answer.statement_id and answer.result is None
    polled = finished(workspace, answer.statement_id)
    assert polled.statement_id == answer.statement_id
    assert rows(polled) == [["only"]]
    assert model.requests["sql poll/cancel"] >= 1


def test_a_statement_canceled_while_queued_never_runs(
    databricks_workspace: DatabricksWorkspace, model: LatencyModel, schema: str
) -> None:
    workspace = databricks_workspace
    table = f"`{workspace.catalog}`.`{schema}`.`canceled`"
    execute(workspace, f"CREATE TABLE IF NOT EXISTS {table} (id STRING) USING DELTA")
    model.latency = replace(FAST, statement_seconds=0.3, warehouse_slots=1)

    blocker = execute(workspace, "SELECT 1 AS one", wait="0s")  # holds the only slot
    insert = execute(workspace, f"INSERT INTO {table} (id) VALUES ('never')", wait="0s")
    assert state(insert) is StatementState.PENDING and insert.statement_id
    workspace.client().statement_execution.cancel_execution(insert.statement_id)

    assert state(finished(workspace, insert.statement_id)) is StatementState.CANCELED
    assert blocker.statement_id and rows(finished(workspace, blocker.statement_id)) == [["1"]]
    # The queue is first come, first served: had the INSERT survived, it would run first.
    assert rows(execute(workspace, f"SELECT COUNT(*) FROM {table}")) == [["0"]]
    assert not [commit for commit in model.commits if commit[0] == table]


def test_requests_and_statements_are_counted_by_kind_and_read_over_http(
    databricks_workspace: DatabricksWorkspace, model: LatencyModel, schema: str
) -> None:
    workspace = databricks_workspace
    table = f"`{workspace.catalog}`.`{schema}`.`counted`"
    execute(workspace, f"CREATE TABLE IF NOT EXISTS {table} (id STRING) USING DELTA")
    volume = f"/Volumes/{workspace.catalog}/{schema}/raw_evidence"
    file_url = f"{workspace.host}/api/2.0/fs/files{volume}/a.bin"
    auth = {"Authorization": f"Bearer {workspace.token}"}
    client = workspace.client()
    model.reset_counts()

    httpx.put(file_url, content=b"evidence", headers=auth, timeout=30).raise_for_status()
    assert httpx.get(file_url, headers=auth, timeout=30).content == b"evidence"
    execute(workspace, f"SELECT COUNT(*) FROM {table}", client=client)
    merge = f"MERGE INTO {table} AS t USING (SELECT 'x' AS id) AS s ON t.id = s.id "
    execute(workspace, merge + "WHEN NOT MATCHED THEN INSERT (id) VALUES (s.id)", client=client)

    assert model.requests == {"files PUT": 1, "files GET": 1, "sql execute": 2}
    assert model.statements == {"SELECT": 1, "MERGE": 1}
    control = f"{workspace.host}/_latency"
    report = httpx.get(control, timeout=10).json()
    assert report["requests"] == {"files PUT": 1, "files GET": 1, "sql execute": 2}
    assert report["statements"] == {"SELECT": 1, "MERGE": 1}
    assert report["latency"] == ZERO.to_json() and report["peak_running_statements"] == 1

    answer = httpx.put(control, json=FAST.to_json(), timeout=10)
    assert answer.status_code == 200 and answer.json()["latency"] == FAST.to_json()
    assert model.latency == FAST
    assert httpx.put(control, json={"slots": 3}, timeout=10).status_code == 400
    assert model.latency == FAST

    cleared = httpx.delete(control + "/counts", timeout=10).json()
    assert cleared["requests"] == cleared["statements"] == {}
    assert not model.requests and not model.statements and not model.commits


def test_files_api_bytes_arrive_intact(
    databricks_workspace: DatabricksWorkspace, model: LatencyModel, schema: str
) -> None:
    workspace = databricks_workspace
    path = f"/Volumes/{workspace.catalog}/{schema}/raw_evidence/big.bin"
    data = os.urandom(300 * 1024)
    model.latency = replace(FAST, files_bytes_per_second=20e6)  # a body takes a few sleeps

    client = workspace.client()
    client.files.upload(path, io.BytesIO(data), overwrite=True)
    download = client.files.download(path).contents
    assert download is not None and download.read() == data
    assert model.requests["files PUT"] >= 1 and model.requests["files GET"] >= 1


# -- the model around a stand-in warehouse ------------------------------------------------------


class StandIn:
    """Answers statements at once (PENDING for SQL that says so, as the bridge does for a
    stopped warehouse) and records what reached it."""

    def __init__(self) -> None:
        self.executed: list[str] = []
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while (message := await receive())["type"] == "http.request":
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.paths.append(scope["path"])
        if scope["path"] == "/api/2.0/sql/statements":
            sql = json.loads(body)["statement"]
            self.executed.append(sql)
            state = "PENDING" if "stopped" in sql else "SUCCEEDED"
            answer: dict[str, Any] = {"statement_id": f"inner-{len(self.executed)}",
                                      "status": {"state": state}}  # fmt: skip
        else:
            statement_id = scope["path"].rsplit("/", 1)[-1]
            answer = {"statement_id": statement_id, "status": {"state": "PENDING"}}
        raw = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": raw})


def run_async(model: LatencyModel, scenario: Callable[[httpx.AsyncClient], Any]) -> Any:
    async def main() -> Any:
        transport = httpx.ASGITransport(app=model)
        async with httpx.AsyncClient(transport=transport, base_url="http://minilake") as client:
            return await scenario(client)

    return asyncio.run(main())


def statement(sql: str, wait: str, on_wait_timeout: str = "CONTINUE") -> dict[str, str]:
    return {"statement": sql, "warehouse_id": "w", "wait_timeout": wait,
            "on_wait_timeout": on_wait_timeout}  # fmt: skip


def test_a_wait_that_ends_with_cancel_cancels_a_queued_statement() -> None:
    stand_in = StandIn()
    model = LatencyModel(stand_in, replace(FAST, statement_seconds=1.2, warehouse_slots=1))

    async def scenario(client: httpx.AsyncClient) -> list[Message]:
        url = "/api/2.0/sql/statements"
        blocker = (await client.post(url, json=statement("SELECT 1", "0s"))).json()
        canceled = (await client.post(url, json=statement(
            "INSERT INTO a.b.c VALUES ('never')", "1s", "CANCEL"
        ))).json()  # fmt: skip
        polled = (await client.get(f"{url}/{canceled['statement_id']}")).json()
        # A new profile's times apply to statements that arrive after it.
        model.latency = replace(FAST, warehouse_slots=1)
        after = (await client.post(url, json=statement("SELECT 2", "10s"))).json()
        return [blocker, canceled, polled, after]

    blocker, canceled, polled, after = run_async(model, scenario)
    assert blocker["status"]["state"] in ("PENDING", "RUNNING")
    assert canceled["status"]["state"] == polled["status"]["state"] == "CANCELED"
    assert after["status"]["state"] == "SUCCEEDED"  # answered synchronously: inner id
    assert after["statement_id"].startswith("inner-")
    assert stand_in.executed == ["SELECT 1", "SELECT 2"]
    assert model.statements == {"SELECT": 2, "INSERT": 1}


def test_an_inner_statement_still_pending_is_polled_through_the_model_id() -> None:
    stand_in = StandIn()
    model = LatencyModel(stand_in, FAST)

    async def scenario(client: httpx.AsyncClient) -> tuple[Message, Message]:
        url = "/api/2.0/sql/statements"
        answer = (await client.post(url, json=statement("SELECT 'stopped'", "0s"))).json()
        for _ in range(1000):
            await asyncio.sleep(0.01)
            polled = (await client.get(f"{url}/{answer['statement_id']}")).json()
            if stand_in.paths[1:]:  # the model handed the poll to the inner app
                return answer, polled
        raise AssertionError("the poll never reached the inner app")

    answer, polled = run_async(model, scenario)
    assert polled == {"statement_id": answer["statement_id"], "status": {"state": "PENDING"}}
    assert stand_in.paths == ["/api/2.0/sql/statements", "/api/2.0/sql/statements/inner-1"]
    assert model.requests["sql execute"] == 1 and model.statements == {"SELECT": 1}
