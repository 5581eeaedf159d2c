"""GET /api/v1/health/live: liveness, the process answers (never asks the backend).
GET /api/v1/health: readiness, open to probes, reports the active backend and whether it answers.
GET /api/v1/health/detail: for operators (authenticated), every check timed, and the setup."""

from __future__ import annotations

from typing import Any, Literal

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app import __version__
from app.api.deps import AppSettings, Storage, require_api_key
from app.api.errors import ErrorBody
from app.storage.health import Check, Status

router = APIRouter(tags=["health"])


class LiveBody(BaseModel):
    status: Literal["alive"]


@router.get(
    "/health/live",
    response_model=LiveBody,
    summary="Liveness: the process answers requests",
    description=(
        "200 whenever the server's event loop answers; asks no backend and needs no key, so a "
        "backend outage never fails it. For liveness and startup probes: restarting kmflow "
        "cannot bring a backend back. `/api/v1/health` is the readiness check."
    ),
)
async def live() -> LiveBody:
    # On the event loop itself, no thread and no I/O: what it proves is that the loop answers.
    return LiveBody(status="alive")


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
    summary="Readiness: the backend answers",
    description=(
        "200 when the active backend can take and serve evidence now, 503 when it cannot (for "
        "Databricks: the Volume is unreachable). For readiness probes and load balancers; "
        "liveness is `/api/v1/health/live`."
    ),
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


class HealthDetail(BaseModel):
    status: Status = Field(
        description="'degraded': evidence is stored, but a part checked here is not fine."
    )
    version: str
    storage: str
    store: str = Field(description="Where the evidence lives (no secrets).")
    checks: list[Check]
    configuration: dict[str, Any] = Field(description="The active settings; secrets masked.")


@router.get(
    "/health/detail",
    response_model=HealthDetail,
    dependencies=[Depends(require_api_key)],
    responses={
        401: {"model": ErrorBody},
        503: {"model": HealthDetail, "description": "An essential check failed."},
    },
    summary="Every backend check with its latency, the version and the configuration",
)
async def health_detail(storage: Storage, settings: AppSettings, request: Request) -> JSONResponse:
    report = await anyio.to_thread.run_sync(storage.check, limiter=request.state.probe_threads)
    body = HealthDetail(
        status=report.status,
        version=__version__,
        storage=storage.name,
        store=storage.store_location,
        checks=report.checks,
        configuration=settings.model_dump(mode="json"),  # SecretStr dumps as '**********'
    )
    status_code = 503 if report.status == "unavailable" else 200
    return JSONResponse(body.model_dump(), status_code=status_code)
