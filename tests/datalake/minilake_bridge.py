"""TEST CODE ONLY: the one place where MiniLake is made to behave like real Databricks.

MiniLake (minilake 1.9.0) is the real HTTP peer of kmflow's Databricks tests, but it lacks some
Databricks behaviour kmflow relies on (checked with databricks-sdk 0.162; its speed is the
latency model's business, `latency_model.py`). This ASGI wrapper adds exactly those, and
nothing in `app/` knows about it:

- Statement `parameters` are bound into typed, escaped literals (MiniLake drops them); more
  than 255 in one statement are refused as a warehouse refuses them ("BAD_REQUEST:
  Parameterized query has too many parameters: N parameters were given but the limit is 256";
  256 itself is reported to fail, see `app.storage.databricks.sql.MAX_STATEMENT_PARAMETERS`);
  MiniLake takes any number.
- SQL errors answer HTTP 200 with `status.state = FAILED` (MiniLake answers HTTP 400).
- A statement on a STOPPED warehouse stays PENDING (MiniLake runs it anyway).
- INLINE results over 25 MiB fail as on Databricks; smaller ones come in chunks of 5,000 rows
  (MiniLake answers any size in one piece).
- Presigned URL requests (`create-download-url`, `create-upload-part-urls`) answer as in a
  workspace that disabled them, so every SDK version falls back to the Files API (MiniLake
  answers "not implemented", which older SDKs do not fall back from).
- Files API calls under a volume that was never created answer 404 RESOURCE_DOES_NOT_EXIST
  (MiniLake writes anywhere); volumes listed in `deny_writes` answer 403 PERMISSION_DENIED on
  writes (MiniLake records grants but does not enforce them).
- Delta table maintenance and history (`DeltaTables`), which DuckDB has no notion of:
  `REORG TABLE ... APPLY (PURGE)`, `VACUUM ... RETAIN n HOURS` (refused, as Delta's safety
  check refuses it, below the table's `delta.deletedFileRetentionDuration`, 7 days unless
  set), `ALTER TABLE ... SET/UNSET TBLPROPERTIES`, `SHOW TBLPROPERTIES`, `DESCRIBE HISTORY`
  (a version per write), and `delta.appendOnly` from a CREATE TABLE's TBLPROPERTIES: a
  DELETE or UPDATE of such a table fails as on Databricks. Each is recorded in `maintenance`.
- Injected faults (`add_fault`): a JSON 429/503 or a delay, for paths matching a pattern
  (and, for statements, SQL text matching one), or a statement that ends FAILED.
- OAuth M2M (MiniLake has no OAuth endpoints and ignores Authorization), as databricks-sdk
  0.162 uses it against a workspace host with `auth_type="oauth-m2m"`: `Config()` first reads
  `GET {host}/.well-known/databricks-config` and takes `oidc_endpoint` + the well-known suffix
  as its `discovery_url` (`config.py` `_resolve_host_metadata`, `oauth.py` `get_host_metadata`;
  without it `databricks_oidc_endpoints` has no URL and oauth-m2m fails), then
  `GET {host}/oidc/.well-known/oauth-authorization-server` for `token_endpoint`
  (`credentials_provider.py` `oauth_service_principal`, `oauth.py` `get_endpoints_from_url`),
  then on its first request `POST {token_endpoint}`, form body `grant_type=client_credentials`
  and `scope=all-apis`, the client id and secret as HTTP basic auth (`oauth.ClientCredentials`,
  `use_header=True`; `retrieve_token` also supports them as form fields, so both are taken).
  A refused client gets 401 `{"error": "invalid_client", ...}`, which `retrieve_token` turns
  into `ValueError("invalid_client: ...")`. The metadata's shape is the Databricks CLI test
  server's (databricks/cli `libs/testserver/server.go`: `oidc_endpoint` = host + `/oidc`, a
  `workspace_id`). Clients are registered with `add_oauth_client`; requests bearing a token
  issued to one are counted per client in `oauth_requests`.

One gap is closed before MiniLake starts rather than in this wrapper (`minilake_environment`):
a warehouse keeps a statement's result for as long as its chunks may be fetched, while MiniLake
keeps its last `MINILAKE_STATEMENT_CACHE_SIZE` (500) statements and, on crossing that cap,
empties the results of every older one still holding rows, including statements answered an
instant before whose EXTERNAL_LINKS chunks are still to be fetched: those chunks then read as
empty. A listing page (EXTERNAL_LINKS) came back empty that way in a long test session.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import tempfile
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# Statements whose results MiniLake keeps: more than any test session or benchmark runs.
STATEMENT_RESULTS_KEPT = 10_000_000


def minilake_environment(data_dir: Path) -> None:
    """Settings MiniLake reads when `minilake.app` is first imported, so call this before: its
    data under `data_dir`, no notebook or Spark, and no statement results thrown away."""
    os.environ["MINILAKE_DATA_DIR"] = str(data_dir.resolve())
    os.environ["MINILAKE_NOTEBOOK"] = "0"
    os.environ["MINILAKE_SPARK_PREWARM"] = "0"
    os.environ["MINILAKE_DUCKDB_EXTENSION_DIR"] = tempfile.mkdtemp(dir=data_dir)
    os.environ["MINILAKE_STATEMENT_CACHE_SIZE"] = str(STATEMENT_RESULTS_KEPT)


_STATEMENTS = "/api/2.0/sql/statements"
_CHUNK_PATH = re.compile(r"/api/2\.0/sql/statements/([^/]+)/result/chunks/(\d+)")
_VOLUME_PATH = re.compile(r"^/api/2\.0/fs/(?:files|directories)/Volumes/([^/]+)/([^/]+)/([^/]+)")
_INTEGER_TYPES = {"TINYINT", "SMALLINT", "INT", "INTEGER", "BIGINT", "LONG"}
# Presigned (cloud storage) URLs for the Files API: MiniLake answers "not implemented", which no
# SDK handles. The bridge answers as a workspace whose admin has them disabled: 403 with the
# ErrorInfo reason the SDK checks (`_is_presigned_urls_disabled_error`, databricks-sdk 0.72
# `mixins/files.py`), after which the SDK falls back to plain Files API calls.
_PRESIGNED_URL_CALLS = {
    "/api/2.0/fs/create-download-url",
    "/api/2.0/fs/create-upload-part-urls",
    "/api/2.0/fs/create-abort-upload-url",
}
_PRESIGNED_URLS_DISABLED = {
    "error_code": "PERMISSION_DENIED",
    "message": "Presigned URLs are disabled in this workspace.",
    "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                 "reason": "FILES_API_API_IS_NOT_ENABLED", "domain": "filesystem.databricks.com"}],
}  # fmt: skip
_HOST_METADATA = "/.well-known/databricks-config"
_OIDC_DISCOVERY = "/oidc/.well-known/oauth-authorization-server"
_OIDC_TOKEN = "/oidc/v1/token"
OAUTH_TOKEN_SECONDS = 3600
# A fault's `statement` pattern for the MERGEs into evidence_metadata (not kmflow_claims).
METADATA_MERGE = r"^MERGE INTO \S+`evidence_metadata`"
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
    landed: bool = False  # the request is carried out first; only its answer is lost
    retry_after: int = 0  # seconds, in the Retry-After header of a 429/503
    sql_state: str = ""  # FAILED: the statement's SQLSTATE
    message: str = "injected failure"  # FAILED: its error message


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


_TABLE_NAME = r"((?:`[^`]*`|[\w$]+)(?:\.(?:`[^`]*`|[\w$]+))*)"
_REORG = re.compile(rf"^\s*REORG\s+TABLE\s+{_TABLE_NAME}\s+APPLY\s*\(\s*PURGE\s*\)\s*$", re.I)
_VACUUM = re.compile(rf"^\s*VACUUM\s+{_TABLE_NAME}(?:\s+RETAIN\s+(\d+)\s+HOURS)?\s*$", re.I)
_SET_PROPERTIES = re.compile(
    rf"^\s*ALTER\s+TABLE\s+{_TABLE_NAME}\s+SET\s+TBLPROPERTIES\s*\((.*)\)\s*$", re.I | re.S
)
_UNSET_PROPERTIES = re.compile(
    rf"^\s*ALTER\s+TABLE\s+{_TABLE_NAME}\s+UNSET\s+TBLPROPERTIES\s*\((.*)\)\s*$", re.I | re.S
)
_SHOW_PROPERTIES = re.compile(
    rf"^\s*SHOW\s+TBLPROPERTIES\s+{_TABLE_NAME}\s*\(\s*'([^']+)'\s*\)\s*$", re.I
)
_HISTORY = re.compile(rf"^\s*DESCRIBE\s+HISTORY\s+{_TABLE_NAME}(?:\s+LIMIT\s+\d+)?\s*$", re.I)
_CREATE = re.compile(rf"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_TABLE_NAME}", re.I)
_WRITE = re.compile(
    rf"^\s*(?:MERGE\s+INTO|INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+{_TABLE_NAME}", re.I
)
_PROPERTY = re.compile(r"'([^']+)'\s*(?:=\s*'([^']*)')?")
_RETENTION = re.compile(r"interval\s+(\d+)\s+(second|minute|hour|day|week)s?", re.I)
_HOURS_PER = {"second": 1 / 3600, "minute": 1 / 60, "hour": 1, "day": 24, "week": 168}


def _table(name: str) -> str:
    return name.replace("`", "").lower()


class DeltaTables:
    """What the bridge emulates of Delta tables (see the module docstring): their properties,
    a version count, and the maintenance statements, answered here instead of by DuckDB."""

    def __init__(self) -> None:
        self.properties: dict[str, dict[str, str]] = {}
        self.versions: dict[str, int] = {}
        self.maintenance: list[tuple[str, str]] = []  # (statement kind, table), in order

    def answer(self, sql: str) -> tuple[list[list[Any]], str | None] | None:
        """(rows, error message or None) for a statement emulated here; None for others."""
        if match := _REORG.match(sql):
            return self._done("REORG", match[1])
        if match := _VACUUM.match(sql):
            table = _table(match[1])
            retain = float(match[2]) if match[2] is not None else 168.0
            configured = self.properties.get(table, {}).get("delta.deletedfileretentionduration")
            floor = _hours(configured) if configured else 168.0
            if retain < floor:
                return [], (
                    "[DELTA_VACUUM_RETENTION_PERIOD_TOO_SHORT] requirement failed: Are you sure "
                    "you would like to vacuum files with such a low retention period? (emulated "
                    "by kmflow's test bridge: below delta.deletedFileRetentionDuration)"
                )
            return self._done("VACUUM", match[1])
        if match := _SET_PROPERTIES.match(sql):
            table = _table(match[1])
            for key, value in _PROPERTY.findall(match[2]):
                self.properties.setdefault(table, {})[key.lower()] = value
            return self._done("SET TBLPROPERTIES", match[1], version=True)
        if match := _UNSET_PROPERTIES.match(sql):
            table = _table(match[1])
            for key, _ in _PROPERTY.findall(match[2]):
                self.properties.get(table, {}).pop(key.lower(), None)
            return self._done("UNSET TBLPROPERTIES", match[1], version=True)
        if match := _SHOW_PROPERTIES.match(sql):
            key = match[2]
            value = self.properties.get(_table(match[1]), {}).get(key.lower())
            note = f"Table {match[1]} does not have property: {key}"
            return [[key, value if value is not None else note]], None
        if match := _HISTORY.match(sql):
            return [[self.versions.get(_table(match[1]), 0), "", "", "", "WRITE"]], None
        return None

    def refusal(self, sql: str) -> str | None:
        """Why Databricks would refuse this write (an append-only table), else None."""
        match = _WRITE.match(sql)
        keyword = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        properties = self.properties.get(_table(match[1]), {}) if match else {}
        if keyword in ("UPDATE", "DELETE") and properties.get("delta.appendonly") == "true":
            return (
                "[DELTA_CANNOT_MODIFY_APPEND_ONLY] This table is configured to only allow "
                "appends (emulated by kmflow's test bridge)"
            )
        return None

    def executed(self, sql: str) -> None:
        """A statement DuckDB ran: a write adds a version; a CREATE keeps its properties."""
        if match := _WRITE.match(sql):
            table = _table(match[1])
            self.versions[table] = self.versions.get(table, 0) + 1
        elif (match := _CREATE.match(sql)) and "TBLPROPERTIES" in sql.upper():
            properties = sql[sql.upper().rindex("TBLPROPERTIES") :]
            for key, value in _PROPERTY.findall(properties):
                self.properties.setdefault(_table(match[1]), {}).setdefault(key.lower(), value)

    def _done(
        self, kind: str, name: str, *, version: bool = False
    ) -> tuple[list[list[Any]], str | None]:
        table = _table(name)
        self.maintenance.append((kind, table))
        if version or kind in ("REORG", "VACUUM"):
            self.versions[table] = self.versions.get(table, 0) + 1
        return [], None


def _hours(retention: str) -> float:
    match = _RETENTION.fullmatch(retention.strip())
    return float(match[1]) * _HOURS_PER[match[2].lower()] if match else 168.0


class MiniLakeBridge:
    def __init__(self, app: App) -> None:
        self.app = app
        self.delta = DeltaTables()
        self.deny_writes: set[str] = set()
        self.faults: list[Fault] = []
        self.statements: list[dict[str, Any]] = []  # as received, before binding
        self._pending: set[str] = set()
        # INLINE results: the most a statement's rows may take (Databricks: 25 MiB, "Limits and
        # limitations" of the Statement Execution API), and rows per chunk (Databricks does
        # not document its chunk size; smaller here, so clients' chunk loops are exercised).
        self.inline_result_bytes = 25 * 1024 * 1024
        self.inline_chunk_rows = 5_000
        self._chunks: dict[str, list[dict[str, Any]]] = {}  # by statement id
        self.oauth_clients: dict[str, str] = {}  # client id -> secret (see add_oauth_client)
        self.oauth_requests: dict[str, int] = {}  # client id -> requests with its tokens
        self._oauth_tokens: dict[str, str] = {}  # access token -> client id

    def add_fault(
        self,
        path: str,
        status: int | None = 503,
        *,
        method: str | None = None,
        times: int = 1,
        delay: float = 0.0,
        statement: str | None = None,
        landed: bool = False,
        retry_after: int = 0,
        sql_state: str = "",
        message: str = "injected failure",
    ) -> None:
        """`landed`: MiniLake carries the request out, then the client gets `status` instead of
        its answer (a timeout or a proxy's 503 after the work was done)."""
        pattern = re.compile(statement) if statement is not None else None
        self.faults.append(
            Fault(re.compile(path), method, status, times, delay, pattern, landed, retry_after,
                  sql_state, message)
        )  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if await self._injected_fault(scope["method"], scope["path"], scope, receive, send):
            return
        await self._route(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        self._count_oauth_request(scope)
        if path in (_HOST_METADATA, _OIDC_DISCOVERY, _OIDC_TOKEN):
            await self._oauth_call(scope, receive, send)
        elif method == "POST" and path == _STATEMENTS:
            await self._execute_statement(scope, receive, send)
        elif method == "GET" and path.removeprefix(_STATEMENTS + "/") in self._pending:
            statement_id = path.removeprefix(_STATEMENTS + "/")
            await json_answer(
                send, 200, {"statement_id": statement_id, "status": {"state": "PENDING"}}
            )
        elif method == "POST" and path.endswith("/cancel") and path.startswith(_STATEMENTS):
            self._pending.discard(path.removeprefix(_STATEMENTS + "/").removesuffix("/cancel"))
            await json_answer(send, 200, {})
        elif method == "GET" and (chunk := self._stored_chunk(path)) is not None:
            await json_answer(send, 200, chunk)
        elif path in _PRESIGNED_URL_CALLS:
            await read_body(receive)
            await json_answer(send, 403, _PRESIGNED_URLS_DISABLED)
        elif match := _VOLUME_PATH.match(path):
            await self._files_call(scope, receive, send, ".".join(match.groups()))
        else:
            await self.app(scope, receive, send)

    def add_oauth_client(self, client_id: str, secret: str) -> None:
        """A service principal's OAuth client: its application id and one OAuth secret."""
        self.oauth_clients[client_id] = secret

    def _count_oauth_request(self, scope: Scope) -> None:
        authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        client_id = self._oauth_tokens.get(authorization.removeprefix("Bearer "))
        if client_id is not None:
            self.oauth_requests[client_id] = self.oauth_requests.get(client_id, 0) + 1

    async def _oauth_call(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The workspace's host metadata, OIDC discovery and token endpoints (see above)."""
        body = await read_body(receive)
        headers = dict(scope["headers"])
        base = f"{scope['scheme']}://{headers.get(b'host', b'127.0.0.1').decode('latin-1')}"
        path = scope["path"]
        if path == _HOST_METADATA and scope["method"] == "GET":
            await json_answer(send, 200, {"oidc_endpoint": f"{base}/oidc",
                                          "workspace_id": "900800700600"})  # fmt: skip
        elif path == _OIDC_DISCOVERY and scope["method"] == "GET":
            await json_answer(send, 200, {
                "issuer": f"{base}/oidc",
                "authorization_endpoint": f"{base}/oidc/v1/authorize",
                "token_endpoint": f"{base}{_OIDC_TOKEN}",
                "grant_types_supported": ["client_credentials", "authorization_code",
                                          "refresh_token"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic",
                                                          "client_secret_post"],
            })  # fmt: skip
        elif path == _OIDC_TOKEN and scope["method"] == "POST":
            status, answer = self._issue_token(headers.get(b"authorization", b""), body)
            await json_answer(send, status, answer)
        else:
            await json_answer(send, 405, {"error_code": "BAD_REQUEST",
                                          "message": f"{scope['method']} {path}"})  # fmt: skip

    def _issue_token(self, authorization: bytes, body: bytes) -> tuple[int, dict[str, Any]]:
        form = {name: values[0] for name, values in parse_qs(body.decode("utf-8")).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization.startswith(b"Basic "):
            decoded = base64.b64decode(authorization.removeprefix(b"Basic ")).decode("utf-8")
            client_id, _, secret = decoded.partition(":")
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type",
                         "error_description": "only client_credentials is emulated"}  # fmt: skip
        if client_id is None or self.oauth_clients.get(client_id) != secret:
            return 401, {"error": "invalid_client",
                         "error_description": "Client authentication failed"}  # fmt: skip
        token = f"minilake-oauth-{secrets.token_hex(16)}"
        self._oauth_tokens[token] = client_id
        scope = form.get("scope", "all-apis")
        return 200, {"access_token": token, "token_type": "Bearer",
                     "expires_in": OAUTH_TOKEN_SECONDS, "scope": scope}  # fmt: skip

    async def _injected_fault(
        self, method: str, path: str, scope: Scope, receive: Receive, send: Send
    ) -> bool:
        for fault in self.faults:
            if fault.statement is not None:
                continue  # matched against the SQL text in `_execute_statement`
            if fault.times and fault.path.search(path) and fault.method in (None, method):
                if fault.landed:
                    await self._call_and_drop(scope, receive)
                elif fault.status is not None:  # answered here: the request goes no further
                    await read_body(receive)
                return await _answer_fault(fault, send)
        return False

    def _stored_chunk(self, path: str) -> dict[str, Any] | None:
        """GET /api/2.0/sql/statements/{id}/result/chunks/{n} of a result cut by the bridge."""
        match = _CHUNK_PATH.fullmatch(path)
        if match is None or match[1] not in self._chunks:
            return None
        chunks = self._chunks[match[1]]
        return chunks[int(match[2])] if int(match[2]) < len(chunks) else None

    async def _call_and_drop(self, scope: Scope, receive: Receive) -> None:
        """Let the request do its work (through the bridge's own rules), dropping the answer."""

        async def drop(message: Message) -> None:
            return None

        await self._route(scope, receive, drop)

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
        if warehouse[1].get("state") != "STOPPED" and await self._delta_statement(
            payload["statement"], send
        ):
            return
        if warehouse[1].get("state") == "STOPPED":
            statement_id = str(uuid.uuid4())
            self._pending.add(statement_id)
            await json_answer(
                send, 200, {"statement_id": statement_id, "status": {"state": "PENDING"}}
            )
            return
        status, answer = await self._call(
            "POST", _STATEMENTS, json.dumps(payload).encode(), server=scope["server"]
        )
        if status == 400 and str(answer.get("message", "")).startswith("SQL execution failed"):
            status, answer = 200, {
                "statement_id": str(uuid.uuid4()),
                "status": {"state": "FAILED", "sql_state": "42000",
                           "error": {"error_code": "BAD_REQUEST", "message": answer["message"]}},
            }  # fmt: skip
        if status == 200 and (answer.get("status") or {}).get("state") == "SUCCEEDED":
            self.delta.executed(payload["statement"])
        if status == 200 and payload.get("disposition", "INLINE") == "INLINE":
            answer = self._inline_result(answer)
        await json_answer(send, status, answer)

    async def _delta_statement(self, sql: str, send: Send) -> bool:
        """Answer a statement `DeltaTables` emulates, or refuses; False for any other."""
        refusal = self.delta.refusal(sql)
        emulated = self.delta.answer(sql) if refusal is None else ([], refusal)
        if emulated is None:
            return False
        rows, error = emulated
        statement_id = str(uuid.uuid4())
        if error is not None:
            await json_answer(send, 200, {"statement_id": statement_id, "status": {
                "state": "FAILED", "sql_state": "42000",
                "error": {"error_code": "BAD_REQUEST", "message": error}}})  # fmt: skip
            return True
        columns = [{"name": f"col{n}", "position": n, "type_name": "STRING"}
                   for n in range(len(rows[0]) if rows else 0)]  # fmt: skip
        await json_answer(send, 200, {
            "statement_id": statement_id, "status": {"state": "SUCCEEDED"},
            "manifest": {"format": "JSON_ARRAY", "schema": {"column_count": len(columns),
                         "columns": columns}, "total_row_count": len(rows)},
            "result": {"chunk_index": 0, "row_offset": 0, "row_count": len(rows),
                       "data_array": [[None if v is None else str(v) for v in row]
                                      for row in rows]},
        })  # fmt: skip
        return True

    def _inline_result(self, answer: dict[str, Any]) -> dict[str, Any]:
        """An INLINE result as Databricks gives it: refused over the 25 MiB limit (counted here
        as the JSON of its rows), else cut into chunks the client fetches one by one."""
        result = answer.get("result") or {}
        rows = result.get("data_array") or []
        if len(json.dumps(rows)) > self.inline_result_bytes:
            return {
                "statement_id": answer.get("statement_id"),
                "status": {"state": "FAILED", "sql_state": "54000", "error": {
                    "error_code": "BAD_REQUEST",
                    "message": f"[INLINE_RESULT_TOO_LARGE] the result is larger than "
                    f"{self.inline_result_bytes} bytes, the limit of INLINE disposition; use "
                    "EXTERNAL_LINKS (emulated by kmflow's test bridge)"}},
            }  # fmt: skip
        size = self.inline_chunk_rows
        if len(rows) <= size:
            return answer
        statement_id = str(answer.get("statement_id"))
        chunks = [rows[start : start + size] for start in range(0, len(rows), size)]
        self._chunks[statement_id] = [
            _chunk(statement_id, n, n * size, chunk, n + 1 < len(chunks))
            for n, chunk in enumerate(chunks)
        ]
        return {**answer, "result": self._chunks[statement_id][0]}

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
        if scope["method"] == "POST" and b"action=initiate-upload" in scope["query_string"]:
            await read_body(receive)  # a multipart session, whose parts then need presigned URLs
            token = str(uuid.uuid4())
            await json_answer(send, 200, {"multipart_upload": {"session_token": token}})
            return
        await self.app(scope, receive, send)

    async def _get(self, path: str) -> tuple[int, dict[str, Any]]:
        return await self._call("GET", path, b"")

    async def _call(
        self, method: str, path: str, body: bytes, server: tuple[str, int] = ("127.0.0.1", 0)
    ) -> tuple[int, dict[str, Any]]:
        """A request to MiniLake itself, in-process, for state the bridge needs to look at
        (`server`: the address MiniLake puts in links it answers with)."""
        scope: Scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 0),
            "server": server,
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


def _chunk(
    statement_id: str, index: int, offset: int, rows: list[Any], more: bool
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "chunk_index": index, "row_offset": offset, "row_count": len(rows), "data_array": rows,
    }  # fmt: skip
    if more:
        chunk["next_chunk_index"] = index + 1
        chunk["next_chunk_internal_link"] = (
            f"{_STATEMENTS}/{statement_id}/result/chunks/{index + 1}"
        )
    return chunk


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
            "status": {"state": "FAILED", "sql_state": fault.sql_state or None,
                       "error": {"error_code": "BAD_REQUEST" if fault.sql_state else
                                 "INTERNAL_ERROR", "message": fault.message}},
        })  # fmt: skip
        return True
    code = {429: "TOO_MANY_REQUESTS", 503: "TEMPORARILY_UNAVAILABLE"}
    await json_answer(
        send, fault.status,
        {"error_code": code.get(fault.status, "INTERNAL_ERROR"),
         "message": f"injected {fault.status}"},
        headers=[(b"retry-after", str(fault.retry_after).encode())],
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
