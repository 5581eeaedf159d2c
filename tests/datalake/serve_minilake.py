"""Run MiniLake behind the test bridge as a stand-alone Databricks emulator, for trying
`STORAGE_BACKEND=databricks` on a laptop (docker-compose profile `databricks`) or by hand:

    python -m tests.datalake.serve_minilake --port 8080 --data-dir /tmp/minilake

then `DATABRICKS_HOST=http://127.0.0.1:8080 DATABRICKS_TOKEN=dapi-local STORAGE_BACKEND=databricks
kmflow serve`. It creates a SQL warehouse and the runbook's catalog, schema and volume, so kmflow
finds everything it needs. `--latency default` makes it answer at a workspace's speed (see
`tests.datalake.latency_model`). Development only: MiniLake is not Databricks.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

from tests.datalake.latency_model import DEFAULT, ZERO, LatencyModel
from tests.datalake.minilake_bridge import MiniLakeBridge, minilake_environment

READY_MARKER = ".kmflow-ready"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.mkdtemp(prefix="minilake-")))
    parser.add_argument("--catalog", default=os.environ.get("DATABRICKS_CATALOG", "kmflow"))
    parser.add_argument("--schema", default=os.environ.get("DATABRICKS_SCHEMA", "evidence"))
    parser.add_argument("--volume", default=os.environ.get("DATABRICKS_VOLUME", "raw_evidence"))
    parser.add_argument(
        "--latency", choices=("zero", "default"), default="zero",
        help="default: a workspace's speed (statement 0.3 s, commit 1 s per table, ...)",
    )  # fmt: skip
    args = parser.parse_args()

    data_dir = args.data_dir = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / READY_MARKER).unlink(missing_ok=True)
    minilake_environment(data_dir)
    from minilake.app import create_app

    latency = DEFAULT if args.latency == "default" else ZERO
    server = uvicorn.Server(
        uvicorn.Config(
            LatencyModel(MiniLakeBridge(create_app()), latency), host=args.host, port=args.port
        )
    )
    threading.Thread(
        target=_create_objects, args=(server, args), name="bootstrap", daemon=True
    ).start()
    server.run()


def _create_objects(server: uvicorn.Server, args: argparse.Namespace) -> None:
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.catalog import VolumeType

    while not server.started:
        time.sleep(0.05)
    client = WorkspaceClient(host=f"http://127.0.0.1:{args.port}", token="dapi-local")
    warehouse = client.warehouses.create(name="kmflow-local", cluster_size="2X-Small").result()
    client.catalogs.create(name=args.catalog)
    client.schemas.create(name=args.schema, catalog_name=args.catalog)
    client.volumes.create(args.catalog, args.schema, args.volume, VolumeType.MANAGED)
    (args.data_dir / READY_MARKER).touch()  # the compose healthcheck waits for this
    print(
        f"MiniLake ready: warehouse {warehouse.id}, volume "
        f"{args.catalog}.{args.schema}.{args.volume}",
        flush=True,
    )


if __name__ == "__main__":
    main()
