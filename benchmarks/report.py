"""The report: the table on stdout, and the same table with the machine's description and
the per-round figures in RESULTS.md."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks.options import Options
from benchmarks.results import Row, render_table

HOW = (
    "Every kmflow figure sits next to a baseline measured in the same run. Targets ran in "
    "alternation (A B C, A B C, ...) and each figure is the median over rounds (peak RSS: the "
    "largest of the rounds); ratio = kmflow / baseline. Latencies are from wrk; MB/s is "
    "decimal (10^6 bytes/s)."
)


def render(
    rows: Sequence[Row],
    machine: Sequence[tuple[str, str]],
    details: Sequence[str],
    options: Options,
    command: str,
) -> str:
    lines = ["# kmflow benchmark results", ""]
    if options.quick:
        lines += ["**Smoke run (`--quick`): tiny sizes, figures not meaningful.**", ""]
    lines += [f"Command: `{command}`, {options.rounds} round(s).", ""]
    lines += [f"- {name}: {value}" for name, value in machine]
    lines += ["", HOW, "", render_table(rows), "", "## Per round", ""]
    for block in details:
        lines += [block, ""]
    return "\n".join(lines).rstrip() + "\n"


def write(path: Path, text: str) -> None:
    path.write_text(text)
