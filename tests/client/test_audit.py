"""`kmflow audit` against a real server: the trail of what `kmflow upload` and `download` did,
as a table or JSON Lines, and a key without the audit role refused with exit code 5."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.client.errors import ExitCode
from tests.client.conftest import Kmflow, write_file
from tests.keys import AUDIT_KEY, NAMED_KEYS
from tests.live_server import LiveServer


@pytest.fixture
def live_server(backend_env: dict[str, str], tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer({**backend_env, "API_KEYS": NAMED_KEYS}, cwd=tmp_path)
    yield server
    server.stop()


def test_the_trail_shows_who_uploaded_and_read_and_needs_the_audit_role(
    kmflow: Kmflow, tmp_path: Path
) -> None:
    source = write_file(tmp_path / "minutes.txt", b"minutes")
    uploaded = kmflow("upload", "-e", "ENG-CLI", str(source), "--json")
    evidence_id = json.loads(uploaded.out)["id"]
    assert kmflow("download", "ENG-CLI", evidence_id, "-o", str(tmp_path / "copy.txt")).code == 0

    as_json = kmflow("audit", "ENG-CLI", "--json", key=AUDIT_KEY)
    table = kmflow("audit", "ENG-CLI", key=AUDIT_KEY)
    refused = kmflow("audit", "ENG-CLI")  # the analyst's key: no audit role

    assert as_json.code == 0, as_json.err
    events = [json.loads(line) for line in as_json.out.splitlines()]
    assert [(e["principal"], e["action"], e["evidence_id"]) for e in events] == [
        ("analyst", "upload", evidence_id),
        ("analyst", "read", evidence_id),
    ]
    lines = table.out.splitlines()
    assert lines[0].split()[:5] == ["OCCURRED_AT", "PRINCIPAL", "ACTION", "EVIDENCE_ID", "OUTCOME"]
    assert [line.split()[1:5] for line in lines[1:]] == [
        ["analyst", "upload", evidence_id, "ok"],
        ["analyst", "read", evidence_id, "ok"],
    ]
    assert refused.code == ExitCode.AUTH
    assert "403 forbidden" in refused.err and "audit" in refused.err
    assert AUDIT_KEY not in refused.err + table.out
