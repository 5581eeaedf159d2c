"""`kmflow delta`: the delta backend's evidence_metadata table for audits (history, time travel)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from app.settings import load_settings
from app.storage.registry import backend_class


def add_delta_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    delta = commands.add_parser(
        "delta", help="the delta backend's evidence_metadata table: history, time travel"
    )
    actions = delta.add_subparsers(title="delta commands", required=True, metavar="ACTION")
    history = actions.add_parser("history", help="print the table's versions, newest first")
    history.add_argument("--limit", type=int, default=20, help="how many (default: 20)")
    history.set_defaults(handler=run_delta_history)
    show = actions.add_parser("show", help="print a record as the table held it at a version")
    show.add_argument("engagement_id")
    show.add_argument("evidence_id")
    show.add_argument("--version", type=int, required=True, help="a version from `history`")
    show.set_defaults(handler=run_delta_show)


def run_delta_history(args: argparse.Namespace) -> int:
    from app.storage.errors import StorageError

    backend_class("delta")  # a missing deltalake fails here, with the install hint
    from app.storage.delta.backend import open_evidence_table

    try:
        entries = open_evidence_table(load_settings()).history(args.limit)
    except StorageError as error:
        print(f"kmflow: {error}", file=sys.stderr)
        return 1
    print(f"{'version':>7}  {'timestamp (UTC)':<24}  {'operation':<17}  metrics")
    for entry in entries:
        when = datetime.fromtimestamp(entry["timestamp"] / 1000, UTC)
        metrics = entry.get("operationMetrics") or {}
        shown = " ".join(
            f"{key}={metrics[key]}"
            for key in ("num_added_rows", "numFilesRemoved", "numFilesAdded")
            if key in metrics
        )
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        print(f"{entry['version']:>7}  {stamp:<24}  {entry.get('operation', '?'):<17}  {shown}")
    return 0


def run_delta_show(args: argparse.Namespace) -> int:
    from app.storage.errors import StorageError

    backend_class("delta")
    from app.storage.delta.backend import open_evidence_table

    try:
        table = open_evidence_table(load_settings())
        record = table.get(args.engagement_id, args.evidence_id, args.version)
    except StorageError as error:
        print(f"kmflow: {error}", file=sys.stderr)
        return 1
    if record is None:
        print(
            f"kmflow: no evidence {args.evidence_id} in engagement {args.engagement_id} "
            f"at version {args.version}",
            file=sys.stderr,
        )
        return 1
    print(record.model_dump_json(indent=2))
    return 0
