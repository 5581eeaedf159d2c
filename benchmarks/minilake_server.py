"""MiniLake (the DuckDB-backed Databricks API emulator) as a separate process for the
benchmark's Databricks scenarios, behind the test bridge and the latency model:

    python -m benchmarks.minilake_server --port P --data-dir DIR [--latency default|zero]
        [--commit-seconds S] [--statement-seconds S] [--slots N] [--put-seconds S]
        [--get-seconds S] [--bandwidth BYTES_PER_SECOND]

The bridge is `tests.datalake.minilake_bridge`, the one place that makes MiniLake behave as
Databricks does where kmflow depends on it (parameter binding, FAILED statements as 200);
kmflow's own tests use it the same way. Around it, `tests.datalake.latency_model` makes
MiniLake answer at a workspace's speed (zero by default, so scenario 5 measures kmflow's own
cost) and counts every request that reaches it, by kind, for the round-trip figures; the
harness reads the counts and changes the profile over HTTP (`/_latency`). Both are imported
from the tests package on purpose: a second copy here could drift from what the tests prove.

A process of its own, not a thread of the harness, so MiniLake's CPU time never competes with
the harness's for the GIL.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import uvicorn

from tests.datalake.latency_model import DEFAULT, ZERO, Latency, LatencyModel
from tests.datalake.minilake_bridge import MiniLakeBridge, minilake_environment

# Options that override one field of the chosen profile.
FIELD_OPTIONS = {
    "commit_seconds": "commit_seconds",
    "statement_seconds": "statement_seconds",
    "slots": "warehouse_slots",
    "put_seconds": "files_put_seconds",
    "get_seconds": "files_get_seconds",
    "bandwidth": "files_bytes_per_second",
}


def latency_from(args: argparse.Namespace) -> Latency:
    """`--latency`'s profile with the field options given on the command line."""
    base = DEFAULT if args.latency == "default" else ZERO
    changes = {name: getattr(args, option) for option, name in FIELD_OPTIONS.items()}
    return replace(base, **{name: value for name, value in changes.items() if value is not None})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument(
        "--latency", choices=("zero", "default"), default="zero",
        help="the workspace latency profile to start with (default: zero, no delays)",
    )  # fmt: skip
    parser.add_argument("--commit-seconds", type=float, help="a write statement's commit")
    parser.add_argument("--statement-seconds", type=float, help="any other statement")
    parser.add_argument("--slots", type=int, help="statements the warehouse runs at once")
    parser.add_argument("--put-seconds", type=float, help="a Files API PUT's acknowledgement")
    parser.add_argument("--get-seconds", type=float, help="a Files API GET's first byte")
    parser.add_argument("--bandwidth", type=float, help="Files API bytes per second, per request")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    latency = latency_from(args)
    data_dir = args.data_dir.resolve()  # a relative data dir breaks MiniLake's Files API
    data_dir.mkdir(parents=True, exist_ok=True)
    minilake_environment(data_dir)
    from minilake.app import create_app  # type: ignore[import-untyped]

    app = LatencyModel(MiniLakeBridge(create_app()), latency)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
