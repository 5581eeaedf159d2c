"""`kmflow purge ENGAGEMENT --reason ...`: the operator's front end to `app.purge`, run against
the backend that STORAGE_BACKEND and its variables name (as `kmflow migrate` is)."""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
from pathlib import Path

from app.config import ConfigError
from app.purge import plan_purge, purge
from app.settings import load_settings
from app.storage.errors import LegalHoldActive, StorageError
from app.storage.registry import backend_class, create_backend

EXIT_FAILED = 1
EXIT_HELD = 3
DEFAULT_WORKERS = 8


def add_purge_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        "purge",
        help="remove every file and row of an engagement, with a deletion certificate",
        description="Remove every file and every row of ENGAGEMENT from the configured "
        "backend (STORAGE_BACKEND), make the deleted rows unrecoverable from the tables' files, "
        "and print a deletion certificate (JSON). Refused while the engagement is under legal "
        "hold (exit 3). Resumable: after any failure or kill, run it again.",
    )
    command.add_argument("engagement_id", metavar="ENGAGEMENT")
    command.add_argument("--reason", required=True, help="why (kept in the certificate and audit)")
    command.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    command.add_argument(
        "--certificate", type=Path, metavar="FILE", help="also write the certificate to FILE"
    )
    command.add_argument(
        "--by",
        metavar="NAME",
        help="the principal the audit trail and certificate name (default: user@host)",
    )
    command.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="parallel removals")
    command.set_defaults(handler=run_purge)


def run_purge(args: argparse.Namespace) -> int:
    if not 1 <= args.workers <= 64:
        raise ConfigError("--workers must be between 1 and 64")
    settings = load_settings()
    backend_class(settings.storage_backend)  # a missing optional package fails here, clearly
    backend = create_backend(settings)
    try:
        if args.dry_run:
            print(plan_purge(backend, args.engagement_id).describe())
            print("dry run: nothing was removed")
            return 0
        outcome = purge(
            backend,
            args.engagement_id,
            args.reason,
            args.by or _operator(),
            workers=args.workers,
            note=lambda message: print(f"kmflow: {message}", file=sys.stderr),
        )
    except LegalHoldActive as error:
        print(f"kmflow: {error}", file=sys.stderr)
        return EXIT_HELD
    except StorageError as error:
        print(f"kmflow: purge not finished: {error}; run it again", file=sys.stderr)
        return EXIT_FAILED
    finally:
        backend.close()
    if args.certificate is not None:
        _write_durably(args.certificate, outcome.text + "\n")
    print(outcome.text)
    return 0


def _operator() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _write_durably(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.part")
    with partial.open("w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    partial.replace(path)
