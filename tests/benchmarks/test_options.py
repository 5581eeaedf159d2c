"""The command line: defaults are the issue's sizes; a smoke run never overwrites RESULTS.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.options import FULL, MIB, RESULTS, SCENARIOS, parse_options
from benchmarks.preflight import disk_needed


def test_defaults_run_everything_at_the_issues_sizes() -> None:
    options = parse_options([])
    assert options.scenarios == SCENARIOS
    assert options.rounds == 3
    assert options.sizes == FULL
    assert FULL.large_bytes == 1024 * MIB and FULL.big_bytes == 4096 * MIB
    assert (FULL.small_count, FULL.small_bytes, FULL.concurrency) == (2000, 16 * 1024, 32)
    assert FULL.listing_records == (1_000, 10_000, 100_000)
    assert FULL.migration_files == 2000
    assert options.results == RESULTS


def test_quick_is_small_and_writes_no_report_unless_asked() -> None:
    quick = parse_options(["--quick"])
    assert quick.sizes.large_bytes < FULL.large_bytes
    assert quick.results is None
    assert parse_options(["--quick", "--results", "x.md"]).results == Path("x.md")


def test_only_keeps_the_canonical_order() -> None:
    options = parse_options(["--only", "listing, large_upload"])
    assert options.scenarios == ("large_upload", "listing")


def test_unknown_scenarios_are_refused() -> None:
    with pytest.raises(SystemExit):
        parse_options(["--only", "large_upload,uploads"])


def test_sizes_and_the_big_upload_can_be_changed_or_skipped() -> None:
    options = parse_options(["--size-mib", "256", "--rounds", "5"])
    assert (options.sizes.large_bytes, options.rounds) == (256 * MIB, 5)
    assert parse_options(["--skip-big"]).sizes.big_bytes is None
    assert parse_options(["--big-size-mib", "0"]).sizes.big_bytes is None
    assert parse_options(["--big-size-mib", "2048"]).sizes.big_bytes == 2048 * MIB


def test_rounds_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        parse_options(["--rounds", "0"])


def test_disk_needed_counts_every_kept_copy() -> None:
    options = parse_options(["--only", "large_upload,download", "--rounds", "2"])
    expected = FULL.large_bytes * (1 + 5 * 2) + 2 * 4096 * MIB + 2 * FULL.large_bytes
    assert disk_needed(options) == expected
    assert disk_needed(parse_options(["--only", "listing"])) == 0


def test_scenario_names_may_be_written_with_hyphens() -> None:
    assert parse_options(["--only", "databricks-latency"]).scenarios == ("databricks_latency",)


def test_the_latency_model_can_be_scaled_field_by_field() -> None:
    options = parse_options(["--latency", "commit_seconds=2, files_put_seconds=0.3"])
    assert options.latency == {"commit_seconds": 2.0, "files_put_seconds": 0.3}
    assert parse_options([]).latency == {}
    for bad in ("commit=2", "commit_seconds=fast"):
        with pytest.raises(SystemExit):
            parse_options(["--latency", bad])
