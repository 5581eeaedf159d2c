"""The request being served, for every log line and error body it causes.

One context variable holds a small mutable record per request: the ASGI middleware sets it
when a request arrives; routes add what they learn (engagement, record id); a log record
factory copies the request id into every log record made while serving it, whichever logger
(ours, uvicorn's, the SDK's) makes it.
"""

from __future__ import annotations

import itertools
import logging
import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.requests import Request

REQUEST_ID_HEADER = "x-request-id"
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_PROCESS_PREFIX = uuid.uuid4().hex[:16]
_request_numbers = itertools.count(1)


@dataclass
class RequestContext:
    request_id: str
    route: str | None = None  # the matched route's template, e.g. /api/v1/evidence/{engagement_id}
    engagement_id: str | None = None
    evidence_id: str | None = None
    principal: str | None = None  # the name of the request's API key


_current: ContextVar[RequestContext | None] = ContextVar("kmflow_request", default=None)


def begin(client_request_id: str | None) -> RequestContext:
    """A client's X-Request-ID is kept when it is a plain token, else a new id is made: this
    process's random prefix and a counter, unique across workers and replicas without a
    system call per request."""
    if client_request_id and _CLIENT_REQUEST_ID.fullmatch(client_request_id):
        request_id = client_request_id
    else:
        request_id = f"{_PROCESS_PREFIX}{next(_request_numbers):016x}"
    context = RequestContext(request_id)
    _current.set(context)
    return context


def current() -> RequestContext | None:
    return _current.get()


def current_request_id() -> str | None:
    context = _current.get()
    return context.request_id if context else None


def note(
    *,
    engagement_id: str | None = None,
    evidence_id: str | None = None,
    principal: str | None = None,
) -> None:
    """Routes and the key check: name what this request touched and for whom, for its log
    line."""
    context = _current.get()
    if context is None:
        return
    if engagement_id is not None:
        context.engagement_id = engagement_id
    if evidence_id is not None:
        context.evidence_id = evidence_id
    if principal is not None:
        context.principal = principal


async def note_route(request: Request) -> None:
    """An app-wide dependency: records the full template of the route that matched. (Routers
    included with a prefix keep a relative path; the prefix is what precedes it in the URL.)"""
    relative = getattr(request.scope.get("route"), "path", None)
    if relative is None:
        return
    segments = request.scope["path"].split("/")
    depth = relative.count("/")
    note_route_template("/".join(segments[: len(segments) - depth]) + relative)


def note_route_template(template: str) -> None:
    """The template of the route answering this request, for its log line and metrics."""
    context = _current.get()
    if context is not None:
        context.route = template


_installed = False


def install_log_record_factory() -> None:
    """Every LogRecord gets `request_id` (None outside a request). Idempotent."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = current_request_id()
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
