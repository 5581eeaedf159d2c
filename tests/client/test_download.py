"""`kmflow download` against a real server: only verified bytes ever get the target name."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.client.api import ApiClient
from app.client.download import download, safe_file_name
from app.client.errors import ExitCode
from app.client.retry import RetryPolicy
from tests.client.conftest import Kmflow, write_file
from tests.conftest import API_KEY
from tests.live_server import LiveServer

CONTENT = b"".join(f"line {n} of the interview transcript\n".encode() for n in range(20000))


def upload(kmflow: Kmflow, path: Path, engagement: str = "ENG-D") -> str:
    run = kmflow("upload", str(path), "-e", engagement, "--json")
    assert run.code == 0, run.err
    evidence_id: str = json.loads(run.out)["id"]
    return evidence_id


def test_bytes_that_do_not_match_the_record_are_discarded(
    kmflow: Kmflow, tmp_path: Path, backend_env: dict[str, str]
) -> None:
    evidence_id = upload(kmflow, write_file(tmp_path / "transcript.txt", CONTENT))
    # Bit rot in the store: same length, one byte changed; the server serves it as is.
    (stored,) = Path(backend_env["LOCAL_STORAGE_PATH"]).rglob(f"{evidence_id}_*")
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    stored.write_bytes(bytes(damaged))

    run = kmflow("download", "ENG-D", evidence_id)

    assert run.code == ExitCode.DIGEST_MISMATCH
    assert run.out == ""
    assert "does not match" not in run.err  # a fresh download: no second attempt
    assert hashlib.sha256(CONTENT).hexdigest() in run.err
    assert "nothing was kept" in run.err
    assert list(Path.cwd().iterdir()) == []


def test_an_existing_file_is_kept_unless_forced(kmflow: Kmflow, tmp_path: Path) -> None:
    evidence_id = upload(kmflow, write_file(tmp_path / "transcript.txt", CONTENT))
    mine = write_file(Path.cwd() / "transcript.txt", b"my own notes")

    refused = kmflow("download", "ENG-D", evidence_id)
    forced = kmflow("download", "ENG-D", evidence_id, "--force")

    assert refused.code == ExitCode.USAGE
    assert refused.err.strip() == "kmflow: transcript.txt exists; pass --force to replace it"
    assert forced.code == 0, forced.err
    assert mine.read_bytes() == CONTENT
    assert sorted(path.name for path in Path.cwd().iterdir()) == ["transcript.txt"]


def test_output_may_name_a_file_or_a_directory(kmflow: Kmflow, tmp_path: Path) -> None:
    evidence_id = upload(kmflow, write_file(tmp_path / "transcript.txt", CONTENT))
    into = tmp_path / "into"
    into.mkdir()

    as_file = kmflow("download", "ENG-D", evidence_id, "-o", str(tmp_path / "copy.txt"))
    as_dir = kmflow("download", "ENG-D", evidence_id, "--output", str(into))

    assert (as_file.code, as_dir.code) == (0, 0), as_file.err + as_dir.err
    assert as_file.out.strip() == str(tmp_path / "copy.txt")
    assert as_dir.out.strip() == str(into / "transcript.txt")
    assert (tmp_path / "copy.txt").read_bytes() == (into / "transcript.txt").read_bytes() == CONTENT
    assert sorted(path.name for path in into.iterdir()) == ["transcript.txt"]


@pytest.mark.parametrize(
    "leftover",
    [CONTENT[: len(CONTENT) // 3], b"X" * (len(CONTENT) // 3)],
    ids=["an earlier run's prefix", "bytes of some other file"],
)
def test_a_leftover_part_file_ends_in_the_right_bytes(
    kmflow: Kmflow, tmp_path: Path, leftover: bytes
) -> None:
    evidence_id = upload(kmflow, write_file(tmp_path / "transcript.txt", CONTENT))
    write_file(Path.cwd() / "transcript.txt.part", leftover)

    run = kmflow("download", "ENG-D", evidence_id)

    assert run.code == 0, run.err
    assert (Path.cwd() / "transcript.txt").read_bytes() == CONTENT
    assert sorted(path.name for path in Path.cwd().iterdir()) == ["transcript.txt"]


class DropsMidway(httpx.SyncByteStream):
    def __init__(self, real: httpx.SyncByteStream, after: int) -> None:
        self.real = real
        self.after = after

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self.real:
            piece = chunk[: self.after - sent]
            sent += len(piece)
            yield piece
            if sent >= self.after:
                raise httpx.ReadError("connection reset mid-body")

    def close(self) -> None:
        self.real.close()


class ContentDropsOnce(httpx.BaseTransport):
    """The real server, but the first content body breaks off after `after` bytes."""

    def __init__(self, after: int) -> None:
        self.real = httpx.HTTPTransport()
        self.after = after
        self.content_ranges: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.real.handle_request(request)
        if not request.url.path.endswith("/content"):
            return response
        self.content_ranges.append(request.headers.get("Range"))
        if len(self.content_ranges) > 1:
            return response
        assert isinstance(response.stream, httpx.SyncByteStream)
        broken = DropsMidway(response.stream, self.after)
        return httpx.Response(response.status_code, headers=response.headers, stream=broken)

    def close(self) -> None:
        self.real.close()


def test_a_download_cut_off_midway_resumes_where_it_stopped(
    live_server: LiveServer, kmflow: Kmflow, tmp_path: Path
) -> None:
    evidence_id = upload(kmflow, write_file(tmp_path / "transcript.txt", CONTENT))
    transport = ContentDropsOnce(after=100_000)
    notes: list[str] = []
    no_wait = RetryPolicy(attempts=3, sleep=lambda _: None)

    with ApiClient(live_server.url, API_KEY, no_wait, notes.append, transport) as api:
        target = download(api, "ENG-D", evidence_id, None, force=False, quiet=True)

    assert target.read_bytes() == CONTENT
    # Asked from where it stopped; a server without Range support sends it all again.
    assert transport.content_ranges == [None, "bytes=100000-"]
    assert len(notes) == 1 and "ReadError" in notes[0]
    assert sorted(path.name for path in Path.cwd().iterdir()) == ["transcript.txt"]


def test_a_stored_name_never_becomes_a_hidden_file_or_a_path(
    kmflow: Kmflow, tmp_path: Path
) -> None:
    evidence_id = upload(kmflow, write_file(tmp_path / ".profile", b"export PATH=evil"))

    run = kmflow("download", "ENG-D", evidence_id)

    assert run.code == 0, run.err
    assert sorted(path.name for path in Path.cwd().iterdir()) == ["profile"]


@pytest.mark.parametrize(
    ("server_name", "local_name"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\notes.txt", "notes.txt"),
        ("..", "ID123"),
        ("", "ID123"),
        (".bashrc", "bashrc"),
        ("bad\x1b[2Jname\n.txt", "bad_[2Jname_.txt"),
        ("Überblick 2026.xlsx", "Überblick 2026.xlsx"),
    ],
)
def test_safe_file_name(server_name: str, local_name: str) -> None:
    assert safe_file_name(server_name, "ID123") == local_name


def test_an_unknown_id_is_refused(kmflow: Kmflow) -> None:
    run = kmflow("download", "ENG-D", "0" * 32)

    assert run.code == ExitCode.REFUSED
    assert run.err.startswith("kmflow: ")
    assert "404 not_found" in run.err
    assert len(run.err.strip().splitlines()) == 1
    assert list(Path.cwd().iterdir()) == []
