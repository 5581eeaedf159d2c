"""TEST CODE ONLY: a TCP relay from a local port to a running peer, started when a test says.

A workspace that is down, then comes back: kmflow is given `http://127.0.0.1:<port>` while
nothing listens there (connections are refused, as for a host that is down), and the relay
later starts listening on that port and passes every connection through to MiniLake.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


class Relay:
    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port = port
        self.target = target
        self._server: socket.socket | None = None
        self._connections: list[socket.socket] = []

    def start(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR on POSIX
        self._spawn(self._accept, self._server)

    def stop(self) -> None:
        for sock in [self._server, *self._connections]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                incoming, _ = server.accept()
            except OSError:  # stopped
                return
            try:
                outgoing = socket.create_connection(self.target, timeout=10)
            except OSError:
                incoming.close()
                continue
            outgoing.settimeout(None)
            self._connections += [incoming, outgoing]
            self._spawn(self._pump, incoming, outgoing)
            self._spawn(self._pump, outgoing, incoming)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    @staticmethod
    def _spawn(target: Callable[..., None], *args: socket.socket) -> None:
        threading.Thread(target=target, args=args, daemon=True).start()
