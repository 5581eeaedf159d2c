#!/usr/bin/env python3
"""Runbook Step 2: copy a local evidence store into Databricks Volumes.

Every file goes through `DatabricksBackend` (the same code the service uses), so each gets its
`evidence_metadata` row. Idempotent and resumable: rerun after any failure or interruption.
A thin wrapper over `kmflow migrate --from local --to databricks`; the Databricks workspace
comes from DATABRICKS_HOST with DATABRICKS_TOKEN or DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET
(and DATABRICKS_WAREHOUSE_ID) as for the service.

    python scripts/migrate_to_databricks.py --source-dir ./evidence_store \\
        --catalog kmflow --schema evidence --volume raw_evidence [--dry-run]
    python scripts/migrate_to_databricks.py --backfill-metadata   # rows for files already there
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
        description="Copy a local evidence store into Databricks Volumes (runbook Step 2).",
        direction=["--from", "local", "--to", "databricks"],
        value_flags={
            "--source-dir": "the local store (default LOCAL_STORAGE_PATH)",
            "--state-dir": "its index directory (default STATE_PATH; unset: beside the store)",
            "--catalog": "Unity Catalog catalog (default DATABRICKS_CATALOG)",
            "--schema": "base schema (default DATABRICKS_SCHEMA)",
            "--volume": "volume (default DATABRICKS_VOLUME)",
            "--workers": "parallel copies (default 8)",
        },
        switches={
            "--dry-run": "print the plan, change nothing",
            "--verify": "re-hash the files the target already holds before skipping them",
            "--backfill-metadata": "add missing evidence_metadata rows for files already in "
            "the Volume; upload nothing",
        },
    )))  # fmt: skip
