"""The command line of `python -m benchmarks`: which scenarios, how many rounds, what sizes.

The defaults are the issue's figures (1 GiB, 2,000 x 16 KiB at concurrency 32, 1k/10k/100k
records, 2,000 files to migrate) and finish in well under 30 minutes on a 2-core machine;
`--quick` shrinks every size so a whole run takes a minute or two, to check the harness works.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

from tests.datalake.latency_model import Latency

SCENARIOS = (
    "large_upload",
    "small_uploads",
    "listing",
    "download",
    "databricks",
    "databricks_latency",
    "upload_steps",
)
MIB = 1024 * 1024
RESULTS = Path(__file__).with_name("RESULTS.md")


@dataclass(frozen=True)
class Sizes:
    large_bytes: int  # scenarios 1 and 4
    big_bytes: int | None  # the extra kmflow-only upload for the peak-RSS target; None: skip
    small_count: int  # uploads per small-upload run
    small_bytes: int
    step_uploads: int  # scenario 7: uploads one at a time
    concurrency: int
    listing_records: tuple[int, ...]
    listing_requests: int  # timed GETs per engagement and round, at most...
    listing_cap_seconds: int  # ...and for at most this long (MiniLake at 100k is slow)
    databricks_uploads: int  # uploads through kmflow's databricks backend per round
    migration_files: int
    latency_uploads_per_connection: int  # scenario 6: uploads per round = this x concurrency
    latency_loop_files: int  # scenario 6: files the sequential loop copies per round
    wrk_cap_seconds: int  # time bound of any one wrk run
    scenario_budget_seconds: float  # no new round starts after this


FULL = Sizes(
    large_bytes=1024 * MIB,
    big_bytes=4096 * MIB,
    small_count=2000,
    small_bytes=16 * 1024,
    step_uploads=500,
    concurrency=32,
    listing_records=(1_000, 10_000, 100_000),
    listing_requests=500,
    listing_cap_seconds=20,
    databricks_uploads=300,
    migration_files=2000,
    latency_uploads_per_connection=10,
    latency_loop_files=30,
    wrk_cap_seconds=90,
    scenario_budget_seconds=420,
)
QUICK = Sizes(
    large_bytes=16 * MIB,
    big_bytes=48 * MIB,
    small_count=200,
    small_bytes=16 * 1024,
    step_uploads=50,
    concurrency=32,
    listing_records=(100, 1_000, 3_000),
    listing_requests=50,
    listing_cap_seconds=10,
    databricks_uploads=20,
    migration_files=40,
    latency_uploads_per_connection=2,
    latency_loop_files=5,
    wrk_cap_seconds=30,
    scenario_budget_seconds=60,
)


@dataclass(frozen=True)
class Options:
    scenarios: tuple[str, ...]
    rounds: int
    sizes: Sizes
    quick: bool
    workdir: Path | None
    keep_workdir: bool
    results: Path | None  # where the report goes; None: printed only
    latency: dict[str, float]  # scenario 6: changes to the default latency model
    before_rev: str | None = None  # scenario 2: kmflow at this git revision too


def parse_options(argv: Sequence[str] | None = None) -> Options:
    args = build_parser().parse_args(argv)
    # `databricks-latency` and `databricks_latency` name the same scenario.
    scenarios = tuple(n.strip().replace("-", "_") for n in args.only.split(",") if n.strip())
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown or not scenarios:
        raise SystemExit(f"--only: unknown scenario(s) {unknown}; choose from {SCENARIOS}")
    if args.rounds is not None and args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    sizes = QUICK if args.quick else FULL
    if args.size_mib is not None:
        sizes = replace(sizes, large_bytes=args.size_mib * MIB)
    if args.big_size_mib is not None:
        sizes = replace(sizes, big_bytes=args.big_size_mib * MIB or None)
    if args.skip_big:
        sizes = replace(sizes, big_bytes=None)
    results = args.results
    if results is None and not args.quick:
        results = RESULTS  # a smoke run never overwrites the real figures unless asked to
    return Options(
        scenarios=tuple(name for name in SCENARIOS if name in scenarios),
        rounds=args.rounds if args.rounds is not None else (2 if args.quick else 3),
        sizes=sizes,
        quick=args.quick,
        workdir=args.workdir,
        keep_workdir=args.keep_workdir,
        results=results,
        latency=parse_latency(args.latency),
        before_rev=args.before_rev,
    )


def parse_latency(text: str) -> dict[str, float]:
    """`commit_seconds=2,files_put_seconds=0.3` as field changes of the latency model."""
    names = {item.name for item in fields(Latency)}
    changes: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name.strip() not in names:
            raise SystemExit(f"--latency: unknown field {name!r}; choose from {sorted(names)}")
        try:
            changes[name.strip()] = float(value)
        except ValueError:
            raise SystemExit(f"--latency: {item!r} is not name=number") from None
    return changes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="kmflow against its baselines, measured in the same run; prints one "
        "markdown table and writes it, with the machine's description, to benchmarks/RESULTS.md.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, to check the harness (not written to "
        "RESULTS.md unless --results is given)",
    )  # fmt: skip
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated, of: {', '.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="alternated rounds per scenario (default 3)"
    )
    parser.add_argument("--size-mib", type=int, help="large upload/download size (default 1024)")
    parser.add_argument(
        "--big-size-mib", type=int, help="the extra kmflow upload for the memory target "
        "(default 4096; 0 skips it)",
    )  # fmt: skip
    parser.add_argument("--skip-big", action="store_true", help="skip the 4 GiB upload")
    parser.add_argument(
        "--workdir", type=Path, help="scratch space; a fresh directory is made inside it "
        "(default: a new /var/tmp/kmflow-bench-* directory), removed at the end",
    )  # fmt: skip
    parser.add_argument("--keep-workdir", action="store_true", help="do not remove the scratch")
    parser.add_argument("--results", type=Path, help="report file (default benchmarks/RESULTS.md)")
    parser.add_argument(
        "--latency", default="", help="databricks_latency: change the workspace latency model, "
        "e.g. commit_seconds=2,files_put_seconds=0.3 (fields of tests.datalake.latency_model."
        "Latency)",
    )  # fmt: skip
    parser.add_argument(
        "--before-rev", help="small_uploads, upload_steps: also run kmflow as it was at this "
        "git revision (one worker), for before/after figures in the same run",
    )  # fmt: skip
    return parser
