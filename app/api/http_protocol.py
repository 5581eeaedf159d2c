"""uvicorn's httptools protocol with a bound on a request's head.

httptools (uvicorn's fast HTTP parser) puts no limit on the request line and headers: a client
could make a worker hold a header of any size, and a request with a 16 MiB header was served.
Here the bytes received while a request's head is incomplete are counted, and past
MAX_HEAD_BYTES (or MAX_HEADERS headers) the request gets a 431 and the connection is closed.
Memory per connection then stays at the limit plus one network read.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # nginx's default buffers hold 32 KiB; h11's default is 16 KiB
MAX_HEADERS = 100


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _head_bytes = 0
    _header_count = 0
    _in_head = True  # until a request's headers are complete; again after each request

    def data_received(self, data: bytes) -> None:
        if not self._in_head:
            super().data_received(data)
            return
        self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(f"the request line and headers exceed {MAX_HEAD_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            self._refuse(f"more than {MAX_HEADERS} request headers")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.transport.is_closing():
            return  # refused above: the request never reaches the app
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes, self._header_count = True, 0, 0

    def _refuse(self, detail: str) -> None:
        if self.transport.is_closing():
            return
        body = json.dumps({"error": "request_header_too_large", "detail": detail}).encode()
        self.transport.write(
            STATUS_LINE[431]
            + b"content-type: application/json\r\n"
            + b"content-length: "
            + str(len(body)).encode("ascii")
            + b"\r\nconnection: close\r\n\r\n"
            + body
        )
        self.transport.close()
