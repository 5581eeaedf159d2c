"""Failures a person meets: no key, a wrong key, no server, a busy server. One line each,
the documented exit code, and the key never shown."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from app.cli import main
from app.client.api import ApiClient
from app.client.errors import ExitCode
from app.client.listing import records
from app.client.retry import RetryPolicy
from app.client.upload import upload_file
from tests.client.conftest import Kmflow, write_file
from tests.live_server import free_port

WRONG_KEY = "wrong-key-but-long-enough-7f3a9c"


def test_a_missing_key_says_how_to_give_one(kmflow: Kmflow) -> None:
    run = kmflow("ls", "ENG-A", key=None)

    assert run.code == ExitCode.AUTH
    assert run.out == ""
    (line,) = run.err.strip().splitlines()
    assert line.startswith("kmflow: http://127.0.0.1:")
    assert "requires an API key (401 unauthorized" in line
    assert "KMFLOW_API_KEY" in line


def test_a_wrong_key_is_refused_without_being_shown(kmflow: Kmflow, tmp_path: Path) -> None:
    files = [str(write_file(tmp_path / name, b"x")) for name in "ab"]

    from_env = kmflow("ls", "ENG-A", key=WRONG_KEY)
    from_flag = kmflow("upload", *files, "-e", "ENG-A", "--api-key", WRONG_KEY, key=None)

    assert from_env.code == from_flag.code == ExitCode.AUTH
    assert "refused the API key" in from_env.err
    # Every later file would be refused the same way: the run stops at the first.
    assert len(from_flag.err.strip().splitlines()) == 1, from_flag.err
    for run in (from_env, from_flag):
        assert WRONG_KEY not in run.out + run.err
        assert WRONG_KEY[:8] not in run.err


def test_no_server_is_unavailable_after_the_retries(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KMFLOW_API_KEY", WRONG_KEY)
    url = f"http://user:{WRONG_KEY}@127.0.0.1:{free_port()}"

    code = main(["ls", "ENG-A", "--url", url, "--retries", "1"])

    err = capsys.readouterr().err
    assert code == ExitCode.UNAVAILABLE
    retry_note, final = err.strip().splitlines()
    assert "retrying in 0.5s (attempt 2 of 2)" in retry_note
    assert final.startswith("kmflow: list ENG-A: connection to http://127.0.0.1:")
    assert final.endswith("(gave up after 2 attempts)")
    assert WRONG_KEY not in err


def test_a_url_that_is_not_http_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["ls", "ENG-A", "--url", "ftp://example.org"])

    assert code == ExitCode.USAGE
    assert capsys.readouterr().err.strip() == (
        "kmflow: --url must be an http:// or https:// URL, not 'ftp://example.org'"
    )


def test_a_busy_server_is_retried_after_the_time_it_asks() -> None:
    """503 with Retry-After, then an answer (a fault a real server shows only under load)."""
    busy = {"error": "storage_unavailable", "detail": "warehouse starting"}
    page = {"items": [{"id": "a", "content_hash": "h"}], "next_cursor": None}
    answers = [
        httpx.Response(503, headers={"Retry-After": "2"}, json=busy),
        httpx.Response(200, json=page),
    ]
    waits: list[float] = []
    notes: list[str] = []
    policy = RetryPolicy(attempts=3, sleep=waits.append)
    transport = httpx.MockTransport(lambda request: answers.pop(0))

    with ApiClient("http://kmflow.test", "k", policy, notes.append, transport) as api:
        listed = list(records(api, "ENG-A"))

    assert listed == [{"id": "a", "content_hash": "h"}]
    assert waits == [2.0]
    assert notes == [
        "list ENG-A: server answered 503 storage_unavailable: warehouse starting; "
        "retrying in 2.0s (attempt 2 of 3)"
    ]


def test_an_upload_still_being_stored_is_asked_for_again_with_the_same_key(
    tmp_path: Path,
) -> None:
    """The answer to a retry that overtook its first attempt (a timing a real server shows
    only when the client gave up waiting): 409 in progress, then the first upload's record."""
    source = write_file(tmp_path / "memo.txt", b"memo")
    record = {"id": "r1", "content_hash": hashlib.sha256(b"memo").hexdigest(), "size_bytes": 4}
    in_progress = {"error": "idempotency_key_in_progress", "detail": "still storing"}
    answers = [
        httpx.Response(409, headers={"Retry-After": "1"}, json=in_progress),
        httpx.Response(201, json=record | {"replayed": True}),
    ]
    keys: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("Idempotency-Key"))
        return answers.pop(0)

    waits: list[float] = []
    policy = RetryPolicy(attempts=3, sleep=waits.append)
    transport = httpx.MockTransport(answer)
    with ApiClient("http://kmflow.test", "k", policy, lambda _: None, transport) as api:
        stored = upload_file(api, source, "ENG-A", None, quiet=True)

    assert stored["id"] == "r1"
    assert waits == [1.0]
    assert len(keys) == 2 and keys[0] == keys[1] is not None
