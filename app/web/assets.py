"""Where the browser assets are: the evidence page's own, and Swagger UI and ReDoc from the
pinned `fastapi-offline` distribution (its static files only; kmflow builds its own pages), so
no page kmflow serves asks another host for anything."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI

from app.web.headers import DOCS_POLICY, PAGE_POLICY, HardenedStaticFiles

PAGE_ASSETS = Path(__file__).parent / "static"
VENDOR_ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/assets"
VENDOR_URL = f"{ASSETS_URL}/vendor"  # swagger-ui-bundle.js, swagger-ui.css, redoc, favicon


def mount_assets(app: FastAPI) -> None:
    # The more specific mount first: Starlette tries them in order.
    app.mount(
        VENDOR_URL,
        HardenedStaticFiles(directory=VENDOR_ASSETS, policy=DOCS_POLICY),
        name="vendor-assets",
    )
    app.mount(
        ASSETS_URL,
        HardenedStaticFiles(directory=PAGE_ASSETS, policy=PAGE_POLICY),
        name="assets",
    )
