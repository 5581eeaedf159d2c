"""/docs in Chromium, on a machine without internet access: it renders, every request it
makes goes to this server, and "Try it out" on the upload, with only a file chosen, stores it.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, Request

from tests.browser.conftest import WebServer
from tests.keys import API_KEY

UPLOAD_OPERATION = "#operations-evidence-upload_evidence_api_v1_evidence_upload_post"


class Requests:
    """The network requests a browser context makes (data: and blob: URLs are not requests
    to anywhere), and those its Content-Security-Policy stopped before they were sent."""

    def __init__(self, context: BrowserContext) -> None:
        self.sent: list[str] = []
        self.blocked: list[str] = []
        context.on("request", self._sent)
        context.on("requestfailed", self._failed)

    def _sent(self, request: Request) -> None:
        if urlsplit(request.url).scheme in ("http", "https"):
            self.sent.append(request.url)

    def _failed(self, request: Request) -> None:
        if request.failure == "csp":
            self.blocked.append(request.url)

    def hosts(self) -> set[str]:
        return {urlsplit(url).netloc for url in self.sent}

    def left_the_machine(self, server_url: str) -> list[str]:
        here = urlsplit(server_url).netloc
        return [
            url for url in self.sent if urlsplit(url).netloc != here and url not in self.blocked
        ]


def test_docs_render_from_this_server_and_try_it_out_uploads(
    browser: Browser, web_server: WebServer, artifacts: Path, tmp_path: Path
) -> None:
    context = browser.new_context()
    requests = Requests(context)
    page = context.new_page()
    page.goto(f"{web_server.url}/docs")
    page.wait_for_selector(UPLOAD_OPERATION)
    assert page.locator(".opblock-tag", has_text="evidence").count() == 1
    page.screenshot(path=artifacts / "docs.png")

    page.locator("button.authorize").click()
    page.locator(".auth-container input").fill(API_KEY)
    page.locator(".auth-btn-wrapper button.authorize").click()
    page.locator("button.btn-done").click()
    operation = page.locator(UPLOAD_OPERATION)
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    evidence = tmp_path / "Protokoll Zürich, März.txt"
    evidence.write_text("board minutes, as tried\n", encoding="utf-8")
    operation.locator("input[type=file]").set_input_files(evidence)
    with page.expect_response(lambda response: response.url.endswith("/evidence/upload")) as sent:
        operation.locator("button.execute").click()
    answer = sent.value
    status, body = answer.status, answer.json()
    page.wait_for_selector(f"{UPLOAD_OPERATION} .live-responses-table")
    page.screenshot(path=artifacts / "docs-try-it-out.png", full_page=True)
    context.close()

    assert status == 201, body
    assert body["file_name"] == evidence.name
    assert body["engagement_id"] == "ENG-001"  # the pre-filled example
    # Swagger UI asks no other host for anything, not even a request the CSP would stop.
    assert requests.hosts() == {urlsplit(web_server.url).netloc}


def test_redoc_renders_and_sends_nothing_elsewhere(
    browser: Browser, web_server: WebServer, artifacts: Path
) -> None:
    context = browser.new_context()
    requests = Requests(context)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{web_server.url}/redoc")
    page.locator("h2", has_text="Upload one evidence file").wait_for()
    page.screenshot(path=artifacts / "redoc.png")
    context.close()
    assert errors == []
    # ReDoc's sidebar always asks cdn.redoc.ly for its logo: the page's CSP stops that request
    # in the browser, before it is sent (the logo then hides itself).
    assert requests.left_the_machine(web_server.url) == []
    assert len(requests.sent) > 2
