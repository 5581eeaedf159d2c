"""Engagements of 1k, 10k and 100k records in each backend, put in place quickly, for the
listing scenario. A list reads metadata only, so most records get no evidence file:

- local: rows inserted straight into the SQLite index (`list_latency.populate_local`);
- delta: appends of 100 rows, each followed by the maintenance compaction, then a few real
  uploads (`list_latency.populate_delta`): the file layout steady-state uploads leave;
- databricks (MiniLake): the `evidence_metadata` table created with kmflow's DDL and filled
  by multi-row INSERTs of 1,000 rows through the SQL Statement API. Uploading 100k files
  through kmflow would take hours on MiniLake and end in the same table rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path

from app.storage.databricks.sql import COLUMNS
from app.storage.delta.maintenance import MaintenancePolicy
from app.storage.records import EvidenceRecord
from benchmarks.list_latency import populate_delta, populate_local, synthetic_records
from benchmarks.minilake import MiniLake

INSERT_ROWS = 1000


def engagement_for(count: int) -> str:
    return f"list-{count}"


def seed_local(directory: Path, counts: Sequence[int]) -> dict[str, str]:
    for count in counts:
        populate_local(directory, count, engagement_for(count)).close()
    return {
        "STORAGE_BACKEND": "local",
        "LOCAL_STORAGE_PATH": str(directory / "evidence_store"),
        "STATE_PATH": str(directory / "state"),
    }


def seed_delta(directory: Path, counts: Sequence[int]) -> dict[str, str]:
    policy = MaintenancePolicy()
    for count in counts:
        populate_delta(directory, count, policy, engagement_for(count)).close()
    return {
        "STORAGE_BACKEND": "delta",
        "DELTA_BASE_PATH": str(directory / "delta_store"),
        "STATE_PATH": str(directory / "state"),
    }


def seed_databricks(
    minilake: MiniLake, schema: str, counts: Sequence[int], state: Path
) -> dict[str, str]:
    minilake.new_schema(schema)
    table = minilake.create_metadata_table(schema)
    for count in counts:
        records = synthetic_records(count, engagement_for(count))
        while batch := list(islice(records, INSERT_ROWS)):
            minilake.sql(insert_statement(table, batch))
    return {**minilake.env(schema), "STATE_PATH": str(state)}


def insert_statement(table: str, records: Iterable[EvidenceRecord]) -> str:
    """One multi-row INSERT with the values as SQL literals (bulk seeding only: the service
    itself always sends values as parameters)."""
    rows = ",\n".join(
        "(" + ", ".join(_literal(getattr(record, column)) for column in COLUMNS) + ")"
        for record in records
    )
    return f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES\n{rows}"


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"
