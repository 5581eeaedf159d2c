"""The few statistics the report uses, in one place so every scenario computes them alike.

Figures are medians over alternated rounds (large transfers drift by ~30% over minutes, so a
single run, or a mean pulled by one slow round, would mislead); latency percentiles use the
nearest-rank rule so a p99 is always a latency that was actually observed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

MB = 1_000_000
MIB = 1024 * 1024


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in 0..1) of unsorted samples."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in 0..1, not {fraction}")
    ordered = sorted(samples)
    return float(ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))])


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline, or None when either is missing or the baseline is zero."""
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


def megabytes_per_second(nbytes: int, seconds: float) -> float:
    """Decimal MB/s, as dd and curl print them."""
    if seconds <= 0:
        raise ValueError(f"a transfer cannot take {seconds} s")
    return nbytes / MB / seconds
