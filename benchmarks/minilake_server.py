"""MiniLake (the DuckDB-backed Databricks API emulator) as a separate process for scenario 5,
behind the test bridge and a request counter:

    python -m benchmarks.minilake_server --port P --data-dir DIR

The bridge is `tests.datalake.minilake_bridge`, the one place that makes MiniLake behave as
Databricks does where kmflow depends on it (parameter binding, FAILED statements as 200);
kmflow's own tests use it the same way. It is imported from the tests package on purpose:
a second copy here could drift from what the tests prove. `request_counter` counts every
request that reaches it, by kind, for the round-trip figures.

A process of its own, not a thread of the harness, so MiniLake's CPU time never competes with
the harness's for the GIL.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import uvicorn

from benchmarks.request_counter import RequestCounter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()  # a relative data dir breaks MiniLake's Files API
    data_dir.mkdir(parents=True, exist_ok=True)
    # MiniLake reads its settings at import time.
    os.environ["MINILAKE_DATA_DIR"] = str(data_dir)
    os.environ["MINILAKE_NOTEBOOK"] = "0"
    os.environ["MINILAKE_SPARK_PREWARM"] = "0"
    os.environ["MINILAKE_DUCKDB_EXTENSION_DIR"] = tempfile.mkdtemp(dir=data_dir)
    from minilake.app import create_app  # type: ignore[import-untyped]

    from tests.datalake.minilake_bridge import MiniLakeBridge

    app = RequestCounter(MiniLakeBridge(create_app()))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
