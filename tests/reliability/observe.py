"""What the reliability tests look at from outside a running or killed kmflow: the files its
store holds, what its staging area still holds, the records its API lists, and its memory.

Only the documented layout is used (docs/backends.md, "Storage guarantees"): evidence files under
LOCAL_STORAGE_PATH (local) or DELTA_BASE_PATH/evidence_store (delta, `volume_path` relative
to the base), in-flight uploads under STATE_PATH/staging (one directory and one lock file per
live process) and write intents under STATE_PATH/intents.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx

from app.storage.write_intents import open_intents
from tests.datalake.inspect import volume_files
from tests.datalake.workspace import DatabricksWorkspace

LIST_PAGE = 1000


def store_files(env: dict[str, str]) -> dict[str, Path]:
    """Every file in a local or delta store, by the `volume_path` a record would give it."""
    if env["STORAGE_BACKEND"] == "local":
        root = Path(env["LOCAL_STORAGE_PATH"])
        files = root.rglob("*")
    elif env["STORAGE_BACKEND"] == "delta":
        root = Path(env["DELTA_BASE_PATH"])
        files = (root / "evidence_store").rglob("*")
    else:
        raise ValueError("the files of a Databricks store are in its Volume: stored_paths()")
    return {str(path.relative_to(root)): path for path in files if path.is_file()}


def stored_paths(env: dict[str, str], workspace: DatabricksWorkspace | None = None) -> list[str]:
    """Every evidence file the store holds, on any backend (`workspace` for Databricks)."""
    if env["STORAGE_BACKEND"] == "databricks":
        assert workspace is not None
        return volume_files(workspace, env)
    return sorted(store_files(env))


def staging_leftovers(env: dict[str, str]) -> list[str]:
    """Files under STATE_PATH/staging other than the live processes' lock files (partial
    uploads, `staging/<owner>/*.part`) and the write intents still open in the journals under
    STATE_PATH/intents (`intents/<owner>/<evidence id>`)."""
    state = Path(env["STATE_PATH"])
    staging = state / "staging"
    files = [
        str(path.relative_to(state))
        for path in (staging.rglob("*") if staging.exists() else [])
        if path.is_file() and path.suffix != ".lock"
    ]
    intents = [f"intents/{i.owner}/{i.evidence_id}" for i in open_intents(state)]
    return sorted(files + intents)


def staging_owners(env: dict[str, str]) -> list[str]:
    """The per-process directories under STATE_PATH/staging (one per live process)."""
    root = Path(env["STATE_PATH"]) / "staging"
    return sorted(path.name for path in root.iterdir() if path.is_dir())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def all_records(http: httpx.Client, engagement_id: str) -> list[dict[str, Any]]:
    """Every record the API lists for an engagement, following `next_cursor`."""
    records: list[dict[str, Any]] = []
    params: dict[str, str | int] = {"limit": LIST_PAGE}
    while True:
        response = http.get(f"/api/v1/evidence/{engagement_id}", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        records += page["items"]
        if page["next_cursor"] is None:
            return records
        params["cursor"] = page["next_cursor"]


def rss_mib(pid: int) -> float:
    """The process's resident memory now (VmRSS); `LiveServer.peak_rss_mib` is the peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")
