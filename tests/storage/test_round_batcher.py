"""RoundBatcher: which jobs share a round. Counts and membership, never speed.

Where a test is about lingering, the batcher may linger up to 30 s (`patient`): a round that
starts early is then a bug, not a slow machine, and the test still ends as soon as the round
has what it waits for.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest

from app.storage.databricks.round_batcher import BatcherClosed, RoundBatcher


class Recorder:
    """A round function that records its rounds and can be held inside one."""

    def __init__(self, hold_first: bool = False) -> None:
        self.rounds: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, jobs: Sequence[int]) -> None:
        self.rounds.append(list(jobs))
        self.entered.set()
        self.release.wait(10)


def patient(recorder: Recorder, max_jobs: int = 10) -> RoundBatcher[int]:
    """A batcher that may linger as long as the last round took, up to 30 s."""
    return RoundBatcher(
        recorder, max_jobs=max_jobs, name="test-rounds", linger_fraction=1, max_linger_seconds=30
    )


def warm_up(batcher: RoundBatcher[int], recorder: Recorder, seconds: float = 1.0) -> None:
    """A first round lasting `seconds`, so the next one may linger that long."""
    recorder.release.clear()
    threading.Timer(seconds, recorder.release.set).start()
    assert batcher.submit(0).wait(10)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder(hold_first=True)


@pytest.fixture
def batcher(recorder: Recorder) -> Iterator[RoundBatcher[int]]:
    batcher: RoundBatcher[int] = RoundBatcher(recorder, max_jobs=4, name="test-rounds")
    yield batcher
    recorder.release.set()
    batcher.close()


def test_jobs_queued_while_a_round_runs_share_the_next_round(
    batcher: RoundBatcher[int], recorder: Recorder
) -> None:
    first = batcher.submit(0)
    assert recorder.entered.wait(5)
    tickets = [batcher.submit(n) for n in (1, 2, 3)]
    assert not first.done.is_set()  # still inside its round

    recorder.release.set()

    assert all(ticket.wait(5) for ticket in [first, *tickets])
    assert recorder.rounds == [[0], [1, 2, 3]]


def test_a_round_takes_at_most_max_jobs_in_order(
    batcher: RoundBatcher[int], recorder: Recorder
) -> None:
    batcher.submit(0)
    assert recorder.entered.wait(5)
    tickets = batcher.submit_all(list(range(1, 11)))
    recorder.release.set()

    assert all(ticket.wait(5) for ticket in tickets)
    assert recorder.rounds == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]


def test_a_round_waits_for_a_job_announced_as_on_its_way() -> None:
    recorder = Recorder()
    batcher = patient(recorder)
    try:
        warm_up(batcher, recorder)
        with batcher.expecting() as submit_later:
            early = batcher.submit(1)  # queued while job 2 is still on its way
            late = submit_later(2)
        assert early.wait(5) and late.wait(5)
    finally:
        batcher.close()

    assert recorder.rounds == [[0], [1, 2]]


def test_an_announced_job_that_never_comes_no_longer_holds_the_round() -> None:
    recorder = Recorder()
    batcher = patient(recorder)
    try:
        warm_up(batcher, recorder)
        with batcher.expecting():
            ticket = batcher.submit(1)
        assert ticket.wait(10)  # not the 30 s the round could have lingered for it
    finally:
        batcher.close()
    assert recorder.rounds == [[0], [1]]


def test_clients_answered_by_one_round_are_waited_for_instead_of_taking_turns() -> None:
    """Jobs 1-3 arrive while round [0] runs; 0's client comes straight back with job 4. The
    next round waits for it (4 were in flight around the last round) rather than leaving 4
    for a round of its own, after which the two groups would keep taking turns."""
    recorder = Recorder(hold_first=True)
    batcher = patient(recorder)
    try:
        first = batcher.submit(0)
        assert recorder.entered.wait(5)
        others = batcher.submit_all([1, 2, 3])
        threading.Timer(1.0, recorder.release.set).start()  # a long round: lingering may pay
        assert first.wait(5)
        back = batcher.submit(4)
        assert all(ticket.wait(5) for ticket in [*others, back])
    finally:
        recorder.release.set()
        batcher.close()

    assert recorder.rounds == [[0], [1, 2, 3, 4]]


def test_after_idling_a_round_starts_at_once() -> None:
    """The last round said 4 were in flight, but that was before a pause: job 4 is not held
    for company that is not coming, so job 5, sent a moment later, needs a round of its own."""
    rounds: list[list[int]] = []

    def half_second_rounds(jobs: Sequence[int]) -> None:
        rounds.append(list(jobs))
        threading.Event().wait(0.5)

    batcher: RoundBatcher[int] = RoundBatcher(
        half_second_rounds, max_jobs=10, name="test-idle", linger_fraction=1,
        max_linger_seconds=30,
    )  # fmt: skip
    try:
        assert all(ticket.wait(10) for ticket in batcher.submit_all([0, 1, 2, 3]))
        threading.Event().wait(1.0)  # idle for longer than a round
        fourth = batcher.submit(4)
        threading.Event().wait(0.1)
        fifth = batcher.submit(5)
        assert fourth.wait(10) and fifth.wait(10)
    finally:
        batcher.close()
    assert rounds == [[0, 1, 2, 3], [4], [5]]


def test_a_failing_round_ends_its_jobs_and_later_rounds_still_run() -> None:
    calls: list[list[int]] = []

    def run_round(jobs: Sequence[int]) -> None:
        calls.append(list(jobs))
        if jobs[0] == 0:
            raise RuntimeError("boom")

    batcher: RoundBatcher[int] = RoundBatcher(run_round, max_jobs=10, name="test-failing")
    try:
        assert batcher.submit(0).wait(5)
        assert batcher.submit(1).wait(5)
    finally:
        batcher.close()
    assert calls == [[0], [1]]


def test_close_ends_the_round_in_progress_and_releases_queued_jobs_without_one(
    batcher: RoundBatcher[int], recorder: Recorder
) -> None:
    running = batcher.submit(0)
    assert recorder.entered.wait(5)
    queued = batcher.submit(1)
    assert not batcher.wait_idle(timeout=0.05)  # a round is held open

    threading.Timer(0.2, recorder.release.set).start()
    batcher.close()

    assert running.done.is_set() and queued.done.is_set()
    assert recorder.rounds == [[0]]  # job 1 never had a round
    assert batcher.wait_idle(timeout=0)
    with pytest.raises(BatcherClosed):
        batcher.submit(2)
