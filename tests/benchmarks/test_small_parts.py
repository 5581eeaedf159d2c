"""Small helpers: nginx's config, labels, /proc parsing, seeding SQL, request kinds."""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.cpu_time import cpu_time, parse_stat_ticks
from benchmarks.labels import count_label, size_label
from benchmarks.list_latency import synthetic_records
from benchmarks.listing_seed import insert_statement
from benchmarks.memory import parse_vmhwm_kib, process_tree
from benchmarks.nginx import TEMPLATE, render_config
from tests.datalake.latency_model import classify


def test_nginx_config_is_filled_in_completely() -> None:
    config = render_config(TEMPLATE.read_text(), Path("/scratch/nginx"), 18080)
    assert "listen 127.0.0.1:18080;" in config
    assert "root /scratch/nginx/www;" in config
    assert "@" not in config


def test_labels() -> None:
    assert [size_label(n) for n in (1 << 30, 16 << 10, 48 << 20, 1000)] == [
        "1 GiB", "16 KiB", "48 MiB", "1000 B",
    ]  # fmt: skip
    assert [count_label(n) for n in (100_000, 2000, 1500, 40)] == ["100k", "2k", "1500", "40"]


def test_vmhwm_from_proc_status() -> None:
    assert parse_vmhwm_kib("Name:\tpython\nVmPeak:\t 1 kB\nVmHWM:\t   60544 kB\n") == 60544
    assert os.getpid() in process_tree(os.getpid())


def test_cpu_ticks_from_proc_stat_whatever_the_command_name() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 731 129 0 0 20 0 3 0"
    assert parse_stat_ticks(stat) == (731, 129)
    spent = cpu_time([os.getpid()])
    sum(range(3_000_000))  # some user time
    assert (cpu_time([os.getpid()]) - spent).user_seconds > 0


def test_seeding_sql_escapes_quotes_and_writes_nulls() -> None:
    record = next(synthetic_records(1, "list-1")).model_copy(
        update={"file_name": "it's.pdf", "metadata_json": None}
    )
    statement = insert_statement("`c`.`s`.`t`", [record])
    assert statement.startswith("INSERT INTO `c`.`s`.`t` (id, engagement_id, file_name,")
    assert "'it''s.pdf'" in statement and statement.endswith(", NULL)")


def test_request_kinds() -> None:
    assert classify("PUT", "/api/2.0/fs/files/Volumes/c/s/v/x") == "files PUT"
    assert classify("POST", "/api/2.0/sql/statements") == "sql execute"
    assert classify("GET", "/api/2.0/sql/statements/abc") == "sql poll/cancel"
    assert classify("GET", "/api/2.1/unity-catalog/volumes/c.s.v") == "unity catalog"
