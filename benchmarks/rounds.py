"""Run several targets in alternation (A B C, A B C, ...), bounded in rounds and in time.

Measuring every target once per round, in turn, puts each of them through the same drift of
the machine (page cache, writeback, other tenants), so their medians can be compared; running
all of A's rounds first and then all of B's would not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T")


def alternate(
    targets: Mapping[str, Callable[[int], T]],
    rounds: int,
    budget_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    on_sample: Callable[[str, int, T], None] | None = None,
) -> dict[str, list[T]]:
    """Call every target with the round number, target by target, round after round.

    At least one full round always runs; no new round starts once `budget_seconds` have
    passed, so a slow machine gives fewer rounds rather than an endless run. A round is
    never cut short, so every target has the same number of samples.
    """
    if rounds < 1:
        raise ValueError("at least one round")
    samples: dict[str, list[T]] = {name: [] for name in targets}
    deadline = clock() + budget_seconds
    for round_number in range(rounds):
        if round_number > 0 and clock() >= deadline:
            break
        for name, measure in targets.items():
            sample = measure(round_number)
            samples[name].append(sample)
            if on_sample is not None:
                on_sample(name, round_number, sample)
    return samples
