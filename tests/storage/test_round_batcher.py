"""RoundBatcher: which jobs share a round. Counts and membership, never speed."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest

from app.storage.round_batcher import BatcherClosed, RoundBatcher


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
    recorder_rounds = recorder.rounds
    slow_first = threading.Event()

    def run_round(jobs: Sequence[int]) -> None:
        if not recorder_rounds:
            slow_first.wait(2)  # a long first round: later rounds may linger (up to the cap)
        recorder(jobs)

    batcher: RoundBatcher[int] = RoundBatcher(run_round, max_jobs=10, name="test-linger")
    try:
        batcher.submit(0).wait(5)
        with batcher.expecting() as submit_later:
            early = batcher.submit(1)  # queued while job 2 is still on its way
            late = submit_later(2)
        assert early.wait(5) and late.wait(5)
    finally:
        batcher.close()

    assert recorder.rounds == [[0], [1, 2]]


def test_clients_answered_by_one_round_are_waited_for_instead_of_taking_turns() -> None:
    """Jobs 1-3 arrive while round [0] runs; 0's client comes straight back with job 4. The
    next round waits for it (4 were in flight around the last round) rather than leaving 4
    for a round of its own, after which the two groups would keep taking turns."""
    recorder = Recorder(hold_first=True)
    batcher: RoundBatcher[int] = RoundBatcher(recorder, max_jobs=10, name="test-in-step")
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


def test_an_announced_job_that_never_comes_does_not_hold_the_round() -> None:
    recorder = Recorder()
    batcher: RoundBatcher[int] = RoundBatcher(recorder, max_jobs=10, name="test-withdrawn")
    try:
        with batcher.expecting():
            ticket = batcher.submit(1)
        assert ticket.wait(5)
    finally:
        batcher.close()
    assert recorder.rounds == [[1]]


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


def test_close_finishes_queued_jobs_then_refuses_new_ones(
    batcher: RoundBatcher[int], recorder: Recorder
) -> None:
    batcher.submit(0)
    assert recorder.entered.wait(5)
    queued = batcher.submit(1)
    assert not batcher.wait_idle(timeout=0.05)  # a round is held open

    recorder.release.set()
    batcher.close()

    assert queued.done.is_set()
    assert recorder.rounds == [[0], [1]]
    with pytest.raises(BatcherClosed):
        batcher.submit(2)
