"""One row of the report: a kmflow figure next to a baseline measured in the same run, their
ratio, and the issue's target for it; and the markdown table of those rows.

A row is data only, so scenarios can build rows and tests can check the arithmetic and the
verdicts without running anything.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from benchmarks.stats import ratio

T = TypeVar("T")


class Check(Enum):
    """What the target is a bound on: the ratio kmflow/baseline, or kmflow's own figure."""

    RATIO_AT_LEAST = ">="
    RATIO_AT_MOST = "<="
    VALUE_BELOW = "<"
    VALUE_AT_MOST = "<= value"


@dataclass(frozen=True)
class Target:
    check: Check
    limit: float
    unit: str = ""  # for VALUE_BELOW / VALUE_AT_MOST: the unit of the limit, as shown

    def met(self, value: float | None, value_ratio: float | None) -> bool | None:
        """None when the figure the target needs was not measured."""
        if self.check is Check.VALUE_BELOW:
            return None if value is None else value < self.limit
        if self.check is Check.VALUE_AT_MOST:
            return None if value is None else value <= self.limit
        if value_ratio is None:
            return None
        if self.check is Check.RATIO_AT_LEAST:
            return value_ratio >= self.limit
        return value_ratio <= self.limit

    def describe(self) -> str:
        if self.check is Check.VALUE_BELOW:
            return f"< {self.limit:g} {self.unit}".rstrip()
        if self.check is Check.VALUE_AT_MOST:
            return f"<= {self.limit:g} {self.unit}".rstrip()
        return f"{self.check.value} {self.limit:g}x"


@dataclass(frozen=True)
class Row:
    scenario: str
    metric: str
    kmflow: float | None
    unit: str = ""
    baseline_name: str = ""
    baseline: float | None = None
    targets: tuple[Target, ...] = ()
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return ratio(self.kmflow, self.baseline)

    @property
    def met(self) -> bool | None:
        """All targets met; None without targets or when a figure they need is missing."""
        verdicts = [target.met(self.kmflow, self.ratio) for target in self.targets]
        if not verdicts:
            return None
        if False in verdicts:
            return False
        return None if None in verdicts else True


def failed_row(scenario: str, error: str) -> Row:
    """A scenario that could not be measured still gets its line in the table."""
    lines = [line.strip() for line in error.splitlines() if line.strip()] or ["unknown error"]
    raised = [line for line in lines[1:] if _EXCEPTION_LINE.match(line)]
    cause = raised[-1] if raised else lines[-1]
    summary = lines[0] if len(lines) == 1 else f"{lines[0]} ... {cause}"
    return Row(scenario, "(scenario failed)", None, note=summary[:300])


# "TypeError: ..." in a server log's traceback: the line that says what went wrong.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


HEADER = (
    "| scenario | metric | kmflow | baseline | baseline value | ratio | target | met | note |",
    "|---|---|---:|---|---:|---:|---|---|---|",
)


def render_table(rows: Iterable[Row]) -> str:
    lines = list(HEADER)
    for row in rows:
        cells = [
            row.scenario,
            row.metric,
            with_unit(row.kmflow, row.unit),
            row.baseline_name or "-",
            with_unit(row.baseline, row.unit) if row.baseline_name else "-",
            "-" if row.ratio is None else f"{fmt(row.ratio)}x",
            " and ".join(target.describe() for target in row.targets) or "-",
            verdict(row.met),
            row.note.replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(met: bool | None) -> str:
    if met is None:
        return "-"
    return "yes" if met else "**no**"


def with_unit(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{fmt(value)} {unit}".rstrip()


def fmt(value: float) -> str:
    """Three significant figures or so: enough to compare, few enough to read."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def round_details(title: str, samples: Mapping[str, Sequence[T]], show: Callable[[T], str]) -> str:
    """A markdown block listing every target's figure in every round, in the order run."""
    rounds = max((len(values) for values in samples.values()), default=0)
    lines = [f"**{title}**", ""]
    for number in range(rounds):
        figures = "; ".join(
            f"{name} {show(values[number])}"
            for name, values in samples.items()
            if number < len(values)
        )
        lines.append(f"- round {number + 1}: {figures}")
    return "\n".join(lines)
