"""Counts the HTTP requests a Databricks peer receives, by kind: that is how the harness
knows how many round trips one kmflow upload, or one migrated file, costs.

An ASGI wrapper (used around MiniLake by `minilake_server`), so it counts at the server side
whatever the client does: SDK retries, status polls, HEAD probes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

COUNTS_PATH = "/_bench/requests"  # GET: the counts; DELETE: start again from zero
_STATEMENTS = "/api/2.0/sql/statements"


def classify(method: str, path: str) -> str:
    """A request's kind, as the report names it."""
    if path.startswith("/api/2.0/fs/files/"):
        return f"files {method}"
    if path.startswith("/api/2.0/fs/directories/"):
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


class RequestCounter:
    def __init__(self, app: App) -> None:
        self.app = app
        self.counts: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == COUNTS_PATH:
            if scope["method"] == "DELETE":
                self.counts.clear()
            await _json(send, dict(self.counts))
            return
        self.counts[classify(scope["method"], scope["path"])] += 1
        await self.app(scope, receive, send)


async def _json(send: Send, body: dict[str, int]) -> None:
    raw = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": raw})
