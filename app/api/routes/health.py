"""GET /api/v1/health: open to probes, reports the active backend and whether it answers."""

from __future__ import annotations

from typing import Any, Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.api.deps import AppSettings, Storage

router = APIRouter(tags=["health"])


class HealthBody(BaseModel):
    status: Literal["ok", "unavailable"]
    storage: str = Field(description="The active backend, as STORAGE_BACKEND names it.")
    reachable: bool
    auth: Literal["api_keys", "open_loopback"] = Field(
        description="'open_loopback': no API keys are set, so only this machine can connect."
    )
    details: dict[str, Any] = Field(description="Backend-specific checks; never secrets.")


@router.get(
    "/health",
    response_model=HealthBody,
    responses={503: {"model": HealthBody, "description": "The backend cannot be reached."}},
)
async def health(storage: Storage, settings: AppSettings, request: Request) -> JSONResponse:
    # Probes run on their own threads (see AppState.probe_threads): a backend whose request
    # threads are all waiting on a stopped warehouse must still answer its health check.
    report = await anyio.to_thread.run_sync(storage.check, limiter=request.state.probe_threads)
    body = HealthBody(
        status="ok" if report.reachable else "unavailable",
        storage=storage.name,
        reachable=report.reachable,
        auth=settings.auth_mode,
        details=report.details,
    )
    return JSONResponse(body.model_dump(), status_code=200 if report.reachable else 503)
