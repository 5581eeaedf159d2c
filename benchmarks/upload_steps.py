"""Where the time of one small upload goes, step by step (the `upload_steps` scenario runs it).

    python benchmarks/upload_steps.py --uploads 500 --bytes 16384 --workdir DIR

Uploads one file at a time straight into kmflow's ASGI app (local backend in DIR, no HTTP
server, so no socket or HTTP parsing cost), and times the steps of the real upload path by
wrapping the functions that do them: the path itself is unchanged. Each step gets its wall
time and the CPU time of the thread that ran it; the request as a whole gets the process's
CPU time (every thread). One upload alone waits for every flush in full; under concurrent
load the fsyncs of the journal, the directory and the index are shared, so the sum here is
an upper bound on what a loaded server waits per upload.

It imports `app` and nothing of `benchmarks`, so run with another checkout first on
PYTHONPATH it measures that revision: the scenario's `--before-rev` figures. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import inspect
import json
import logging.config
import os
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

UPLOAD = "/api/v1/evidence/upload"
# (label, module, attribute path): in the order an upload meets them. `.` in the attribute
# path wraps a method on its class; a module-level name is wrapped where it is looked up.
STEPS = (
    ("multipart parsing (receive_upload)", "app.api.routes.evidence", "receive_upload"),
    ("staged file created, written, hashed", "app.api.file_body", "FileBody.finish"),
    ("commit (storage.upload), all of it", "app.storage.base", "StorageBackend.upload"),
    ("  fdatasync of the staged file", "app.storage.staging", "StagedFile.seal"),
    ("  write intent: journal line flushed", "app.storage.write_intents", "WriteIntents.add"),
    ("  link into place", "app.storage.local.backend", "link_into_place"),
    ("  directory fsync", "app.storage.fsync", "SharedDirectorySync.sync"),
    ("  index row (SQLite commit)", "app.storage.local.index", "SqliteIndex.insert"),
    ("  write intent dropped", "app.storage.write_intents", "WriteIntents.drop"),
    ("  duplicate lookup", "app.storage.base", "StorageBackend._earlier_copies"),
)
REQUEST = "the request, all of it"


class Timings:
    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = defaultdict(list)
        self.cpu: dict[str, list[float]] = defaultdict(list)

    def wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                wall, cpu = time.perf_counter(), time.thread_time()
                try:
                    return await function(*args, **kwargs)
                finally:
                    self.add(label, time.perf_counter() - wall, time.thread_time() - cpu)

            return timed_async

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(label, time.perf_counter() - wall, time.thread_time() - cpu)

        return timed

    def add(self, label: str, wall: float, cpu: float) -> None:
        self.wall[label].append(wall * 1e6)
        self.cpu[label].append(cpu * 1e6)


def install(timings: Timings) -> list[str]:
    """Wrap every step this revision has; the labels of those it lacks."""
    missing = []
    for label, module_name, attribute in STEPS:
        try:
            module = importlib.import_module(module_name)
            owner_name, _, name = attribute.rpartition(".")
            owner = getattr(module, owner_name) if owner_name else module
            setattr(owner, name, timings.wrap(label, getattr(owner, name)))
        except (ImportError, AttributeError):
            missing.append(label)
    return missing


def multipart(content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="engagement_id"\r\n\r\n'
            f'steps\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="evidence.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


async def upload_all(count: int, size: int, timings: Timings) -> None:
    from app.main import create_app
    from app.settings import load_settings

    app = create_app(load_settings())
    async with app.router.lifespan_context(app) as state:
        for n in range(count):
            body, content_type = multipart(n.to_bytes(8, "big") + os.urandom(size - 8))
            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": "POST", "scheme": "http", "path": UPLOAD, "raw_path": UPLOAD.encode(),
                "root_path": "", "query_string": b"", "server": ("127.0.0.1", 8000),
                "client": ("127.0.0.1", 50000), "state": dict(state or {}),
                "headers": [(b"content-type", content_type.encode()),
                            (b"content-length", str(len(body)).encode())],
            }  # fmt: skip
            wall, cpu = time.perf_counter(), time.process_time()
            statuses = await call(app, scope, body)
            timings.add(REQUEST, time.perf_counter() - wall, time.process_time() - cpu)
            if statuses != [201]:
                raise RuntimeError(f"upload {n} answered {statuses}")


async def call(app: Any, scope: dict[str, Any], body: bytes) -> list[int]:
    """One request to the ASGI app with `body` in one message; the statuses it answered."""
    messages: list[MutableMapping[str, Any]] = [
        {"type": "http.request", "body": body, "more_body": False}
    ]
    statuses: list[int] = []

    async def receive() -> MutableMapping[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=500)
    parser.add_argument("--bytes", type=int, default=16 * 1024)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    os.environ.update(
        STORAGE_BACKEND="local", API_KEYS="", LOG_FORMAT="text",
        LOCAL_STORAGE_PATH=str(args.workdir / "evidence_store"),
        STATE_PATH=str(args.workdir / "kmflow_state"),
    )  # fmt: skip
    from app.observability.log_format import logging_config

    logging.config.dictConfig(logging_config("text"))  # the request's log line, as served
    timings = Timings()
    missing = install(timings)
    asyncio.run(upload_all(args.uploads, args.bytes, timings))
    steps = [(label, "") for label, _, _ in STEPS] + [(REQUEST, "")]
    print(
        json.dumps(
            {
                "missing": missing,
                "steps": {
                    label: {
                        # per upload: the median wall time, the mean CPU time (ticks are coarse)
                        "wall_us": statistics.median(timings.wall[label]),
                        "cpu_us": statistics.fmean(timings.cpu[label]),
                        "calls_per_upload": len(timings.wall[label]) / args.uploads,
                    }
                    for label, _ in steps
                    if timings.wall[label]
                },
            }
        )
    )


if __name__ == "__main__":
    main()
