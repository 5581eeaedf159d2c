"""A local S3 (moto) for the delta backend's `s3://` tests, and the fixtures that point at it.

moto honours conditional PUTs (`If-None-Match`, `If-Match`), which delta-rs commits, the
maintenance lease and the Idempotency-Key claims rely on; but its threaded server checks the
condition and then stores the object without a lock (moto 5.2 `S3Response.put_object`), so
two concurrent conditional PUTs of one key could in principle both succeed, which AWS S3
guarantees never happens. The server here is moto's own application with one addition: the
requests that change objects (PUT, POST, DELETE) run one at a time, so every conditional write
is atomic as on S3; reads stay concurrent. Run it as `python -m tests.storage.s3_server PORT`.

Credentials reach deltalake and obstore only through the `AWS_*` environment variables.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.live_server import free_port

BUCKET = "kmflow-evidence"
SECRET = "moto-secret-key-never-shown"
REPOSITORY = Path(__file__).resolve().parents[2]
WRITES = frozenset({"PUT", "POST", "DELETE"})


class OneWriteAtATime:
    """WSGI middleware: requests that change objects run under one lock, responses included
    (moto builds them before returning, but the iterable is drained inside the lock)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("REQUEST_METHOD") not in WRITES:
            return self._app(environ, start_response)
        with self._lock:
            return list(self._app(environ, start_response))


def serve(port: int) -> None:
    """moto's server (as `python -m moto.server` runs it) behind `OneWriteAtATime`."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # type: ignore[attr-defined]  (as moto.server sets it)
    run_simple(
        "127.0.0.1",
        port,
        OneWriteAtATime(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key=SECRET,
    )


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.storage.s3_server", str(port)],
        cwd=REPOSITORY,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        s3_client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def base_uri(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh prefix in the bucket, with the AWS_* variables an operator would set."""
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_ALLOW_HTTP": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_CONDITIONAL_PUT", raising=False)
    monkeypatch.delenv("AWS_S3_ALLOW_UNSAFE_RENAME", raising=False)
    return f"s3://{BUCKET}/kmflow-{uuid.uuid4().hex[:8]}"


def object_keys(s3_endpoint: str, prefix: str) -> list[str]:
    pages = (
        s3_client(s3_endpoint)
        .get_paginator("list_objects_v2")
        .paginate(Bucket=BUCKET, Prefix=prefix)
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


if __name__ == "__main__":
    serve(int(sys.argv[1]))
