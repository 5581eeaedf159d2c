"""`kmflow serve`: the HTTP API under uvicorn, with the settings checked before it starts."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli.worker_cpus import pin_worker
from app.observability.log_format import logging_config
from app.observability.metrics import MULTIPROCESS_DIR_ENV
from app.settings import load_settings
from app.storage.registry import backend_class

if TYPE_CHECKING:
    from fastapi import FastAPI


def add_serve_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", help="bind address (default: API_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: API_PORT, 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: API_WORKERS, 1)")
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.api.http_protocol import BoundedHttpToolsProtocol

    overrides = {
        name: value
        for name, value in (
            ("api_host", args.host),
            ("api_port", args.port),
            ("api_workers", args.workers),
        )
        if value is not None
    }
    settings = load_settings(**overrides)
    # A missing optional package, a store served through another's index: refused here, in
    # one line, not in every worker's lifespan.
    backend_class(settings.storage_backend).preflight(settings)
    # Worker processes build their own Settings from the environment: hand them the flags.
    os.environ["API_HOST"] = settings.api_host
    os.environ["API_PORT"] = str(settings.api_port)
    os.environ["API_WORKERS"] = str(settings.api_workers)
    if settings.api_workers > 1:
        prepare_multiprocess_metrics(settings.state_path / "metrics")
    uvicorn.run(
        "app.cli.serve:worker_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        http=BoundedHttpToolsProtocol,  # httptools' speed, with a bound on request heads
        log_config=logging_config(settings.log_format),
        access_log=False,  # kmflow logs one line per request itself, with its request id
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    return 0


def worker_app() -> FastAPI:
    """The app of one `kmflow serve` worker process (uvicorn's factory): the worker takes its
    CPU first, so every thread it starts runs there too."""
    from app.main import create_app  # the API's imports, only where it runs

    settings = load_settings()
    if settings.api_pin_workers:
        pin_worker(settings.state_path / "cpus", settings.api_workers)
    return create_app(settings)


def prepare_multiprocess_metrics(directory: Path) -> None:
    """Workers share metrics through files in a directory emptied at every start (values of
    a previous run's processes must not be summed in); see `app.observability.metrics`."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROCESS_DIR_ENV] = str(directory)
