"""TEST CODE ONLY: MiniLake at a real Databricks workspace's speed.

MiniLake answers every SQL statement and Files API call in milliseconds; a workspace does not,
and how kmflow behaves there (how many uploads share a commit, how long an upload waits, how a
queue builds up) depends on that. This ASGI wrapper sits outside the bridge,
`LatencyModel(MiniLakeBridge(minilake_app))`, and delays what a workspace would delay, with the
limits a workspace has; MiniLake still does the work. With `ZERO` (the tests' default) it is a
pure pass-through that only counts what it sees, by kind (that is how the benchmark knows how
many round trips an upload costs).

The default figures (`DEFAULT`), and where each comes from:

- `statement_seconds` 0.3: a statement on a warm, small serverless SQL warehouse takes a few
  hundred milliseconds from submission to answer, whatever it does.
- `commit_seconds` 1.0: a MERGE, INSERT, UPDATE or DELETE is a Delta commit (a Parquet file
  and a log entry written to cloud storage): about a second, often more. Commits to ONE table
  take turns: Delta's optimistic concurrency makes concurrent commits to a table conflict
  unless the table has row-level concurrency, so the honest model serialises them. Writes to
  different tables do not wait for each other.
- `warehouse_slots` 10: Databricks' documentation, "SQL warehouse sizing, scaling, and
  queuing behavior" (docs.databricks.com/aws/compute/sql-warehouse/warehouse-behavior): a pro
  or classic warehouse runs 10 concurrent queries per cluster and queues the rest. Serverless
  warehouses admit queries by predicted capacity and add clusters as the queue grows, so 10 is
  one cluster that has not scaled out. (The documented cap of 1,000 queued queries is not
  modelled.)
- `files_put_seconds` / `files_get_seconds` 0.08: a Files API PUT's acknowledgement and a
  GET's time to first byte (HEAD, DELETE and directory calls take `files_get_seconds` too).
- `files_bytes_per_second` 100 MB/s: an ASSUMPTION, not a measured figure: what one HTTPS
  stream to cloud object storage through the Files API carries. Configurable; None: unlimited.

The times are typical figures, not measurements of one workspace; a run changes them with
`Latency.scaled` or `dataclasses.replace` (e.g. commit 2 s, PUT 0.3 s).

Statements honour `wait_timeout` and `on_wait_timeout` as the Statement Execution API does:
a statement not done when its wait ends is answered PENDING (or RUNNING) under an id of the
model's own, runs on, and is polled, cancelled and paged through that id.

Counting is always on, with `ZERO` too: requests by kind (`classify`), statements by first SQL
keyword, the peak of statements running at once, and each commit's time window. A process of
its own reads and sets them over HTTP (`CONTROL_PATH`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from tests.datalake.minilake_bridge import (
    App,
    Message,
    Receive,
    Scope,
    Send,
    json_answer,
    read_body,
)

# For a model in another process (the benchmark's MiniLake): GET -> the profile and the counts;
# PUT a profile (`Latency.to_json()`) -> it applies from now on; DELETE CONTROL_PATH/counts ->
# the counts start again from zero. Each answers what GET does.
CONTROL_PATH = "/_latency"
_STATEMENTS = "/api/2.0/sql/statements"
_FILES = "/api/2.0/fs/files/"
_DIRECTORIES = "/api/2.0/fs/directories/"
_WRITES = ("MERGE", "INSERT", "UPDATE", "DELETE")
_UNFINISHED = ("PENDING", "RUNNING")


@dataclass(frozen=True)
class Latency:
    """How long a workspace takes; see the module docstring for where each figure comes from."""

    statement_seconds: float = 0.3  # any statement that is not a table write
    commit_seconds: float = 1.0  # a write: one Delta commit, one at a time per table
    warehouse_slots: int | None = 10  # statements running at once; None: no cap
    files_put_seconds: float = 0.08
    files_get_seconds: float = 0.08  # also HEAD, DELETE and directory calls
    files_bytes_per_second: float | None = 100e6  # assumed; None: unlimited

    def __post_init__(self) -> None:
        if isinstance(self.warehouse_slots, float):  # `--latency warehouse_slots=4` gives 4.0
            object.__setattr__(self, "warehouse_slots", int(self.warehouse_slots))
        times = (self.statement_seconds, self.commit_seconds, self.files_put_seconds,
                 self.files_get_seconds)  # fmt: skip
        if any(seconds < 0 for seconds in times):
            raise ValueError(f"negative time in {self}")
        if self.warehouse_slots is not None and self.warehouse_slots < 1:
            raise ValueError("warehouse_slots must be at least 1 (None: no cap)")
        if self.files_bytes_per_second is not None and self.files_bytes_per_second <= 0:
            raise ValueError("files_bytes_per_second must be positive (None: unlimited)")

    def scaled(self, factor: float) -> Latency:
        """Every time multiplied by `factor`, the bandwidth divided by it; slots as they are."""
        bandwidth = self.files_bytes_per_second
        return replace(
            self,
            statement_seconds=self.statement_seconds * factor,
            commit_seconds=self.commit_seconds * factor,
            files_put_seconds=self.files_put_seconds * factor,
            files_get_seconds=self.files_get_seconds * factor,
            files_bytes_per_second=None if bandwidth is None or factor == 0 else bandwidth / factor,
        )

    @property
    def files_instant(self) -> bool:
        """Files API calls pass straight through (no wrappers: they cost the emulator CPU)."""
        return (self.files_put_seconds, self.files_get_seconds) == (0, 0) and (
            self.files_bytes_per_second is None
        )

    @property
    def is_zero(self) -> bool:
        """No statement delay and no slot cap: statements pass straight through."""
        return (self.statement_seconds, self.commit_seconds, self.warehouse_slots) == (0, 0, None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> Latency:
        """A profile from `to_json`'s dict; fields it leaves out keep their defaults."""
        if not isinstance(data, dict):
            raise ValueError("a latency profile is a JSON object")
        unknown = set(data) - {item.name for item in fields(cls)}
        if unknown:
            raise ValueError(f"unknown latency field(s) {sorted(unknown)}")
        return cls(**data)


DEFAULT = Latency()
ZERO = Latency(0, 0, None, 0, 0, None)


def classify(method: str, path: str) -> str:
    """A request's kind, as the benchmark report names it."""
    if path.startswith(_FILES):
        return f"files {method}"
    if path.startswith(_DIRECTORIES):
        return f"directories {method}"
    if path == _STATEMENTS and method == "POST":
        return "sql execute"
    if path.startswith(_STATEMENTS + "/"):
        return "sql poll/cancel"
    if path.startswith("/api/2.0/sql/warehouses"):
        return "warehouses"
    if path.startswith("/api/2.1/unity-catalog/"):
        return "unity catalog"
    return "other"


_LEADING = re.compile(r"(?:\s+|--[^\n]*|/\*.*?\*/|\()*", re.S)  # `(SELECT ...) UNION ...` too
_NAME = r"(?:`[^`]*`|[\w$]+)(?:\s*\.\s*(?:`[^`]*`|[\w$]+))*"
_TARGETS = {
    "MERGE": re.compile(rf"MERGE\s+INTO\s+({_NAME})", re.I),
    "INSERT": re.compile(rf"INSERT\s+(?:INTO|OVERWRITE)\s+(?:TABLE\s+)?({_NAME})", re.I),
    "UPDATE": re.compile(rf"UPDATE\s+({_NAME})", re.I),
    "DELETE": re.compile(rf"DELETE\s+FROM\s+({_NAME})", re.I),
}


def _after_comments(sql: str) -> str:
    match = _LEADING.match(sql)
    return sql[match.end() :] if match else sql


def first_keyword(sql: str) -> str:
    """The statement's first word after whitespace and comments, upper-cased ('' if none)."""
    match = re.match(r"[A-Za-z]+", _after_comments(sql))
    return match.group(0).upper() if match else ""


def write_target(sql: str) -> str | None:
    """The table a write statement commits to, as written; None for statements that are not
    writes, '' for a write whose target this simple parser cannot read."""
    keyword = first_keyword(sql)
    if keyword not in _WRITES:
        return None
    match = _TARGETS[keyword].match(_after_comments(sql))
    return match.group(1) if match else ""


def _table_key(table: str) -> str:
    """`a`.`b`.`c` and a.b.c are one table, so they take one turn."""
    return re.sub(r"[`\s]", "", table).lower()


@dataclass
class _Answer:
    """An inner response, captured whole so it can be replayed or stored."""

    messages: list[Message] = field(default_factory=list)

    async def send(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return next((m["status"] for m in self.messages if m["type"] == "http.response.start"),
                    500)  # fmt: skip

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages
                        if m["type"] == "http.response.body")  # fmt: skip

    def json(self) -> dict[str, Any]:
        try:
            parsed = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}


@dataclass
class _Statement:
    """A statement answered PENDING/RUNNING under the model's own id, still running (or done)."""

    id: str
    task: asyncio.Task[None] | None = None
    holds_slot: bool = False
    forwarded: bool = False  # handed to the inner app: a cancel can no longer stop it
    canceled: bool = False
    answer: _Answer | None = None  # the inner app's answer, once there is one

    @property
    def inner_id(self) -> str | None:
        inner = self.answer.json().get("statement_id") if self.answer else None
        return inner if isinstance(inner, str) else None

    @property
    def inner_unfinished(self) -> bool:
        """The inner app itself answered PENDING/RUNNING (the bridge's stopped warehouse)."""
        status = self.answer.json().get("status") if self.answer else None
        return isinstance(status, dict) and status.get("state") in _UNFINISHED


class LatencyModel:
    """ASGI wrapper that makes `app` (MiniLake behind the bridge) answer at `latency`'s speed.

    `latency` may be replaced at any time, from any thread; statements already sleeping keep
    the times they started with, queued ones see the new slot count.
    """

    def __init__(self, app: App, latency: Latency = ZERO) -> None:
        self.app = app
        self._latency = latency
        self.statements: Counter[str] = Counter()  # by first SQL keyword
        self.requests: Counter[str] = Counter()  # by `classify`
        self.peak_running_statements = 0
        self.commits: list[tuple[str, float, float]] = []  # table, start, end (monotonic)
        self._running = 0  # statements holding a warehouse slot
        self._queue: deque[asyncio.Future[None]] = deque()  # statements waiting for a slot
        self._turns: dict[str, asyncio.Lock] = {}  # per table: one commit at a time
        self._async: dict[str, _Statement] = {}  # by the model's statement id
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def latency(self) -> Latency:
        return self._latency

    @latency.setter
    def latency(self, latency: Latency) -> None:
        self._latency = latency
        if self._loop is not None:  # more slots may have opened for queued statements
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing queued
                self._loop.call_soon_threadsafe(self._grant_slots)

    def reset_counts(self) -> None:
        """Start counting again; the peak starts from the statements running now."""
        self.statements.clear()
        self.requests.clear()
        self.commits.clear()
        self.peak_running_statements = self._running

    def report(self) -> dict[str, Any]:
        """What the control endpoint answers."""
        return {
            "latency": self.latency.to_json(),
            "statements": dict(self.statements),
            "requests": dict(self.requests),
            "peak_running_statements": self.peak_running_statements,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self._loop = asyncio.get_running_loop()
        method, path = scope["method"], scope["path"]
        if path == CONTROL_PATH or path.startswith(CONTROL_PATH + "/"):
            await self._control(method, path, receive, send)
            return
        self.requests[classify(method, path)] += 1
        latency = self.latency
        if method == "POST" and path == _STATEMENTS:
            await self._execute(scope, receive, send, latency)
        elif path.startswith(_STATEMENTS + "/") and (known := self._known(path)):
            await self._known_statement(known, scope, receive, send)
        elif path.startswith((_FILES, _DIRECTORIES)) and not latency.files_instant:
            await self._files_call(scope, receive, send, latency)
        else:
            await self.app(scope, receive, send)

    # -- statements --------------------------------------------------------------------------

    def _known(self, path: str) -> _Statement | None:
        """The statement a /statements/{id}... path names, if the id is the model's own."""
        return self._async.get(path.removeprefix(_STATEMENTS + "/").split("/")[0])

    async def _execute(self, scope: Scope, receive: Receive, send: Send, latency: Latency) -> None:
        arrived = time.monotonic()
        body = await read_body(receive)
        try:
            payload = json.loads(body)
            sql = payload["statement"]
        except (ValueError, TypeError, KeyError):
            sql = None
        if not isinstance(sql, str):  # not a statement the model can read: the inner app says so
            await self.app(scope, _replay(body), send)
            return
        self.statements[first_keyword(sql)] += 1
        table = write_target(sql)
        if latency.is_zero:
            await self._run(scope, body, table, latency, send, _Statement("pass-through"))
            return
        statement = _Statement(str(uuid.uuid4()))
        statement.task = asyncio.create_task(
            self._run_in_background(statement, scope, body, table, latency)
        )
        wait_timeout = _seconds(payload.get("wait_timeout", "10s"))
        wait = wait_timeout - (time.monotonic() - arrived)  # slot queueing included
        await asyncio.wait({statement.task}, timeout=max(wait, 0))
        if statement.answer is not None:  # ready in time: the inner answer, unchanged
            for message in statement.answer.messages:
                await send(message)
            return
        self._async[statement.id] = statement
        # As the API does: CANCEL applies only to a wait that was not 0 s.
        if payload.get("on_wait_timeout") == "CANCEL" and wait_timeout > 0:
            self._cancel(statement)
            statement.canceled = True  # what the answer says, even if it ran on too late
        await json_answer(send, 200, _status(statement))

    async def _run_in_background(
        self, statement: _Statement, scope: Scope, body: bytes, table: str | None, latency: Latency
    ) -> None:
        answer = _Answer()
        try:
            await self._run(scope, body, table, latency, answer.send, statement)
        except asyncio.CancelledError:
            statement.canceled = True
            return  # nobody awaits this task's result, so it need not re-raise
        except Exception as error:  # the poller gets it as a FAILED statement
            answer = _Answer()
            await json_answer(
                answer.send, 500, {"error_code": "INTERNAL_ERROR", "message": repr(error)}
            )
        statement.answer = answer

    async def _run(
        self,
        scope: Scope,
        body: bytes,
        table: str | None,
        latency: Latency,
        send: Send,
        statement: _Statement,
    ) -> None:
        """Queue for a slot, take the table's turn (writes), sleep, and only then hand the
        statement to the inner app: its effect shows at the end, like a commit's."""
        await self._take_slot()
        statement.holds_slot = True
        try:
            async with self._turn(table, latency):
                started = time.monotonic()
                delay = latency.commit_seconds if table is not None else latency.statement_seconds
                if delay:
                    await asyncio.sleep(delay)
                statement.forwarded = True
                await self.app(scope, _replay(body), send)
                if table is not None:
                    self.commits.append((table, started, time.monotonic()))
        finally:
            statement.holds_slot = False
            self._release_slot()

    @contextlib.asynccontextmanager
    async def _turn(self, table: str | None, latency: Latency) -> AsyncIterator[None]:
        if table is None or latency.is_zero:  # not a write, or a pass-through
            yield
            return
        async with self._turns.setdefault(_table_key(table), asyncio.Lock()):
            yield

    async def _known_statement(
        self, statement: _Statement, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Poll, cancel or result chunk of a statement answered under the model's id."""
        tail = scope["path"].removeprefix(f"{_STATEMENTS}/{statement.id}")
        if statement.inner_unfinished and not statement.canceled:
            await self._forward_as(statement, scope, receive, send)  # the inner id decides
        elif tail == "/cancel" and scope["method"] == "POST":
            await read_body(receive)
            self._cancel(statement)  # "Cancelation might silently fail": once forwarded, it does
            await json_answer(send, 200, {})
        elif tail == "" and scope["method"] == "GET":
            if statement.answer is None or statement.canceled:
                await json_answer(send, 200, _status(statement))
            else:
                await _final_answer(statement, statement.answer, send)
        elif statement.inner_id is not None:  # result chunks: the inner app has them
            await self._forward_as(statement, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _cancel(self, statement: _Statement) -> None:
        if not statement.forwarded and statement.task is not None:
            statement.canceled = True
            statement.task.cancel()

    async def _forward_as(
        self, statement: _Statement, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """The request under the inner statement id; the answer under the model's."""
        inner = statement.inner_id or statement.id
        path = scope["path"].replace(statement.id, inner, 1)
        answer = _Answer()
        await self.app({**scope, "path": path, "raw_path": path.encode()}, receive, answer.send)
        await _raw(send, answer.status, answer.body.replace(inner.encode(), statement.id.encode()))

    # -- warehouse slots: a FIFO queue whose size follows the current profile ------------------

    def _free_slot(self) -> bool:
        slots = self.latency.warehouse_slots
        return slots is None or self._running < slots

    def _occupy(self) -> None:
        self._running += 1
        self.peak_running_statements = max(self.peak_running_statements, self._running)

    async def _take_slot(self) -> None:
        if not self._queue and self._free_slot():
            self._occupy()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted as it was cancelled
                self._release_slot()
            elif waiter in self._queue:
                self._queue.remove(waiter)
            raise

    def _release_slot(self) -> None:
        self._running -= 1
        self._grant_slots()

    def _grant_slots(self) -> None:
        while self._queue and self._free_slot():
            waiter = self._queue.popleft()
            if not waiter.done():
                self._occupy()
                waiter.set_result(None)

    # -- Files API ----------------------------------------------------------------------------

    async def _files_call(
        self, scope: Scope, receive: Receive, send: Send, latency: Latency
    ) -> None:
        """PUT: acknowledged after `files_put_seconds` plus the body's transfer time; GET:
        first byte after `files_get_seconds`, then the body at the bandwidth; others: after
        `files_get_seconds`."""
        is_file = scope["path"].startswith(_FILES)
        put, get = is_file and scope["method"] == "PUT", is_file and scope["method"] == "GET"
        bandwidth = latency.files_bytes_per_second
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def slow_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if put:
                    await _sleep(latency.files_put_seconds + _transfer(received, bandwidth))
                else:
                    await _sleep(latency.files_get_seconds)
            elif message["type"] == "http.response.body" and get:
                await _sleep(_transfer(len(message.get("body", b"")), bandwidth))
            await send(message)

        await self.app(scope, counting_receive if put else receive, slow_send)

    # -- control ------------------------------------------------------------------------------

    async def _control(self, method: str, path: str, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        if (method, path) == ("PUT", CONTROL_PATH):
            try:
                self.latency = Latency.from_json(json.loads(body or b"null"))
            except (ValueError, TypeError) as error:
                await json_answer(send, 400, {"error": str(error)})
                return
        elif (method, path) == ("DELETE", CONTROL_PATH + "/counts"):
            self.reset_counts()
        elif (method, path) != ("GET", CONTROL_PATH):
            await json_answer(send, 404, {"error": f"no {method} {path}"})
            return
        await json_answer(send, 200, self.report())


def _status(statement: _Statement) -> dict[str, Any]:
    state = "RUNNING" if statement.holds_slot else "PENDING"
    if statement.canceled:
        state = "CANCELED"
    return {"statement_id": statement.id, "status": {"state": state}}


async def _final_answer(statement: _Statement, answer: _Answer, send: Send) -> None:
    """The inner answer under the model's id; an error the POST would have carried (HTTP 4xx/5xx)
    is, by the time of a poll, a FAILED statement."""
    inner = statement.inner_id
    if answer.status == 200 and inner is not None:
        await _raw(send, 200, answer.body.replace(inner.encode(), statement.id.encode()))
        return
    parsed = answer.json()
    error = {"error_code": parsed.get("error_code", "INTERNAL_ERROR"),
             "message": parsed.get("message", f"HTTP {answer.status}")}  # fmt: skip
    failed = {"statement_id": statement.id, "status": {"state": "FAILED", "error": error}}
    await json_answer(send, 200, failed)


def _seconds(wait_timeout: object) -> float:
    """'10s' -> 10.0; anything unreadable is the API's default, 10 s."""
    match = re.fullmatch(r"\s*(\d+)\s*s\s*", str(wait_timeout))
    return float(match.group(1)) if match else 10.0


def _transfer(size: int, bytes_per_second: float | None) -> float:
    return 0.0 if bytes_per_second is None else size / bytes_per_second


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


def _replay(body: bytes) -> Receive:
    """A receive() that gives the inner app a body this wrapper has already read."""
    messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


async def _raw(send: Send, status: int, raw: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})
