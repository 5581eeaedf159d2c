"""The `kmflow` command."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from app import __version__
from app.client.commands import add_client_commands
from app.config import ConfigError, load_settings
from app.delta_command import add_delta_commands
from app.governance.commands import add_governance_commands
from app.migration_command import add_migrate_command
from app.observability.log_format import logging_config
from app.observability.metrics import MULTIPROCESS_DIR_ENV
from app.storage.errors import BackendNotInstalled, StorageMisconfigured
from app.storage.registry import backend_class


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    except (ConfigError, BackendNotInstalled, StorageMisconfigured) as error:
        print(f"kmflow: {error}", file=sys.stderr)
        return 2
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kmflow",
        description="Evidence storage service. Configured by environment variables "
        "(see README); STORAGE_BACKEND picks local, delta or databricks.",
    )
    parser.add_argument("--version", action="version", version=f"kmflow {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", help="bind address (default: API_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: API_PORT, 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: API_WORKERS, 1)")
    serve.set_defaults(handler=run_serve)
    add_delta_commands(commands)
    add_governance_commands(commands)
    add_migrate_command(commands)
    add_client_commands(commands)
    return parser


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
        "app.main:create_app",
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


def prepare_multiprocess_metrics(directory: Path) -> None:
    """Workers share metrics through files in a directory emptied at every start (values of
    a previous run's processes must not be summed in); see `app.observability.metrics`."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROCESS_DIR_ENV] = str(directory)


if __name__ == "__main__":
    sys.exit(main())
