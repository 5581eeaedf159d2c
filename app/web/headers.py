"""Security headers for what a browser renders: a Content-Security-Policy allowing this
origin only and no inline script, no MIME sniffing, no Referer (a download link in a Referer
would hand its signature to another site)."""

from __future__ import annotations

import os
from typing import Any

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

# The evidence page: nothing inline at all, no frames of it anywhere.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# The docs: the same, except that Swagger UI and ReDoc set styles inline (ReDoc writes
# <style> elements) and ReDoc searches in a worker made from a blob.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def browser_headers(policy: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


class HardenedStaticFiles(StaticFiles):
    """Static files with `policy`'s security headers on every answer."""

    def __init__(self, *, policy: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.headers = browser_headers(policy)

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(self.headers)
        return response
