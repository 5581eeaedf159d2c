"""The evidence page at `/`: static files, no build step. Its script calls the same API as
any client, with the key a person types in (kept in sessionStorage, never in a URL)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse

from app.web.assets import PAGE_ASSETS
from app.web.headers import PAGE_POLICY, browser_headers


def install_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def evidence_page() -> FileResponse:
        return FileResponse(
            PAGE_ASSETS / "index.html",
            media_type="text/html; charset=utf-8",
            headers=browser_headers(PAGE_POLICY) | {"Cache-Control": "no-cache"},
        )
