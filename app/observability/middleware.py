"""Per request: the request id in and out, the HTTP metrics, and one log line.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware, which would run the app in
another task and buffer streaming answers): it only watches the messages go by.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability import metrics, request_context

logger = logging.getLogger("app.request")

UNMATCHED_ROUTE = "unmatched"  # a 404 for an unknown path: no template to count under


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        context = request_context.begin(Headers(scope=scope).get(request_context.REQUEST_ID_HEADER))
        request_id = context.request_id.encode("ascii")
        status = 500  # if the app raises before answering
        bytes_in = bytes_out = 0

        async def counted_receive() -> Message:
            nonlocal bytes_in
            message = await receive()
            bytes_in += len(message.get("body", b""))
            return message

        async def tagged_send(message: Message) -> None:
            nonlocal status, bytes_out
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            elif message["type"] == "http.response.body":
                bytes_out += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counted_receive, tagged_send)
        finally:
            duration = time.perf_counter() - start
            route = context.route or _plain_route(scope) or UNMATCHED_ROUTE
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_DURATION.labels(method, route).observe(duration)
            logger.info(
                '"%s %s" %d %.1fms',
                method,
                scope["path"],
                status,
                duration * 1000,
                extra={
                    "method": method,
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(duration * 1000, 3),
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                    "engagement_id": context.engagement_id,
                    "evidence_id": context.evidence_id,
                    "principal": context.principal,
                },
            )


def _plain_route(scope: Scope) -> str | None:
    """The app's own fixed routes (/docs, /openapi.json), which take no dependencies."""
    app = scope.get("app")
    path: str = scope["path"]
    for route in getattr(app, "routes", ()):
        if getattr(route, "path", None) == path:
            return path
    return None
