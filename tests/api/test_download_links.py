"""Signed download links (POST .../download-link): a browser follows them without a key,
for GET or HEAD of one record, until they expire; anything altered is a 403 with a JSON body.
Links are the HTTP layer's own, so one backend is enough."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.api import signed_links
from app.api.signed_links import LinkSigner
from tests.api.test_evidence_api import upload
from tests.api.test_lifecycle import LEAD, audit_events, withdraw
from tests.conftest import ClientFactory
from tests.keys import API_KEY, LINK_SECRET, NAMED_KEYS

pytestmark = pytest.mark.parametrize("backend_name", ["local"])

ANALYST = {"Authorization": f"Bearer {API_KEY}"}
CONTENT = b"privileged memo\n" * 500


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    client = make_client(api_keys=NAMED_KEYS, link_signing_secret=LINK_SECRET, link_max_seconds=600)
    client.headers.update(ANALYST)
    return client


def stored(client: TestClient, engagement_id: str = "ENG-L") -> dict[str, str]:
    response = upload(client, engagement_id, "memo.txt", CONTENT)
    assert response.status_code == 201, response.text
    record: dict[str, str] = response.json()
    return record


def link_for(client: TestClient, record: dict[str, str], **body: object) -> dict[str, str]:
    path = f"/api/v1/evidence/{record['engagement_id']}/{record['id']}/download-link"
    response = client.post(path, json=body or None)
    assert response.status_code == 200, response.text
    issued: dict[str, str] = response.json()
    return issued


def without_key(client: TestClient, method: str, url: str) -> object:
    return client.request(method, url, headers={"Authorization": ""})


def altered(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()} | changes
    return f"{parts.path}?{urlencode(query)}"


def test_a_link_reads_the_bytes_without_a_key(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    record = stored(client)
    link = link_for(client, record)

    with caplog.at_level(logging.INFO, logger="app.request"):
        response = client.get(link["url"], headers={"Authorization": ""})
    assert response.status_code == 200
    # The request line names the path, never the signature (a bearer credential for minutes).
    lines = [entry.getMessage() for entry in caplog.records if entry.name == "app.request"]
    assert any("/content" in line for line in lines)
    assert not any("sig=" in line for line in lines)
    assert hashlib.sha256(response.content).hexdigest() == record["content_hash"]
    assert response.headers["content-disposition"].startswith("attachment;")
    # Evidence may be HTML: it is never rendered, nor sniffed, on this origin.
    assert "sandbox" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    head = client.head(link["url"], headers={"Authorization": ""})
    assert head.status_code == 200 and head.headers["etag"] == f'"{record["content_hash"]}"'
    # Without the link, the same URL needs a key.
    bare = client.get(urlsplit(link["url"]).path, headers={"Authorization": ""})
    assert bare.status_code == 401


def test_a_read_by_link_is_in_the_audit_trail_under_the_key_that_asked(
    client: TestClient,
) -> None:
    record = stored(client, "ENG-LA")
    link = link_for(client, record)
    assert client.get(link["url"], headers={"Authorization": ""}).status_code == 200

    reads = [event for event in audit_events(client, "ENG-LA") if event["action"] == "read"]
    assert [(event["principal"], json.loads(event["detail"])) for event in reads] == [
        ("analyst", {"by": "download link"})
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"sig": "A" * 43},
        {"kid": "lead"},  # another key's name: the signature covers it
        {"expires": str(int(time.time()) + 10_000)},  # a longer life
        {"expires": "soon"},
    ],
)
def test_an_altered_link_is_a_403_with_a_json_body(
    client: TestClient, change: dict[str, str]
) -> None:
    link = link_for(client, stored(client))
    response = client.get(altered(link["url"], **change), headers={"Authorization": ""})
    assert response.status_code == 403
    assert response.json()["error"] == "invalid_link"
    assert LINK_SECRET not in response.text


def test_a_link_reads_only_its_own_record(client: TestClient) -> None:
    first, second = stored(client), stored(client)
    link = link_for(client, first)
    query = urlsplit(link["url"]).query
    other = f"/api/v1/evidence/ENG-L/{second['id']}/content?{query}"
    response = client.get(other, headers={"Authorization": ""})
    assert response.status_code == 403 and response.json()["error"] == "invalid_link"
    # Nor another route: listing ignores a link's parameters and asks for a key.
    listing = client.get(f"/api/v1/evidence/ENG-L?{query}", headers={"Authorization": ""})
    assert listing.status_code == 401


def test_an_expired_link_is_a_403(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    link = link_for(client, stored(client), expires_in=30)
    now = time.time()
    monkeypatch.setattr(signed_links.time, "time", lambda: now + 31)
    response = client.get(link["url"], headers={"Authorization": ""})
    assert response.status_code == 403
    assert "expired" in response.json()["detail"]


def test_a_link_lives_at_most_link_max_seconds(client: TestClient) -> None:
    before = time.time()
    link = link_for(client, stored(client), expires_in=86_400)
    expires = int(parse_qs(urlsplit(link["url"]).query)["expires"][0])
    assert before + 590 <= expires <= time.time() + 600


def test_a_link_of_a_key_no_longer_configured_is_a_403(client: TestClient) -> None:
    record = stored(client)
    path = f"/api/v1/evidence/ENG-L/{record['id']}/content"
    forged = LinkSigner(SecretStr(LINK_SECRET), 600).sign(path, "former-employee", 60)
    response = client.get(forged.url, headers={"Authorization": ""})
    assert response.status_code == 403
    assert "no longer configured" in response.json()["detail"]


def test_links_to_missing_and_withdrawn_records(client: TestClient) -> None:
    missing = client.post("/api/v1/evidence/ENG-L/0123456789abcdef0123456789abcdef/download-link")
    assert missing.status_code == 404
    record = stored(client)
    link = link_for(client, record)
    assert withdraw(client, "ENG-L", record["id"]).status_code == 200
    assert client.post(f"/api/v1/evidence/ENG-L/{record['id']}/download-link").status_code == 410
    assert client.get(link["url"], headers={"Authorization": ""}).status_code == 410


def test_without_a_signing_secret(make_client: ClientFactory) -> None:
    keyed = make_client(api_keys=NAMED_KEYS)
    keyed.headers.update(ANALYST)
    record = stored(keyed)
    path = f"/api/v1/evidence/ENG-L/{record['id']}/download-link"
    refused = keyed.post(path)
    assert refused.status_code == 503 and refused.json()["error"] == "links_not_configured"
    forged = LinkSigner(SecretStr(LINK_SECRET), 600).sign(
        f"/api/v1/evidence/ENG-L/{record['id']}/content", "analyst", 60
    )
    assert keyed.get(forged.url, headers={"Authorization": ""}).status_code == 403

    # Open on loopback (no API_KEYS): the plain content URL is the link, with no expiry.
    open_client = make_client()
    record = stored(open_client)
    issued = link_for(open_client, record)
    assert issued["expires_at"] is None and "sig=" not in issued["url"]
    assert open_client.get(issued["url"]).content == CONTENT


def test_the_secret_is_masked_in_health_detail(client: TestClient) -> None:
    response = client.get("/api/v1/health/detail", headers=LEAD)
    assert response.status_code == 200
    assert LINK_SECRET not in response.text
    assert response.json()["configuration"]["link_signing_secret"] == "**********"
