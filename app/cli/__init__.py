"""The `kmflow` command: one parser, each command group in a module of this package, each a
thin layer over the rest of `app` (serve, delta, governance, migrate, purge, client)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app import __version__
from app.cli.client import add_client_commands
from app.cli.delta import add_delta_commands
from app.cli.governance import add_governance_commands
from app.cli.migrate import add_migrate_command
from app.cli.purge import add_purge_command
from app.cli.serve import add_serve_command
from app.config import ConfigError
from app.storage.errors import BackendNotInstalled, StorageMisconfigured


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
        "(see docs/configuration.md); STORAGE_BACKEND picks local, delta or databricks.",
    )
    parser.add_argument("--version", action="version", version=f"kmflow {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    add_serve_command(commands)
    add_delta_commands(commands)
    add_governance_commands(commands)
    add_migrate_command(commands)
    add_purge_command(commands)
    add_client_commands(commands)
    return parser
