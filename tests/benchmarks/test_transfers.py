"""Reading curl's -w line and dd's statistics."""

from __future__ import annotations

import pytest

from benchmarks.transfers import parse_dd, parse_write_out


def test_curl_write_out_line() -> None:
    assert parse_write_out("201 5.222507 1073742029 512\n") == (201, 5.222507, 1073742029, 512)


def test_dd_statistics_line() -> None:
    stderr = (
        "1024+0 records in\n1024+0 records out\n"
        "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 4.09577 s, 262 MB/s\n"
    )
    assert parse_dd(stderr) == (1073741824, 4.09577)


def test_dd_without_statistics_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_dd("dd: failed to open 'x': File exists")
