"""The evidence lifecycle through the API, run unchanged against every backend in
`tests.conftest.BACKENDS`: withdrawals and their tombstones, legal holds, the audit trail and
the roles that guard them. Bytes are checked where the backend keeps them, not through the API.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.api.test_evidence_api import UPLOAD, listed, upload
from tests.conftest import ClientFactory, stored_files, stored_record
from tests.keys import API_KEY, AUDIT_KEY, NAMED_KEYS

ANALYST = {"Authorization": f"Bearer {API_KEY}"}
LEAD = {"Authorization": f"Bearer {AUDIT_KEY}"}
TOMBSTONE_FIELDS = ("withdrawn_at", "withdrawn_by", "withdrawal_reason")


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    """Two named keys: `analyst` (evidence routes) and `lead` (with the audit role)."""
    client = make_client(api_keys=NAMED_KEYS)
    client.headers.update(ANALYST)
    return client


def withdraw(
    client: TestClient, engagement_id: str, evidence_id: str, reason: str = "wrong file"
) -> httpx.Response:
    return client.request(
        "DELETE", f"/api/v1/evidence/{engagement_id}/{evidence_id}", json={"reason": reason}
    )


def audit_events(client: TestClient, engagement_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    params: dict[str, str | int] = {"engagement_id": engagement_id, "limit": limit}
    while True:
        page = client.get("/api/v1/audit", params=params, headers=LEAD)
        assert page.status_code == 200, page.text
        events += page.json()["items"]
        if page.json()["next_cursor"] is None:
            return events
        params["cursor"] = page.json()["next_cursor"]


def files_of(client: TestClient, record: dict[str, Any]) -> list[str]:
    """The stored files (looked at in the backend's storage) holding this record's bytes."""
    name = record["volume_path"].rsplit("/", 1)[-1]
    return [path for path in stored_files(client) if path.endswith(name)]


def test_a_withdrawal_removes_the_bytes_and_keeps_a_tombstone(client: TestClient) -> None:
    content = b"board minutes, privileged\n" * 100
    first = upload(client, "WD", "minutes.txt", content).json()
    second = upload(client, "WD", "minutes-copy.txt", content).json()
    other = upload(client, "WD", "other.txt", b"something else").json()
    assert client.get(f"/api/v1/evidence/WD/{first['id']}/content").content == content
    assert files_of(client, first) and files_of(client, second)

    answer = withdraw(client, "WD", first["id"], "privileged: attorney-client")

    assert answer.status_code == 200, answer.text
    tombstone = answer.json()
    assert {name: tombstone[name] for name in stored_record(first)} == stored_record(first)
    assert tombstone["withdrawn_by"] == "analyst"  # the key's name, never the key
    assert tombstone["withdrawal_reason"] == "privileged: attorney-client"
    assert tombstone["withdrawn_at"] > first["stored_at"]
    assert files_of(client, first) == []  # gone from the store itself
    assert files_of(client, second) and files_of(client, other)

    got = client.get(f"/api/v1/evidence/WD/{first['id']}")
    assert got.status_code == 410
    assert got.json()["error"] == "withdrawn" and got.json()["tombstone"] == tombstone
    content_answer = client.get(f"/api/v1/evidence/WD/{first['id']}/content")
    assert content_answer.status_code == 410 and content_answer.json()["tombstone"] == tombstone
    assert client.head(f"/api/v1/evidence/WD/{first['id']}/content").status_code == 410

    assert [item["id"] for item in listed(client, "WD")] == [other["id"], second["id"]]
    everything = client.get("/api/v1/evidence/WD", params={"include_withdrawn": "true"}).json()
    assert [item["id"] for item in everything["items"]] == [other["id"], second["id"], first["id"]]
    assert everything["items"][2] == tombstone
    assert not any(name in everything["items"][0] for name in TOMBSTONE_FIELDS)
    digest = hashlib.sha256(content).hexdigest()
    same_bytes = client.get("/api/v1/evidence/WD", params={"content_hash": digest}).json()
    assert [item["id"] for item in same_bytes["items"]] == [second["id"]]
    third = upload(client, "WD", "again.txt", content).json()
    assert third["duplicate_of"] == [second["id"]]  # a tombstone is no copy of the bytes

    again = withdraw(client, "WD", first["id"], "a second time")
    assert again.status_code == 200 and again.json() == tombstone  # idempotent: the first stays
    unknown = withdraw(client, "WD", "0" * 32)
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    no_reason = client.request("DELETE", f"/api/v1/evidence/WD/{second['id']}", json={})
    assert no_reason.status_code == 422 and no_reason.json()["error"] == "invalid_request"
    assert client.get(f"/api/v1/evidence/WD/{second['id']}/content").content == content

    trail = [
        (event["principal"], event["action"], event["outcome"])
        for event in audit_events(client, "WD")
        if event["evidence_id"] == first["id"]
    ]
    assert trail == [
        ("analyst", "upload", "ok"),
        ("analyst", "read", "ok"),
        ("analyst", "withdraw", "ok"),
        ("analyst", "read", "withdrawn"),  # the GET of its content; HEAD reads no bytes
        ("analyst", "withdraw", "ok"),
    ]


def test_a_legal_hold_refuses_withdrawal_and_changes_nothing(client: TestClient) -> None:
    record = upload(client, "HELD", "contract.pdf", b"signed contract").json()

    placed = client.put("/api/v1/engagements/HELD/hold", json={"reason": "dispute"}, headers=LEAD)
    assert placed.status_code == 200, placed.text
    hold = placed.json()
    assert (hold["held"], hold["hold"]["held_by"], hold["hold"]["reason"]) == (
        True, "lead", "dispute",
    )  # fmt: skip
    second = client.put("/api/v1/engagements/HELD/hold", json={"reason": "other"}, headers=LEAD)
    assert second.json() == hold  # the first hold stays

    refused = withdraw(client, "HELD", record["id"])
    assert refused.status_code == 409 and refused.json()["error"] == "legal_hold"
    assert "lead" in refused.json()["detail"]
    assert client.get(f"/api/v1/evidence/HELD/{record['id']}").json() == stored_record(record)
    assert client.get(f"/api/v1/evidence/HELD/{record['id']}/content").content == (
        b"signed contract"
    )
    assert files_of(client, record)
    assert client.get("/api/v1/engagements/HELD/hold", headers=LEAD).json() == hold

    released = client.delete("/api/v1/engagements/HELD/hold", headers=LEAD)
    assert released.json() == {"engagement_id": "HELD", "held": False, "hold": None}
    assert withdraw(client, "HELD", record["id"]).status_code == 200
    assert files_of(client, record) == []

    actions = [(e["principal"], e["action"], e["outcome"]) for e in audit_events(client, "HELD")]
    assert [action for action in actions if action[1] != "read"] == [
        ("analyst", "upload", "ok"),
        ("lead", "hold", "ok"),
        ("lead", "hold", "ok"),
        ("analyst", "withdraw", "legal_hold"),
        ("lead", "release", "ok"),
        ("analyst", "withdraw", "ok"),
    ]


def test_the_audit_trail_pages_oldest_first(client: TestClient) -> None:
    ids = [upload(client, "TRAIL", f"f{n}.txt", f"{n}".encode()).json()["id"] for n in range(5)]

    events = audit_events(client, "TRAIL", limit=2)

    assert [event["evidence_id"] for event in events] == ids
    assert {(event["action"], event["principal"], event["outcome"]) for event in events} == {
        ("upload", "analyst", "ok")
    }
    times = [event["occurred_at"] for event in events]
    assert times == sorted(times)
    assert all(event["request_id"] for event in events)


@pytest.mark.parametrize("backend_name", ["local"])
def test_keys_without_the_audit_role_get_403_on_audit_and_hold_routes(
    client: TestClient,
) -> None:
    upload(client, "ROLES", "a.txt", b"a")
    hold = "/api/v1/engagements/ROLES/hold"
    for method, path, body in [
        ("GET", "/api/v1/audit?engagement_id=ROLES", None),
        ("GET", hold, None),
        ("PUT", hold, {"reason": "mine"}),
        ("DELETE", hold, None),
    ]:
        answer = client.request(method, path, json=body)
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.json()["error"] == "forbidden" and "analyst" in answer.json()["detail"]
        assert API_KEY not in answer.text
        without_key = client.request(method, path, json=body, headers={"Authorization": ""})
        assert without_key.status_code == 401
    assert client.get(hold, headers=LEAD).json()["held"] is False  # nothing was placed
    assert client.post(UPLOAD).status_code != 403  # the evidence routes stay open to the key


@pytest.mark.parametrize("backend_name", ["delta", "databricks"])
def test_replicas_see_each_others_withdrawals_holds_and_events(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    """Two replicas of one shared backend, each with a state directory of its own."""
    first = make_client(api_keys=NAMED_KEYS, state_path=str(tmp_path / "state_a"))
    second = make_client(api_keys=NAMED_KEYS, state_path=str(tmp_path / "state_b"))
    for replica in (first, second):
        replica.headers.update(ANALYST)
    kept = upload(first, "SHARED", "kept.txt", b"kept").json()
    gone = upload(first, "SHARED", "gone.txt", b"gone").json()

    assert withdraw(second, "SHARED", gone["id"]).status_code == 200
    held = second.put("/api/v1/engagements/SHARED/hold", json={"reason": "audit"}, headers=LEAD)

    assert held.json()["held"] is True
    assert first.get(f"/api/v1/evidence/SHARED/{gone['id']}").status_code == 410
    refused = withdraw(first, "SHARED", kept["id"])
    assert refused.status_code == 409 and refused.json()["error"] == "legal_hold"
    assert first.get(f"/api/v1/evidence/SHARED/{kept['id']}/content").content == b"kept"
    first.app_state["storage"].audit.flush(30)  # the other replica's events, stored
    trail = [(e["action"], e["outcome"]) for e in audit_events(second, "SHARED")]
    assert trail == [
        ("upload", "ok"), ("upload", "ok"), ("withdraw", "ok"), ("hold", "ok"),
        ("withdraw", "legal_hold"), ("read", "ok"),
    ]  # fmt: skip
