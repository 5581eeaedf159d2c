"""HTTP/1.1 spoken by hand over a socket, for what a well-behaved client library will not send:
a body cut off mid-way, a lying or negative Content-Length, a NUL in the request target,
megabytes of header."""

from __future__ import annotations

import http.client
import json
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tests.conftest import API_KEY

UPLOAD = "/api/v1/evidence/upload"


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request_head(
    method: str, target: str, headers: dict[str, str] | None = None, *, auth: bool = True
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if auth:
        lines.append(f"Authorization: Bearer {API_KEY}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def connect(port: int, timeout: float = 60) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def exchange(port: int, head: bytes, body: Iterable[bytes] = ()) -> Answer:
    """Send a request (the body piece by piece, stopping if the server stops reading) and read
    the whole answer."""
    with connect(port) as sock:
        try:
            sock.sendall(head)
            for piece in body:
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed: its answer is still to be read
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Answer(response.status, response.getheader("content-type", ""), response.read())


def hang_up(sock: socket.socket, how: str) -> None:
    """Drop a connection: "close" sends FIN, "reset" sends RST (SO_LINGER 0), as a killed
    client or a middlebox would."""
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
