"""`kmflow verify`: the runbook's validation checklist (`docs/databricks-upgrade-runbook.md`),
run against a live deployment.

One result per checklist item, in the runbook's order:

1. health: `GET /api/v1/health` answers 200 and names the configured STORAGE_BACKEND;
2. upload round trip: a small file is uploaded, listed and downloaded, and its SHA-256 compared;
3. metadata row: `evidence_metadata` holds that upload's row;
4. volume file count: files in the Volume, counted recursively, equal the migration inventory;
5. unity catalog tables: the layer schemas and the registered tables exist;
6. service principal grants: nothing broader than the runbook's list;

and then the test upload is withdrawn (`DELETE`): its bytes are removed, its tombstone and
audit events stay in its own clearly named engagement, `kmflow-verify-<hex>`, which the file
count leaves out. Items 3-6 are Databricks-only and are skipped, with the reason, on other
backends.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx

from app.governance.checklist import (
    DATABRICKS_ITEMS,
    VERIFY_ENGAGEMENT_PREFIX,
    CheckResult,
    VerifyOptions,
)
from app.settings import Settings

HTTP_TIMEOUT_SECONDS = 60.0


def new_verify_engagement() -> str:
    return f"{VERIFY_ENGAGEMENT_PREFIX}{uuid.uuid4().hex[:12]}"


def run_checks(settings: Settings, options: VerifyOptions) -> Iterator[CheckResult]:
    """Yield each item's result as soon as it is known."""
    engagement = options.engagement_id or new_verify_engagement()
    headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
    with httpx.Client(
        base_url=options.url.rstrip("/"), headers=headers, timeout=HTTP_TIMEOUT_SECONDS
    ) as http:
        yield check_health(http, settings.storage_backend)
        round_trip, record = check_round_trip(http, engagement)
        yield round_trip
        if settings.storage_backend != "databricks":
            reason = f"STORAGE_BACKEND={settings.storage_backend}: a Databricks-only item"
            for name in DATABRICKS_ITEMS:
                yield CheckResult(name, "SKIP", reason)
        else:
            from app.governance.verify_databricks import databricks_checks

            yield from databricks_checks(settings, options, record)
        yield withdraw_test_upload(http, engagement, record)


def withdraw_test_upload(
    http: httpx.Client, engagement: str, record: dict[str, Any] | None
) -> CheckResult:
    """Withdraw the round trip's upload, and see its content answer 410."""
    name = "test upload withdrawn"
    if record is None or "id" not in record:
        return CheckResult(name, "SKIP", "no test upload to withdraw (see the items above)")
    path = f"/api/v1/evidence/{engagement}/{record['id']}"
    try:
        withdrawn = http.request("DELETE", path, json={"reason": "kmflow verify test upload"})
        if withdrawn.status_code != 200:
            return _failed(name, "withdraw", withdrawn)
        content = http.get(f"{path}/content")
    except httpx.HTTPError as error:
        return CheckResult(name, "FAIL", f"request failed: {error}")
    if content.status_code != 410:
        return _failed(name, "content after the withdrawal", content)
    detail = f"{record['id']} withdrawn: its bytes are removed, its tombstone stays in {engagement}"
    return CheckResult(name, "PASS", detail)


def check_health(http: httpx.Client, backend: str) -> CheckResult:
    try:
        response = http.get("/api/v1/health")
    except httpx.HTTPError as error:
        return CheckResult("health", "FAIL", f"cannot reach {http.base_url}: {error}")
    storage = _json(response).get("storage")
    if response.status_code == 200 and storage == backend:
        return CheckResult("health", "PASS", f"200, storage={storage}")
    return CheckResult(
        "health",
        "FAIL",
        f"{response.status_code}, storage={storage} (expected 200, storage={backend}): "
        f"{response.text[:300]}",
    )


def check_round_trip(
    http: httpx.Client, engagement: str
) -> tuple[CheckResult, dict[str, Any] | None]:
    """Upload, list, download; the record is returned for the metadata-row check."""
    name = "upload round trip"
    stamp = datetime.now(UTC).isoformat()
    content = f"kmflow verify upload, {stamp}, engagement {engagement}\n".encode()
    try:
        uploaded = http.post(
            "/api/v1/evidence/upload",
            data={"engagement_id": engagement, "metadata": '{"source": "kmflow verify"}'},
            files={"file": ("kmflow-verify.txt", content, "text/plain")},
        )
        if uploaded.status_code != 201:
            return _failed(name, "upload", uploaded), None
        record = _json(uploaded)
        listed = http.get(f"/api/v1/evidence/{engagement}")
        if listed.status_code != 200:
            return _failed(name, "list", listed), record
        if record.get("id") not in [item.get("id") for item in _json(listed).get("items", [])]:
            detail = f"{record.get('id')} is not listed in {engagement}"
            return CheckResult(name, "FAIL", detail), record
        downloaded = http.get(f"/api/v1/evidence/{engagement}/{record.get('id')}/content")
        if downloaded.status_code != 200:
            return _failed(name, "download", downloaded), record
    except httpx.HTTPError as error:
        return CheckResult(name, "FAIL", f"request failed: {error}"), None
    expected = hashlib.sha256(content).hexdigest()
    got = hashlib.sha256(downloaded.content).hexdigest()
    if got != expected or record.get("content_hash") != expected:
        detail = f"sha256 sent {expected}, recorded {record.get('content_hash')}, read back {got}"
        return CheckResult(name, "FAIL", detail), record
    detail = f"{record.get('id')} uploaded to {engagement}, listed and read back (sha256 matches)"
    return CheckResult(name, "PASS", detail), record


def _failed(name: str, step: str, response: httpx.Response) -> CheckResult:
    detail = f"{step} answered {response.status_code}: {response.text[:300]}"
    return CheckResult(name, "FAIL", detail)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
