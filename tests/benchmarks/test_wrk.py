"""Reading wrk's output as bounded.lua prints it."""

from __future__ import annotations

import pytest

from benchmarks.wrk import parse_output

DONE = (
    "DONE: requests=2000 duration_us=4100000 status=0 connect=0 read=0 write=0 timeout=0 "
    "p50_us=35967 p90_us=50000 p99_us=87882 max_us=90000\n"
)


def test_a_bounded_run_counts_from_first_request_to_nth_response() -> None:
    text = "Running 90s test\nBOUNDED: 2000 responses (0 non-2xx) in 4.000 s = 500.0 req/s\n" + DONE
    result = parse_output(text)
    assert (result.responses, result.seconds, result.requests_per_second) == (2000, 4.0, 500.0)
    assert (result.p50_ms, result.p99_ms) == (35.967, 87.882)
    assert result.complete and result.ok


def test_a_run_stopped_by_the_time_cap_uses_wrks_totals_and_is_not_ok() -> None:
    result = parse_output(DONE.replace("requests=2000", "requests=1500"))
    assert (result.responses, result.seconds, result.complete) == (1500, 4.1, False)
    assert not result.ok


def test_errors_are_counted_and_the_first_one_kept() -> None:
    text = (
        'FIRST_ERROR: 500 {"error":"internal_error"}\n'
        "BOUNDED: 10 responses (3 non-2xx) in 1.000 s = 10.0 req/s\n"
        + DONE.replace("read=0", "read=2")
    )
    result = parse_output(text)
    assert (result.non_2xx, result.socket_errors) == (3, 2)
    assert result.first_error == '500 {"error":"internal_error"}'
    assert not result.ok


def test_output_without_the_scripts_summary_is_an_error() -> None:
    with pytest.raises(ValueError, match="no DONE line"):
        parse_output("unable to connect to 127.0.0.1:1 Connection refused")
