"""The statistics behind every figure in the report."""

from __future__ import annotations

import pytest

from benchmarks.stats import median, megabytes_per_second, percentile, ratio


def test_median_of_odd_and_even_counts() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_median_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        median([])


def test_percentile_is_an_observed_sample() -> None:
    samples = [float(n) for n in range(1, 101)]  # 1..100
    assert percentile(samples, 0.5) == 51.0  # nearest rank of 49.5 -> index 50
    assert percentile(samples, 0.99) == 99.0
    assert percentile(samples, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0


def test_percentile_refuses_fractions_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="fraction"):
        percentile([1.0], 99)


def test_ratio_is_none_when_a_figure_is_missing_or_the_baseline_zero() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(3.0, None) is None
    assert ratio(3.0, 0.0) is None


def test_megabytes_per_second_is_decimal() -> None:
    assert megabytes_per_second(1_000_000_000, 4.0) == 250.0
    with pytest.raises(ValueError):
        megabytes_per_second(1, 0.0)
