"""The ASGI application: `create_app(settings)` builds everything; nothing happens at import.

`kmflow serve` has uvicorn run it through a factory (`app.cli.serve:worker_app`), so every
worker process reads the settings and builds its own backend in the lifespan.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TypedDict

import anyio
from fastapi import Depends, FastAPI

from app import __version__
from app.api import API_PREFIX
from app.api.cors import add_cors
from app.api.errors import install_error_handlers
from app.api.routes import audit, engagements, evidence, health, metrics
from app.api.signed_links import LinkSigner
from app.api.threads import request_threads
from app.api.upload_fast_path import UploadFastPath
from app.observability.middleware import ObservabilityMiddleware
from app.observability.request_context import install_log_record_factory, note_route
from app.settings import Settings, load_settings
from app.storage.base import StorageBackend
from app.storage.registry import create_backend
from app.web.assets import mount_assets
from app.web.docs import install_docs
from app.web.page import install_page

logger = logging.getLogger(__name__)


PROBE_THREADS = 4
OPENAPI_URL = "/openapi.json"


class AppState(TypedDict):
    storage: StorageBackend
    settings: Settings
    probe_threads: anyio.CapacityLimiter  # threads for health checks only
    link_signer: LinkSigner | None  # None: LINK_SIGNING_SECRET is not set


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    install_log_record_factory()

    secret = settings.link_signing_secret
    signer = LinkSigner(secret, settings.link_max_seconds) if secret else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[AppState]:
        # The backend's start and close run on anyio's threads: the request threads wait
        # for neither, and must all be done before the backend closes.
        storage = await anyio.to_thread.run_sync(create_backend, settings)
        threads = request_threads(storage.request_threads)
        asyncio.get_running_loop().set_default_executor(threads)
        logger.info(
            "kmflow %s started: STORAGE_BACKEND=%s store=%s auth=%s workers=%d",
            __version__,
            storage.name,
            storage.store_location,
            settings.auth_mode,
            settings.api_workers,
        )
        if settings.auth_mode == "open_loopback":
            logger.warning("API_KEYS is empty: evidence routes are open, served on loopback only")
        try:
            yield {
                "storage": storage,
                "settings": settings,
                "probe_threads": anyio.CapacityLimiter(PROBE_THREADS),
                "link_signer": signer,
            }
        finally:
            await anyio.to_thread.run_sync(_close, threads, storage)

    app = FastAPI(
        title="kmflow",
        version=__version__,
        summary="Evidence storage with full provenance.",
        lifespan=lifespan,
        # kmflow serves its own docs pages (app.web.docs): FastAPI's load from a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url=OPENAPI_URL if settings.api_docs_enabled else None,
        dependencies=[Depends(note_route)],
        # FastAPI's own OpenTelemetry hooks asked three global providers on every request
        # (2% of the event loop under small uploads); kmflow's logs and metrics are its own.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    app.add_middleware(UploadFastPath)  # added first: the innermost
    add_cors(app, settings.cors_origins)  # outside the fast path: its answers get CORS too
    app.add_middleware(ObservabilityMiddleware)
    app.include_router(health.router, prefix=API_PREFIX)
    app.include_router(evidence.router, prefix=API_PREFIX)
    app.include_router(evidence.content_router, prefix=API_PREFIX)
    app.include_router(engagements.router, prefix=API_PREFIX)
    app.include_router(audit.router, prefix=API_PREFIX)
    app.include_router(metrics.router)
    if settings.api_docs_enabled:
        install_docs(app, OPENAPI_URL)
    install_page(app)
    mount_assets(app)
    return app


def _close(threads: ThreadPoolExecutor, storage: StorageBackend) -> None:
    """The requests' work first (a commit in flight finishes), then the backend."""
    threads.shutdown(wait=True)
    storage.close()
