"""Alternation: every target once per round, in order, bounded in rounds and in time."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from benchmarks.rounds import alternate


def test_targets_alternate_round_by_round() -> None:
    calls: list[str] = []

    def target(name: str) -> Callable[[int], int]:
        def measure(round_number: int) -> int:
            calls.append(f"{name}{round_number}")
            return round_number

        return measure

    samples = alternate({"A": target("A"), "B": target("B")}, rounds=3, budget_seconds=60)
    assert calls == ["A0", "B0", "A1", "B1", "A2", "B2"]
    assert samples == {"A": [0, 1, 2], "B": [0, 1, 2]}


def test_no_round_starts_after_the_budget_but_the_first_always_runs() -> None:
    ticks = itertools.count()  # each clock reading is one second later
    samples = alternate(
        {"A": lambda n: n, "B": lambda n: n},
        rounds=10,
        budget_seconds=2.5,
        clock=lambda: float(next(ticks)),
    )
    # deadline = 0 + 2.5; checks before rounds 1, 2, 3 read 1, 2, 3 -> round 3 not started
    assert samples == {"A": [0, 1, 2], "B": [0, 1, 2]}


def test_an_exhausted_budget_still_gives_one_full_round() -> None:
    samples = alternate({"A": lambda n: n}, rounds=5, budget_seconds=0)
    assert samples == {"A": [0]}


def test_each_sample_is_reported_as_it_arrives() -> None:
    seen: list[tuple[str, int, int]] = []
    alternate(
        {"A": lambda n: n * 10},
        rounds=2,
        budget_seconds=60,
        on_sample=lambda name, n, sample: seen.append((name, n, sample)),
    )
    assert seen == [("A", 0, 0), ("A", 1, 10)]


def test_zero_rounds_is_refused() -> None:
    with pytest.raises(ValueError):
        alternate({"A": lambda n: n}, rounds=0, budget_seconds=1)
