"""`kmflow upload` against a real server: one record per file however often it is retried,
every file tried, and nothing sent when the command itself is wrong."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import httpx
import pytest

from app.client import upload as upload_module
from app.client.api import ApiClient
from app.client.errors import ExitCode
from app.client.retry import RetryPolicy
from app.client.upload import upload_all
from tests.client.conftest import Kmflow, write_file
from tests.conftest import API_KEY
from tests.live_server import LiveServer


class AnswerLostOnce(httpx.BaseTransport):
    """The real server handles every request, but the answer to the first upload never
    reaches the client: the fault (a dropped connection after the server committed) that
    makes a naive retry store the file twice."""

    def __init__(self) -> None:
        self.real = httpx.HTTPTransport()
        self.upload_keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.real.handle_request(request)
        if request.url.path.endswith("/evidence/upload"):
            self.upload_keys.append(request.headers.get("Idempotency-Key"))
            if len(self.upload_keys) == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection reset before the answer", request=request)
        return response

    def close(self) -> None:
        self.real.close()


def test_a_retry_after_a_lost_answer_stores_the_file_once(
    live_server: LiveServer, kmflow: Kmflow, tmp_path: Path
) -> None:
    source = write_file(tmp_path / "minutes.pdf", b"board minutes, 2026-11-25\n" * 1000)
    transport = AnswerLostOnce()
    notes: list[str] = []
    out = io.StringIO()
    no_wait = RetryPolicy(attempts=3, sleep=lambda _: None)

    with ApiClient(live_server.url, API_KEY, no_wait, notes.append, transport) as api:
        code = upload_all(api, [source], "ENG-R", None, quiet=False, as_json=True, out=out)

    assert code == ExitCode.OK
    assert len(transport.upload_keys) == 2
    assert transport.upload_keys[0] == transport.upload_keys[1]
    assert transport.upload_keys[0] is not None and len(transport.upload_keys[0]) == 32
    assert len(notes) == 1 and "retrying" in notes[0] and "ReadError" in notes[0]
    record = json.loads(out.getvalue())
    assert record["replayed"] is True
    listed = kmflow("ls", "ENG-R", "--json")
    assert listed.code == 0, listed.err
    assert [json.loads(line)["id"] for line in listed.out.splitlines()] == [record["id"]]


def test_each_file_and_run_gets_its_own_idempotency_key(kmflow: Kmflow, tmp_path: Path) -> None:
    """Two runs of the same file are two uploads (a person asked twice); the server links them
    as duplicates rather than replaying the first."""
    source = write_file(tmp_path / "a.txt", b"same bytes")

    first = kmflow("upload", str(source), "-e", "ENG-K", "--json")
    second = kmflow("upload", str(source), "-e", "ENG-K", "--json")

    assert first.code == second.code == 0, first.err + second.err
    one, two = json.loads(first.out), json.loads(second.out)
    assert one["id"] != two["id"]
    assert two["duplicate_of"] == [one["id"]]
    assert f"same bytes as earlier evidence {one['id']}" in second.err


def test_several_files_are_each_stored_and_listed(kmflow: Kmflow, tmp_path: Path) -> None:
    files = [write_file(tmp_path / f"{name}.txt", name.encode() * 10) for name in "abc"]

    metadata = '{"custodian": "cfo"}'
    uploaded = kmflow("upload", *map(str, files), "--engagement", "ENG-M", "--metadata", metadata)

    assert uploaded.code == 0, uploaded.err
    ids = [line.split()[0] for line in uploaded.out.splitlines()]
    assert [line.split()[1] for line in uploaded.out.splitlines()] == list(map(str, files))
    listed = kmflow("ls", "ENG-M", "--json")
    records = [json.loads(line) for line in listed.out.splitlines()]
    assert sorted(record["id"] for record in records) == sorted(ids)
    assert {record["file_name"] for record in records} == {"a.txt", "b.txt", "c.txt"}
    assert {json.loads(record["metadata_json"])["custodian"] for record in records} == {"cfo"}
    for record, path in zip(sorted(records, key=lambda r: r["file_name"]), files, strict=True):
        assert record["content_hash"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_refused_file_fails_the_run_but_not_the_other_files(
    kmflow: Kmflow, tmp_path: Path
) -> None:
    good = write_file(tmp_path / "good.txt", b"evidence")
    empty = write_file(tmp_path / "empty.txt", b"")

    uploaded = kmflow("upload", str(empty), str(good), "-e", "ENG-F")

    assert uploaded.code == ExitCode.REFUSED
    assert uploaded.out.split()[1:] == [str(good)]
    assert f"kmflow: upload {empty}: server answered 422 invalid_request" in uploaded.err
    assert "Traceback" not in uploaded.err
    listed = kmflow("ls", "ENG-F", "--json")
    assert [json.loads(line)["file_name"] for line in listed.out.splitlines()] == ["good.txt"]


def test_a_missing_file_or_bad_metadata_sends_nothing(kmflow: Kmflow, tmp_path: Path) -> None:
    good = write_file(tmp_path / "good.txt", b"evidence")

    missing = kmflow("upload", str(good), str(tmp_path / "nope.txt"), "-e", "ENG-U")
    bad_json = kmflow("upload", str(good), "-e", "ENG-U", "--metadata", "[1, 2]")

    assert missing.code == bad_json.code == ExitCode.USAGE
    nope = tmp_path / "nope.txt"
    assert missing.err.strip() == f"kmflow: {nope}: no such file (or not a regular file)"
    assert bad_json.err.strip() == "kmflow: --metadata must be a JSON object"
    listed = kmflow("ls", "ENG-U")
    assert (listed.code, listed.out) == (0, "")
    assert listed.err.strip() == "kmflow: no evidence in ENG-U"


def test_ls_filters_by_content_hash_and_prints_a_table(kmflow: Kmflow, tmp_path: Path) -> None:
    first = write_file(tmp_path / "one.bin", b"1" * 3000)
    other = write_file(tmp_path / "two.bin", b"2")
    ids = {}
    for path in (first, other, first):
        run = kmflow("upload", str(path), "-e", "ENG-H", "--json")
        ids.setdefault(path.name, []).append(json.loads(run.out)["id"])
    wanted = hashlib.sha256(first.read_bytes()).hexdigest()

    table = kmflow("ls", "ENG-H", "--content-hash", wanted)

    assert table.code == 0, table.err
    header, *rows = table.out.splitlines()
    assert header.split() == ["ID", "STORED_AT", "SIZE", "NAME"]
    assert [row.split()[0] for row in rows] == ids["one.bin"][::-1]  # newest first
    assert all(row.split()[2:] == ["2.9", "KiB", "one.bin"] for row in rows)


def test_a_file_changed_after_hashing_is_refused_not_stored(
    kmflow: Kmflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone saves over the file between the client's hash and its send: the server gets
    bytes that do not match the Repr-Digest and must refuse them."""
    source = write_file(tmp_path / "draft.docx", b"version 1 " * 1000)
    hash_file = upload_module.hash_file

    def hash_then_edit(path: Path, *, quiet: bool) -> tuple[str, int]:
        hashed = hash_file(path, quiet=quiet)
        path.write_bytes(b"version 2 " * 1000)  # same size, other bytes
        return hashed

    monkeypatch.setattr(upload_module, "hash_file", hash_then_edit)
    run = kmflow("upload", str(source), "-e", "ENG-X")

    assert run.code == ExitCode.DIGEST_MISMATCH
    assert run.out == ""
    assert f"kmflow: upload {source}: server answered 400 digest_mismatch" in run.err
    assert kmflow("ls", "ENG-X").out == ""
