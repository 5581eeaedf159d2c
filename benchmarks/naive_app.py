"""The naive FastAPI baseline: what an upload service looks like when written the obvious way.

    NAIVE_STORE_DIR=/some/dir uvicorn benchmarks.naive_app:create_app --factory

- `POST /upload`: multipart with `UploadFile` (Starlette spools the part to a temporary file
  under TMPDIR) and `shutil.copyfileobj` into a unique file. No hash, no index, no fsync: it
  does less than kmflow, which is what makes it the yardstick for kmflow's speed targets.
- `PUT /raw/{name}`: the request body streamed straight to a file (`request.stream()`), the
  fastest a Python ASGI app can take bytes off the socket here.
- `GET /files/{name}`: a stored file served with `FileResponse`.

Sync routes run in FastAPI's thread pool, as the FastAPI docs advise for blocking file I/O.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse


def create_app() -> FastAPI:
    store = Path(os.environ["NAIVE_STORE_DIR"]).resolve()
    files = store / "files"
    files.mkdir(parents=True, exist_ok=True)
    app = FastAPI(title="naive upload baseline")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/upload", status_code=201)
    def upload(
        engagement_id: Annotated[str, Form()], file: Annotated[UploadFile, File()]
    ) -> dict[str, object]:
        name = f"{uuid.uuid4().hex}.bin"
        with (files / name).open("wb") as target:
            shutil.copyfileobj(file.file, target)
        return {"id": name, "engagement_id": engagement_id, "size_bytes": file.size}

    @app.put("/raw/{name}", status_code=201)
    async def put_raw(name: str, request: Request) -> dict[str, object]:
        target = files / f"{uuid.uuid4().hex}-{_plain(name)}"
        size = 0
        with target.open("wb") as out:
            async for chunk in request.stream():
                out.write(chunk)  # on the event loop: the naive way, and quick for one client
                size += len(chunk)
        return {"id": target.name, "size_bytes": size}

    @app.get("/files/{name}")
    def get_file(name: str) -> FileResponse:
        return FileResponse(files / _plain(name), media_type="application/octet-stream")

    return app


def _plain(name: str) -> str:
    """A path segment used as a file name; the benchmark sends only plain names."""
    if not name or "/" in name or name.startswith("."):
        raise HTTPException(status_code=400, detail="plain file names only")
    return name
