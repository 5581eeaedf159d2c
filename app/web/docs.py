"""/docs (Swagger UI) and /redoc, built here rather than by FastAPI: FastAPI's pages load their
scripts from a CDN (a blank page without internet access) and start Swagger UI with an inline
script, which the Content-Security-Policy forbids. API_DOCS_ENABLED=false removes both and
/openapi.json."""

from __future__ import annotations

from html import escape

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from app.web.assets import ASSETS_URL, VENDOR_URL
from app.web.headers import DOCS_POLICY, browser_headers

SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API docs</title>
<link rel="icon" href="{vendor}/favicon.png">
<link rel="stylesheet" href="{vendor}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{vendor}/swagger-ui-bundle.js"></script>
<script src="{assets}/swagger-init.js"></script>
</body>
</html>
"""

REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API reference</title>
<link rel="icon" href="{vendor}/favicon.png">
</head>
<body>
<redoc spec-url="{openapi}"></redoc>
<script src="{vendor}/redoc.standalone.js"></script>
</body>
</html>
"""


def install_docs(app: FastAPI, openapi_url: str) -> None:
    def page(template: str, request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        html = template.format(
            title=escape(app.title),
            vendor=escape(root + VENDOR_URL),
            assets=escape(root + ASSETS_URL),
            openapi=escape(root + openapi_url),
        )
        return HTMLResponse(html, headers=browser_headers(DOCS_POLICY))

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return page(SWAGGER_PAGE, request)

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return page(REDOC_PAGE, request)
