#!/usr/bin/env python3
"""Runbook rollback: copy evidence from Databricks Volumes back into a local store, with its
index (ids, times, names and client metadata kept), so `STORAGE_BACKEND=local` serves it.

Idempotent and resumable. A thin wrapper over `kmflow migrate --from databricks --to local`.

    python scripts/migrate_from_databricks.py --catalog kmflow --schema evidence \\
        --volume raw_evidence --target-dir ./evidence_store [--dry-run]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from app.cli import main
from app.cli.migrate import forward_to_migrate

if __name__ == "__main__":
    sys.exit(main(forward_to_migrate(
        sys.argv[1:],
        description="Copy evidence from Databricks Volumes back into a local store.",
        direction=["--from", "databricks", "--to", "local"],
        value_flags={
            "--catalog": "Unity Catalog catalog (default DATABRICKS_CATALOG)",
            "--schema": "base schema (default DATABRICKS_SCHEMA)",
            "--volume": "volume (default DATABRICKS_VOLUME)",
            "--target-dir": "the local store (default LOCAL_STORAGE_PATH)",
            "--state-dir": "its index directory (default STATE_PATH; unset: beside the store)",
            "--workers": "parallel copies (default 8)",
        },
        switches={
            "--dry-run": "print the plan, change nothing",
            "--verify": "re-hash the files the target already holds before skipping them",
        },
    )))  # fmt: skip
