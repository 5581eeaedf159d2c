"""Rows, targets and the markdown table: the verdicts must follow the issue's targets."""

from __future__ import annotations

from benchmarks.results import (
    Check,
    Row,
    Target,
    failed_row,
    fmt,
    render_table,
    round_details,
)

AT_LEAST_2X = Target(Check.RATIO_AT_LEAST, 2)
AT_MOST_2X = Target(Check.RATIO_AT_MOST, 2)
UNDER_100_MIB = Target(Check.VALUE_BELOW, 100, "MiB")


def test_ratio_targets_compare_kmflow_to_its_baseline() -> None:
    assert Row("s", "m", 300.0, baseline_name="b", baseline=150.0, targets=(AT_LEAST_2X,)).met
    assert not Row("s", "m", 299.0, baseline=150.0, targets=(AT_LEAST_2X,)).met
    assert Row("s", "m", 19.0, baseline=10.0, targets=(AT_MOST_2X,)).met
    assert not Row("s", "m", 21.0, baseline=10.0, targets=(AT_MOST_2X,)).met


def test_value_target_ignores_the_baseline() -> None:
    assert Row("s", "m", 60.0, baseline=500.0, targets=(UNDER_100_MIB,)).met
    assert not Row("s", "m", 100.0, targets=(UNDER_100_MIB,)).met


def test_an_at_most_value_target_includes_its_limit() -> None:
    at_most = Target(Check.VALUE_AT_MOST, 0.2, "statements")
    assert Row("s", "m", 0.2, targets=(at_most,)).met
    assert not Row("s", "m", 0.21, targets=(at_most,)).met
    assert at_most.describe() == "<= 0.2 statements"


def test_every_target_of_a_row_must_hold() -> None:
    both = (Target(Check.VALUE_BELOW, 20, "ms"), AT_MOST_2X)
    assert Row("s", "m", 5.0, baseline=4.0, targets=both).met
    assert not Row("s", "m", 25.0, baseline=20.0, targets=both).met  # flat but slow
    assert not Row("s", "m", 9.0, baseline=1.0, targets=both).met  # fast but not flat


def test_no_verdict_without_targets_or_without_the_figures() -> None:
    assert Row("s", "m", 1.0, baseline=1.0).met is None
    assert Row("s", "m", 1.0, targets=(AT_LEAST_2X,)).met is None  # no baseline measured
    assert Row("s", "m", None, targets=(UNDER_100_MIB,)).met is None


def test_table_shows_figures_ratio_target_and_verdict() -> None:
    row = Row(
        "1 large upload", "MB/s", 250.0, "MB/s", "dd", 400.0,
        (Target(Check.RATIO_AT_LEAST, 0.8),), "a note",
    )  # fmt: skip
    lines = render_table([row]).splitlines()
    assert lines[0].startswith("| scenario | metric | kmflow | baseline |")
    assert lines[2] == (
        "| 1 large upload | MB/s | 250 MB/s | dd | 400 MB/s | 0.62x | >= 0.8x | **no** | a note |"
    )


def test_a_failed_scenario_keeps_its_line_with_the_first_and_last_words() -> None:
    error = (
        "RuntimeError: kmflow exited at startup:\n  File x\nModuleNotFoundError: app.y\n"
        "2026-11-26 ERROR uvicorn.error Application startup failed. Exiting.\n"
    )
    line = render_table([failed_row("listing", error)]).splitlines()[2]
    assert line == (
        "| listing | (scenario failed) | n/a | - | - | - | - | - "
        "| RuntimeError: kmflow exited at startup: ... ModuleNotFoundError: app.y |"
    )


def test_numbers_keep_about_three_significant_figures() -> None:
    assert [fmt(v) for v in (12345.6, 123.4, 12.34, 1.234)] == ["12,346", "123", "12.3", "1.23"]


def test_round_details_list_each_round_in_the_order_run() -> None:
    text = round_details("T", {"A": [1, 2], "B": [3, 4]}, lambda n: f"{n} x")
    assert text.splitlines() == ["**T**", "", "- round 1: A 1 x; B 3 x", "- round 2: A 2 x; B 4 x"]
