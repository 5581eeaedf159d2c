"""GET /metrics: Prometheus text format, protected like the evidence routes unless
METRICS_PUBLIC=true (a scraper inside a private network may then skip the key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials

from app.api.deps import AppSettings, bearer, require_api_key
from app.api.errors import ErrorBody
from app.api.threads import in_thread
from app.observability.metrics import CONTENT_TYPE, exposition

router = APIRouter(tags=["operations"])


async def metrics_access(
    request: Request,
    settings: AppSettings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    if not settings.metrics_public:
        await require_api_key(request, settings, credentials)


@router.get(
    "/metrics",
    dependencies=[Depends(metrics_access)],
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus metrics."},
        401: {"model": ErrorBody, "description": "No valid key (unless METRICS_PUBLIC=true)."},
    },
    summary="Prometheus metrics of every worker",
)
async def metrics() -> Response:
    # Multiprocess collection reads one file per worker: off the event loop.
    return Response(await in_thread(exposition), media_type=CONTENT_TYPE)
