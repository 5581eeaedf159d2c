"""TEST CODE ONLY: the one place where MiniLake is made to behave like real Databricks.

MiniLake (minilake 1.9.0) is the real HTTP peer of kmflow's Databricks tests, but it lacks some
Databricks behaviour kmflow relies on (checked with databricks-sdk 0.162; its speed is the
latency model's business, `latency_model.py`). This ASGI wrapper adds exactly those, and
nothing in `app/` knows about it:

- Statement `parameters` are bound into typed, escaped literals (MiniLake drops them); more
  than 255 in one statement are refused as a warehouse refuses them ("BAD_REQUEST:
  Parameterized query has too many parameters: N parameters were given but the limit is 256";
  256 itself is reported to fail, see `app.storage.databricks_sql.MAX_STATEMENT_PARAMETERS`);
  MiniLake takes any number.
- SQL errors answer HTTP 200 with `status.state = FAILED` (MiniLake answers HTTP 400).
- A statement on a STOPPED warehouse stays PENDING (MiniLake runs it anyway).
- Files API calls under a volume that was never created answer 404 RESOURCE_DOES_NOT_EXIST
  (MiniLake writes anywhere); volumes listed in `deny_writes` answer 403 PERMISSION_DENIED on
  writes (MiniLake records grants but does not enforce them).
- Injected faults (`add_fault`): a JSON 429/503 or a delay, for paths matching a pattern
  (and, for statements, SQL text matching one), or a statement that ends FAILED.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_STATEMENTS = "/api/2.0/sql/statements"
_VOLUME_PATH = re.compile(r"^/api/2\.0/fs/(?:files|directories)/Volumes/([^/]+)/([^/]+)/([^/]+)")
_INTEGER_TYPES = {"TINYINT", "SMALLINT", "INT", "INTEGER", "BIGINT", "LONG"}
MAX_PARAMETERS = 255  # more fail; see the module docstring
FAILED = 0  # a Fault status: the statement is accepted, then ends FAILED (HTTP 200)


@dataclass
class Fault:
    path: re.Pattern[str]
    method: str | None
    status: int | None  # None: only delay; FAILED: a statement that ends FAILED
    times: int
    delay: float = 0.0
    statement: re.Pattern[str] | None = None  # statements only: SQL text to match


def sql_literal(value: str | None, type_name: str | None) -> str:
    """A parameter as the DuckDB literal Databricks would bind it to."""
    kind = (type_name or "STRING").upper()
    if value is None:
        return "NULL"
    if kind in _INTEGER_TYPES:
        return str(int(value))
    if kind != "STRING":
        raise ValueError(f"the bridge binds STRING and integer parameters only, not {kind}")
    return "'" + value.replace("'", "''") + "'"


def bind_parameters(sql: str, parameters: list[dict[str, Any]]) -> str:
    """Replace `:name` markers outside quotes and comments; `::` casts stay as they are."""
    values = {p["name"]: sql_literal(p.get("value"), p.get("type")) for p in parameters}
    token = re.compile(r"'(?:[^']|'')*'|`[^`]*`|\"[^\"]*\"|--[^\n]*|::|:([A-Za-z_][A-Za-z0-9_]*)")

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)
        if name not in values:
            raise KeyError(name)
        return values[name]

    return token.sub(replace, sql)


class MiniLakeBridge:
    def __init__(self, app: App) -> None:
        self.app = app
        self.deny_writes: set[str] = set()
        self.faults: list[Fault] = []
        self.statements: list[dict[str, Any]] = []  # as received, before binding
        self._pending: set[str] = set()

    def add_fault(
        self,
        path: str,
        status: int | None = 503,
        *,
        method: str | None = None,
        times: int = 1,
        delay: float = 0.0,
        statement: str | None = None,
    ) -> None:
        pattern = re.compile(statement) if statement is not None else None
        self.faults.append(Fault(re.compile(path), method, status, times, delay, pattern))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if await self._injected_fault(method, path, receive, send):
            return
        if method == "POST" and path == _STATEMENTS:
            await self._execute_statement(scope, receive, send)
        elif method == "GET" and path.removeprefix(_STATEMENTS + "/") in self._pending:
            statement_id = path.removeprefix(_STATEMENTS + "/")
            await json_answer(
                send, 200, {"statement_id": statement_id, "status": {"state": "PENDING"}}
            )
        elif method == "POST" and path.endswith("/cancel") and path.startswith(_STATEMENTS):
            self._pending.discard(path.removeprefix(_STATEMENTS + "/").removesuffix("/cancel"))
            await json_answer(send, 200, {})
        elif match := _VOLUME_PATH.match(path):
            await self._files_call(scope, receive, send, ".".join(match.groups()))
        else:
            await self.app(scope, receive, send)

    async def _injected_fault(self, method: str, path: str, receive: Receive, send: Send) -> bool:
        for fault in self.faults:
            if fault.statement is not None:
                continue  # matched against the SQL text in `_execute_statement`
            if fault.times and fault.path.search(path) and fault.method in (None, method):
                if fault.status is not None:  # answered here: the request goes no further
                    await read_body(receive)
                return await _answer_fault(fault, send)
        return False

    async def _execute_statement(self, scope: Scope, receive: Receive, send: Send) -> None:
        payload = json.loads(await read_body(receive) or b"{}")
        self.statements.append(json.loads(json.dumps(payload)))
        if await self._statement_fault(payload.get("statement", ""), send):
            return
        count = len(payload.get("parameters") or [])
        if count > MAX_PARAMETERS:
            await json_answer(send, 400, {"error_code": "BAD_REQUEST", "message": (
                f"Parameterized query has too many parameters: {count} parameters were given "
                "but the limit is 256."
            )})  # fmt: skip
            return
        try:
            payload["statement"] = bind_parameters(
                payload["statement"], payload.pop("parameters", None) or []
            )
        except KeyError as missing:
            await json_answer(send, 400, {"error_code": "INVALID_PARAMETER_VALUE",
                                    "message": f"[UNBOUND_SQL_PARAMETER] {missing}"})  # fmt: skip
            return
        warehouse = await self._get(f"/api/2.0/sql/warehouses/{payload.get('warehouse_id')}")
        if warehouse[1].get("state") == "STOPPED":
            statement_id = str(uuid.uuid4())
            self._pending.add(statement_id)
            await json_answer(
                send, 200, {"statement_id": statement_id, "status": {"state": "PENDING"}}
            )
            return
        status, answer = await self._call("POST", _STATEMENTS, json.dumps(payload).encode())
        if status == 400 and str(answer.get("message", "")).startswith("SQL execution failed"):
            status, answer = 200, {
                "statement_id": str(uuid.uuid4()),
                "status": {"state": "FAILED", "sql_state": "42000",
                           "error": {"error_code": "BAD_REQUEST", "message": answer["message"]}},
            }  # fmt: skip
        await json_answer(send, status, answer)

    async def _statement_fault(self, sql: str, send: Send) -> bool:
        for fault in self.faults:
            if fault.times and fault.statement is not None and fault.statement.search(sql):
                return await _answer_fault(fault, send)
        return False

    async def _files_call(self, scope: Scope, receive: Receive, send: Send, volume: str) -> None:
        status, _ = await self._get(f"/api/2.1/unity-catalog/volumes/{volume}")
        if status == 404:
            await read_body(receive)
            await json_answer(send, 404, {"error_code": "RESOURCE_DOES_NOT_EXIST",
                                    "message": f"Volume '{volume}' does not exist."})  # fmt: skip
            return
        if volume in self.deny_writes and scope["method"] in ("PUT", "POST", "DELETE"):
            await read_body(receive)
            message = f"User does not have WRITE VOLUME on {volume}."
            await json_answer(send, 403, {"error_code": "PERMISSION_DENIED", "message": message})
            return
        await self.app(scope, receive, send)

    async def _get(self, path: str) -> tuple[int, dict[str, Any]]:
        return await self._call("GET", path, b"")

    async def _call(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """A request to MiniLake itself, in-process, for state the bridge needs to look at."""
        scope: Scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
        }  # fmt: skip
        sent = False
        answer: dict[str, Any] = {"status": 500, "body": b""}

        async def receive() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")

        await self.app(scope, receive, capture)
        try:
            parsed = json.loads(answer["body"] or b"{}")
        except json.JSONDecodeError:
            parsed = {}
        return answer["status"], parsed if isinstance(parsed, dict) else {}


async def _answer_fault(fault: Fault, send: Send) -> bool:
    """Play one occurrence of `fault`; False if it only delays (the request then goes on)."""
    fault.times -= 1
    if fault.delay:
        await asyncio.sleep(fault.delay)
    if fault.status is None:
        return False
    if fault.status == FAILED:
        await json_answer(send, 200, {
            "statement_id": str(uuid.uuid4()),
            "status": {"state": "FAILED",
                       "error": {"error_code": "INTERNAL_ERROR", "message": "injected failure"}},
        })  # fmt: skip
        return True
    code = {429: "TOO_MANY_REQUESTS", 503: "TEMPORARILY_UNAVAILABLE"}
    await json_answer(
        send, fault.status,
        {"error_code": code.get(fault.status, "INTERNAL_ERROR"),
         "message": f"injected {fault.status}"},
        headers=[(b"retry-after", b"0")],
    )  # fmt: skip
    return True


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def json_answer(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    raw = json.dumps(body).encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(raw)).encode()), *(headers or [])],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": raw})
