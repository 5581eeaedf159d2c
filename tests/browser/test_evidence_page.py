"""The evidence page at / in Chromium, as a person uses it: type the key and an engagement,
choose two files, see both listed, download one through its signed link; a link that was
altered or has expired is refused. Then a front-end on another origin: allowed when listed in
CORS_ORIGINS, blocked by the browser (and nothing stored) when not."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page

from tests.browser.conftest import WebServer
from tests.keys import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def open_engagement(page: Page, web_server: WebServer, engagement_id: str) -> None:
    page.goto(f"{web_server.url}/")
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_label("Engagement ID").fill(engagement_id)
    page.get_by_role("button", name="Open engagement").click()
    page.get_by_text("holds no evidence yet").wait_for()


def test_upload_list_and_download_through_a_signed_link(
    browser: Browser, web_server: WebServer, artifacts: Path, tmp_path: Path
) -> None:
    files = {
        "minutes.txt": b"steering committee minutes\n" * 2000,
        "ledger-é.csv": bytes(range(256)) * 300,
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    open_engagement(page, web_server, "ENG-PAGE")

    page.get_by_label("Choose files to upload").set_input_files([tmp_path / name for name in files])
    rows = page.locator("#evidence-rows tr")
    rows.nth(1).wait_for()
    assert sorted(rows.locator("td:first-child").all_inner_texts()) == sorted(files)
    uploads = page.locator("#uploads").inner_text()
    for content in files.values():  # the server's digest of each file is shown
        assert hashlib.sha256(content).hexdigest() in uploads
    page.screenshot(path=artifacts / "evidence-page.png", full_page=True)

    with page.expect_download() as started:
        page.get_by_role("button", name="Download ledger-é.csv").click()
    download = started.value
    saved = Path(download.path())
    assert download.suggested_filename == "ledger-é.csv"
    assert (
        hashlib.sha256(saved.read_bytes()).digest()
        == hashlib.sha256(files["ledger-é.csv"]).digest()
    )
    link = page.get_by_label("Download link for ledger-é.csv").get_attribute("href")
    assert link is not None and "sig=" in link and API_KEY not in link

    # The same link altered, in the browser: 403 with a JSON body.
    tampered = page.goto(f"{web_server.url}{link.replace('kid=analyst', 'kid=lead')}")
    assert tampered is not None and tampered.status == 403
    assert tampered.json()["error"] == "invalid_link"
    context.close()
    assert errors == []


def test_an_expired_link_is_refused_in_the_browser(browser: Browser, web_server: WebServer) -> None:
    stored = httpx.post(
        f"{web_server.url}/api/v1/evidence/upload",
        data={"engagement_id": "ENG-EXPIRY"},
        files={"file": ("a.txt", b"short-lived")},
        headers=AUTH,
    ).json()
    issued = httpx.post(
        f"{web_server.url}/api/v1/evidence/ENG-EXPIRY/{stored['id']}/download-link",
        json={"expires_in": 1},
        headers=AUTH,
    ).json()
    time.sleep(2.1)
    context = browser.new_context()
    answer = context.new_page().goto(f"{web_server.url}{issued['url']}")
    assert answer is not None and answer.status == 403
    assert "expired" in answer.json()["detail"]
    context.close()


def cross_origin_upload(page: Page, api_url: str) -> dict[str, Any]:
    """An upload by fetch() from the page's origin, with the headers that make a preflight."""
    script = """async ([apiUrl, key]) => {
        const form = new FormData();
        form.append("engagement_id", "ENG-CORS");
        form.append("file", new Blob(["from another origin"]), "cors.txt");
        try {
            const response = await fetch(apiUrl + "/api/v1/evidence/upload", {
                method: "POST",
                body: form,
                headers: {Authorization: "Bearer " + key, "Idempotency-Key": crypto.randomUUID()},
            });
            return {status: response.status, location: response.headers.get("Location")};
        } catch (error) {
            return {error: String(error)};
        }
    }"""
    result: dict[str, Any] = page.evaluate(script, [api_url, API_KEY])
    return result


def stored_in(web_server: WebServer, engagement_id: str) -> int:
    listing = httpx.get(f"{web_server.url}/api/v1/evidence/{engagement_id}", headers=AUTH)
    return len(listing.json()["items"])


def test_fetch_from_a_listed_origin_works_and_from_another_is_blocked(
    browser: Browser, web_server: WebServer
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{web_server.listed_origin}/")
    allowed = cross_origin_upload(page, web_server.url)
    assert allowed["status"] == 201 and allowed["location"].startswith("/api/v1/evidence/ENG-CORS/")
    assert stored_in(web_server, "ENG-CORS") == 1

    page.goto(f"{web_server.unlisted_origin}/")
    blocked = cross_origin_upload(page, web_server.url)
    context.close()
    assert "Failed to fetch" in blocked.get("error", ""), blocked
    assert stored_in(web_server, "ENG-CORS") == 1  # the preflight was refused: nothing stored
