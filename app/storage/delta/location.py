"""Where the delta backend lives: `DELTA_BASE_PATH` as a local directory or an `s3://` URI.

Everything the backend stores sits under one base: the evidence files under
`evidence_store/`, the `evidence_metadata` table under `evidence_metadata/`. Object-store
credentials, endpoint and region are never handled here: delta-rs and obstore both read the
standard `AWS_*` variables from the environment themselves, so no secret passes through
kmflow's code, its logs or its health report. The one option added here makes S3 commits
safe for several writers (see `storage_options`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

TABLE_NAME = "evidence_metadata"
FILES_PREFIX = "evidence_store"
LOG_DIR = "_delta_log"

# Object stores this backend is built and tested for; `file://` is a local directory.
OBJECT_STORE_SCHEMES = ("s3",)

# Environment variables an operator sets to choose the S3 commit protocol themselves.
S3_COMMIT_VARIABLES = ("AWS_CONDITIONAL_PUT", "AWS_S3_ALLOW_UNSAFE_RENAME")


def check_base_path(value: str) -> str:
    """Validate `DELTA_BASE_PATH` (called by Settings); returns it unchanged."""
    if not value.strip():
        raise ValueError("must be a directory or an s3:// URI")
    if "://" not in value:
        return value
    parts = urlsplit(value)
    if parts.scheme == "file":
        return value
    if parts.scheme not in OBJECT_STORE_SCHEMES:
        raise ValueError(f"scheme {parts.scheme}:// is not supported; use a directory or s3://")
    if not parts.hostname:
        raise ValueError("an s3:// URI needs a bucket: s3://BUCKET/PREFIX")
    if parts.username or parts.password or parts.query:
        raise ValueError("put credentials in AWS_* variables, not in the URI")
    return value


@dataclass(frozen=True)
class DeltaLocation:
    """A parsed `DELTA_BASE_PATH`: exactly one of `local_root` / `object_url` is set."""

    local_root: Path | None
    object_url: str | None

    @classmethod
    def parse(cls, base_path: str) -> DeltaLocation:
        check_base_path(base_path)
        if "://" not in base_path:
            return cls(local_root=Path(base_path).resolve(), object_url=None)
        parts = urlsplit(base_path)
        if parts.scheme == "file":
            return cls(local_root=Path(parts.path).resolve(), object_url=None)
        prefix = parts.path.strip("/")
        url = f"{parts.scheme}://{parts.hostname}" + (f"/{prefix}" if prefix else "")
        return cls(local_root=None, object_url=url)

    @property
    def is_local(self) -> bool:
        return self.local_root is not None

    @property
    def base_uri(self) -> str:
        """What deltalake and obstore are given: an absolute path or the object-store URL."""
        if self.local_root is not None:
            return str(self.local_root)
        assert self.object_url is not None
        return self.object_url

    @property
    def table_uri(self) -> str:
        return f"{self.base_uri}/{TABLE_NAME}"

    def storage_options(self) -> dict[str, str]:
        """Options added to the environment's for every deltalake call.

        S3 has no atomic rename, so unless told otherwise delta-rs commits a version by a
        conditional PUT (`If-None-Match: *`, supported by AWS S3, MinIO, R2 and moto): of
        two writers racing for the same version exactly one wins and the other retries. An
        operator who sets `AWS_CONDITIONAL_PUT` or `AWS_S3_ALLOW_UNSAFE_RENAME` decides.
        """
        if self.is_local or any(name in os.environ for name in S3_COMMIT_VARIABLES):
            return {}
        return {"aws_conditional_put": "etag"}
