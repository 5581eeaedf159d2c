"""The baseline the migration script is measured against: the loop anyone would write first,
one `files.upload` and one parameterised `INSERT` per file, one file after the other, with
the databricks-sdk and nothing else."""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Iterator
from pathlib import Path

from databricks.sdk.service.sql import StatementParameterListItem

from app.storage.records import utc_timestamp
from benchmarks.minilake import CATALOG, VOLUME, MiniLake

INSERT = (
    "INSERT INTO {table} (id, engagement_id, file_name, volume_path, content_hash, size_bytes, "
    "stored_at, metadata_json) VALUES (:id, :engagement_id, :file_name, :volume_path, "
    ":content_hash, :size_bytes, :stored_at, NULL)"
)


def store_files(store: Path) -> Iterator[tuple[str, Path]]:
    """(engagement_id, file) of a local store laid out as `<engagement_id>/<id>_<name>`."""
    for engagement in sorted(path for path in store.iterdir() if path.is_dir()):
        for file in sorted(engagement.iterdir()):
            yield engagement.name, file


def sequential_upload(
    minilake: MiniLake, schema: str, store: Path, limit: int | None = None
) -> int:
    """Copy the files of `store` (the first `limit`, or all) into `schema`'s volume and
    table; returns the file count."""
    table = minilake.create_metadata_table(schema)
    statement = INSERT.format(table=table)
    copied = 0
    for engagement, file in itertools.islice(store_files(store), limit):
        data = file.read_bytes()
        evidence_id, _, name = file.name.partition("_")
        path = f"/Volumes/{CATALOG}/{schema}/{VOLUME}/evidence_store/{engagement}/{file.name}"
        minilake.client.files.upload(path, io.BytesIO(data), overwrite=False)
        values = {
            "id": evidence_id,
            "engagement_id": engagement,
            "file_name": name,
            "volume_path": path,
            "content_hash": hashlib.sha256(data).hexdigest(),
            "size_bytes": str(len(data)),
            "stored_at": utc_timestamp(),
        }
        minilake.sql(
            statement,
            [
                StatementParameterListItem(
                    name=key, value=value, type="BIGINT" if key == "size_bytes" else "STRING"
                )
                for key, value in values.items()
            ],
        )
        copied += 1
    return copied
