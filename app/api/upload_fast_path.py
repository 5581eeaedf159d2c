"""POST /api/v1/evidence/upload answered without FastAPI's per-request machinery.

Profiled under load (16 KiB uploads, one worker), the event loop spent about a third of its
time in the layers between kmflow's middleware and the upload handler: dependency solving,
route matching, exception and exit-stack middleware, the response wrapper. None of it does
anything for this one route that the route cannot do itself in a few lines: check the key,
name the route for the log line and metrics, map an error to its JSON body. So this ASGI
middleware, the innermost of kmflow's own, answers the route directly with the same handler
(`store_upload`); the FastAPI route stays as its OpenAPI declaration. Every other request,
and any other method on this path, goes on to FastAPI unchanged.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api import API_PREFIX
from app.api.deps import bearer_token, check_api_key
from app.api.errors import ApiError, api_error_response, storage_error_response
from app.api.routes.evidence import router as evidence_router
from app.api.routes.evidence import store_upload
from app.observability import request_context
from app.storage.errors import StorageError

UPLOAD_PATH = f"{API_PREFIX}{evidence_router.prefix}/upload"


class UploadFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != UPLOAD_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        state = request.state
        request_context.note_route_template(UPLOAD_PATH)
        response: Response
        try:
            principal = check_api_key(
                scope, bearer_token(request.headers.get("authorization")), state.settings
            )
            response = await store_upload(request, state.storage, state.settings, principal)
        except ApiError as error:
            response = api_error_response(error)
        except StorageError as error:
            response = storage_error_response(error)
        await response(scope, receive, send)
