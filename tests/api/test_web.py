"""What browsers get over HTTP: the evidence page and docs with their security headers and
only this server's assets, CORS for listed origins only, and an OpenAPI document whose
"Try it out" works as filled in. (A real browser drives them in tests/browser.)"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from tests.api.test_evidence_api import UPLOAD
from tests.conftest import ClientFactory
from tests.keys import API_KEY

pytestmark = pytest.mark.parametrize("backend_name", ["local"])

APP_ORIGIN = "https://evidence.example.com"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class Assets(HTMLParser):
    """The URLs a page loads (script src, link href) and the text of any inline script."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            self._in_script = "src" not in found
            self.urls += [found["src"] or ""] if "src" in found else []
        if tag == "link" and found.get("href"):
            self.urls.append(found["href"] or "")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


def assets_of(html: str) -> Assets:
    parser = Assets()
    parser.feed(html)
    return parser


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc"])
def test_pages_load_only_this_servers_assets_and_no_inline_script(
    client: TestClient, path: str
) -> None:
    page = client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    script_source = re.search(r"script-src ([^;]*)", policy)
    assert script_source is not None and script_source.group(1) == "'self'"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    found = assets_of(page.text)
    assert found.inline_scripts == []
    assert found.urls, "a page with no assets: the parser found nothing"
    for url in found.urls:
        assert "//" not in url, f"{path} loads {url} from elsewhere"
        asset = client.get(url if url.startswith("/") else f"/{url}")
        assert asset.status_code == 200, url
        assert asset.headers["x-content-type-options"] == "nosniff"


def test_the_page_policy_allows_no_inline_style_either(client: TestClient) -> None:
    policy = client.get("/").headers["content-security-policy"]
    assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy


def test_docs_can_be_turned_off(make_client: ClientFactory) -> None:
    client = make_client(api_keys=API_KEY, api_docs_enabled=False)
    for path in ("/docs", "/redoc", "/openapi.json"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"] == "not_found", path
    assert client.get("/").status_code == 200  # the evidence page stays


def test_an_unknown_path_is_still_a_json_404(client: TestClient) -> None:
    for path in ("/nothing-here", "/assets/nothing.js"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"] == "not_found"


# -- CORS ---------------------------------------------------------------------------------------


def preflight(client: TestClient, origin: str, headers: str) -> object:
    return client.options(
        UPLOAD,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
    )


def test_cors_preflight_answers_a_listed_origin_only(make_client: ClientFactory) -> None:
    client = make_client(api_keys=API_KEY, cors_origins=APP_ORIGIN)
    allowed = client.options(
        UPLOAD,
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,idempotency-key",
        },
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "idempotency-key" in allowed.headers["access-control-allow-headers"].lower()
    refused = client.options(
        UPLOAD,
        headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"},
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


def test_cors_answers_expose_the_upload_headers(make_client: ClientFactory) -> None:
    client = make_client(api_keys=API_KEY, cors_origins=f"{APP_ORIGIN}/")
    response = client.post(
        UPLOAD,
        data={"engagement_id": "ENG-C"},
        files={"file": ("a.txt", b"cross-origin")},
        headers=AUTH | {"Origin": APP_ORIGIN},
    )
    assert response.status_code == 201
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    exposed = {
        name.strip().lower()
        for name in response.headers["access-control-expose-headers"].split(",")
    }
    assert {
        "location",
        "repr-digest",
        "x-request-id",
        "idempotent-replayed",
        "content-range",
    } <= exposed
    # An error's body is readable cross-origin too, so the page can show it.
    refused = client.get("/api/v1/evidence/ENG-C", headers={"Origin": APP_ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == APP_ORIGIN


def test_without_cors_origins_no_origin_is_allowed(client: TestClient) -> None:
    response = client.get("/api/v1/evidence/ENG-C", headers={"Origin": APP_ORIGIN})
    assert "access-control-allow-origin" not in response.headers


# -- OpenAPI as tried --------------------------------------------------------------------------


def test_every_upload_field_has_an_example_that_uploads(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    form = schema["paths"][UPLOAD]["post"]["requestBody"]["content"]["multipart/form-data"]
    fields = form["schema"]["properties"]
    examples = {name: spec["examples"][0] for name, spec in fields.items() if name != "file"}
    assert set(examples) == set(fields) - {"file"}
    # The examples, as Swagger UI sends them (empty fields included), store the file.
    response = client.post(UPLOAD, data=examples, files={"file": ("Zürich.txt", b"as tried")})
    assert response.status_code == 201, response.text
    assert response.json()["file_name"] == "Zürich.txt"


def test_empty_optional_fields_are_absent_and_a_malformed_one_is_a_422(
    client: TestClient,
) -> None:
    empty = client.post(
        UPLOAD,
        data={"engagement_id": "ENG-E", "metadata": "", "sha256": ""},
        files={"file": ("a.txt", b"x")},
    )
    assert empty.status_code == 201 and empty.json()["metadata_json"] is None
    for field, value in (("sha256", "not-hex"), ("metadata", "not json")):
        malformed = client.post(
            UPLOAD,
            data={"engagement_id": "ENG-E", field: value},
            files={"file": ("a.txt", b"x")},
        )
        assert malformed.status_code == 422 and malformed.json()["error"] == "invalid_request"


def test_routes_document_only_the_errors_they_can_give(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    content = paths["/api/v1/evidence/{engagement_id}/{evidence_id}/content"]["get"]
    declared = {(parameter["in"], parameter["name"]) for parameter in content["parameters"]}
    assert {("header", "Range"), ("header", "If-None-Match"), ("header", "If-Range")} <= declared
    for operations in paths.values():  # "Try it out" fills in the upload's engagement
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "engagement_id" and parameter["in"] == "path":
                    assert parameter["examples"]["ENG-001"]["value"] == "ENG-001"
    listing = paths["/api/v1/evidence/{engagement_id}"]["get"]["responses"]
    assert set(listing) == {"200", "401", "422", "503"}
    for path, operations in paths.items():
        for method, operation in operations.items():
            if path != UPLOAD:  # only the upload takes multipart, and its size limits
                assert not {"413", "415"} & set(operation["responses"]), (method, path)
