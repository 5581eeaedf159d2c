"""One connection to a kmflow server: base URL, bearer key, retries, and the error mapping.

The key is set once as a header and never appears in a message: errors name the server by
its URL without any user:password part.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from app import __version__
from app.api import API_PREFIX
from app.client.errors import (
    AuthRefused,
    CorruptTransfer,
    LocalProblem,
    ServerRefused,
    Transient,
)
from app.client.retry import RETRY_STATUSES, RetryPolicy, retry_after_seconds

# Long reads and writes: a large upload's answer comes after the server has made it durable.
TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=300.0, pool=10.0)
MAX_DETAIL_CHARS = 300
# 409 for a retried upload whose first attempt the server is still storing: wait, then ask
# again with the same key and get that upload's record.
IN_PROGRESS = "idempotency_key_in_progress"


class ApiClient:
    def __init__(
        self,
        url: str,
        api_key: str | None,
        retry: RetryPolicy | None = None,
        notify: Callable[[str], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not valid_url(url):
            raise LocalProblem(f"--url must be an http:// or https:// URL, not {public_url(url)!r}")
        self.display_url = public_url(url)
        self.has_key = bool(api_key)
        self.retry = retry or RetryPolicy()
        self.notify = notify or _to_stderr
        headers = {"User-Agent": f"kmflow-client/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=url.rstrip("/") + API_PREFIX,
            headers=headers,
            timeout=TIMEOUT,
            transport=transport,
            follow_redirects=False,
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def request(self, what: str, method: str, path: str, **options: Any) -> httpx.Response:
        """A complete answer, retried while transient; any other failure raised as ClientError.

        `options` are httpx's (params, headers, files, data); `files` are re-read from the
        start on every attempt (httpx seeks them to 0).
        """

        def attempt() -> httpx.Response:
            try:
                response = self._http.request(method, path, **options)
            except httpx.TransportError as error:
                raise Transient(self.transport_reason(error)) from None
            self.check(response, what)
            return response

        return self.retry.run(attempt, what, self.notify)

    def items(self, what: str, path: str, params: dict[str, str | int]) -> Iterator[dict[str, Any]]:
        """Every item of a paged listing (records, audit events), following `next_cursor` to
        the end, a page at a time."""
        params = dict(params)
        while True:
            page = self.request(what, "GET", path, params=params).json()
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return
            params["cursor"] = cursor

    @contextmanager
    def stream(self, what: str, path: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
        """A GET whose body is read by the caller; the status is checked, not retried (the
        caller retries, resuming where it stopped)."""
        try:
            with self._http.stream("GET", path, headers=headers) as response:
                if response.status_code >= 300:
                    response.read()
                    self.check(response, what)
                yield response
        except httpx.TransportError as error:
            raise Transient(self.transport_reason(error)) from None

    def check(self, response: httpx.Response, what: str) -> None:
        """Raise the ClientError (or Transient) an unsuccessful answer means."""
        status = response.status_code
        if status < 300 or status == 304:
            return
        code, detail = error_of(response)
        said = f"{status} {code}: {detail}" if code else f"{status}: {detail}"
        if status in RETRY_STATUSES or code == IN_PROGRESS:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            raise Transient(f"server answered {said}", retry_after)
        if status in (401, 403):
            if not self.has_key:
                raise AuthRefused(
                    f"{self.display_url} requires an API key ({said}): pass --api-key or "
                    "set KMFLOW_API_KEY"
                )
            if status == 403:
                raise AuthRefused(f"{what}: the API key is not allowed this ({said})")
            raise AuthRefused(
                f"{self.display_url} refused the API key ({said}): check --api-key or "
                "KMFLOW_API_KEY"
            )
        if code == "digest_mismatch":
            raise CorruptTransfer(f"{what}: server answered {said}")
        raise ServerRefused(f"{what}: server answered {said}")

    def transport_reason(self, error: httpx.TransportError) -> str:
        detail = f"({type(error).__name__}: {error or 'no detail'})"
        if isinstance(error, httpx.TimeoutException):
            return f"timed out waiting for {self.display_url} {detail}"
        return f"connection to {self.display_url} failed {detail}"


def error_of(response: httpx.Response) -> tuple[str | None, str]:
    """(code, detail) from kmflow's JSON error body, or the start of whatever else came."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        code = body.get("error")
        return (code if isinstance(code, str) else None), printable(body["detail"])
    text = printable(response.text.strip()) or response.reason_phrase or "no detail"
    return None, text


def printable(text: str) -> str:
    """Text from the network made safe for a terminal: no control characters, bounded."""
    cleaned = "".join(char if char.isprintable() else "?" for char in text)
    if len(cleaned) > MAX_DETAIL_CHARS:
        return cleaned[:MAX_DETAIL_CHARS] + "..."
    return cleaned


def valid_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def public_url(url: str) -> str:
    """The URL without any user:password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        netloc = host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def segment(value: str) -> str:
    """One path segment, so an id can never change the route it is sent to."""
    return quote(value, safe="")


def _to_stderr(message: str) -> None:
    print(f"kmflow: {message}", file=sys.stderr)
