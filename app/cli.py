"""The `kmflow` command."""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app import __version__
from app.config import ConfigError, Settings, load_settings
from app.migration_command import add_migrate_command
from app.storage.errors import BackendNotInstalled
from app.storage.registry import backend_class


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    except (ConfigError, BackendNotInstalled) as error:
        print(f"kmflow: {error}", file=sys.stderr)
        return 2
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kmflow",
        description="Evidence storage service. Configured by environment variables "
        "(see README); STORAGE_BACKEND picks local, delta or databricks.",
    )
    parser.add_argument("--version", action="version", version=f"kmflow {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", help="bind address (default: API_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: API_PORT, 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: API_WORKERS, 1)")
    serve.set_defaults(handler=run_serve)
    add_delta_commands(commands)
    add_governance_commands(commands)
    add_migrate_command(commands)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    overrides = {
        name: value
        for name, value in (
            ("api_host", args.host),
            ("api_port", args.port),
            ("api_workers", args.workers),
        )
        if value is not None
    }
    settings = load_settings(**overrides)
    backend_class(settings.storage_backend)  # a missing optional package fails here, clearly
    # Worker processes build their own Settings from the environment: hand them the flags.
    os.environ["API_HOST"] = settings.api_host
    os.environ["API_PORT"] = str(settings.api_port)
    os.environ["API_WORKERS"] = str(settings.api_workers)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        log_config=logging_config(),
        timeout_graceful_shutdown=30,
    )
    return 0


def logging_config() -> dict[str, Any]:
    """uvicorn's own logging, plus the `app` loggers through the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["app"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def add_delta_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    delta = commands.add_parser(
        "delta", help="the delta backend's evidence_metadata table: history, time travel"
    )
    actions = delta.add_subparsers(title="delta commands", required=True, metavar="ACTION")
    history = actions.add_parser("history", help="print the table's versions, newest first")
    history.add_argument("--limit", type=int, default=20, help="how many (default: 20)")
    history.set_defaults(handler=run_delta_history)
    show = actions.add_parser("show", help="print a record as the table held it at a version")
    show.add_argument("engagement_id")
    show.add_argument("evidence_id")
    show.add_argument("--version", type=int, required=True, help="a version from `history`")
    show.set_defaults(handler=run_delta_show)


def run_delta_history(args: argparse.Namespace) -> int:
    from app.storage.errors import StorageError

    backend_class("delta")  # a missing deltalake fails here, with the install hint
    from app.storage.delta import open_evidence_table

    try:
        entries = open_evidence_table(load_settings()).history(args.limit)
    except StorageError as error:
        print(f"kmflow: {error}", file=sys.stderr)
        return 1
    print(f"{'version':>7}  {'timestamp (UTC)':<24}  {'operation':<17}  metrics")
    for entry in entries:
        when = datetime.fromtimestamp(entry["timestamp"] / 1000, UTC)
        metrics = entry.get("operationMetrics") or {}
        shown = " ".join(
            f"{key}={metrics[key]}"
            for key in ("num_added_rows", "numFilesRemoved", "numFilesAdded")
            if key in metrics
        )
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        print(f"{entry['version']:>7}  {stamp:<24}  {entry.get('operation', '?'):<17}  {shown}")
    return 0


def run_delta_show(args: argparse.Namespace) -> int:
    from app.storage.errors import StorageError

    backend_class("delta")
    from app.storage.delta import open_evidence_table

    try:
        table = open_evidence_table(load_settings())
        record = table.get(args.engagement_id, args.evidence_id, args.version)
    except StorageError as error:
        print(f"kmflow: {error}", file=sys.stderr)
        return 1
    if record is None:
        print(
            f"kmflow: no evidence {args.evidence_id} in engagement {args.engagement_id} "
            f"at version {args.version}",
            file=sys.stderr,
        )
        return 1
    print(record.model_dump_json(indent=2))
    return 0


def add_governance_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The runbook's Unity Catalog steps: bootstrap, register tables, verify a deployment."""
    catalog = commands.add_parser("catalog", help="Unity Catalog tables of the data catalogue")
    catalog_actions = catalog.add_subparsers(
        title="catalog commands", required=True, metavar="ACTION"
    )
    register = catalog_actions.add_parser(
        "register", help="create a table in {schema}_{layer} for each entry of a JSON/YAML file"
    )
    register.add_argument("file", type=Path, help="a list of DataCatalogEntry objects")
    _add_uc_name_flags(register, volume=False)
    register.set_defaults(handler=run_catalog_register)

    databricks = commands.add_parser("databricks", help="Databricks workspace setup")
    databricks_actions = databricks.add_subparsers(
        title="databricks commands", required=True, metavar="ACTION"
    )
    bootstrap = databricks_actions.add_parser(
        "bootstrap", help="create the runbook's catalog, schemas, volume and table (idempotent)"
    )
    _add_uc_name_flags(bootstrap, volume=True)
    bootstrap.add_argument("--storage-root", help="for a new catalog on a metastore without one")
    bootstrap.set_defaults(handler=run_databricks_bootstrap)

    verify = commands.add_parser(
        "verify", help="run the runbook's validation checklist against a running deployment"
    )
    verify.add_argument("--url", required=True, help="the deployment, e.g. https://kmflow.example")
    verify.add_argument("--api-key", help="default: the first of API_KEYS")
    verify.add_argument("--engagement-id", help="test upload's (default: kmflow-verify-<hex>)")
    verify.add_argument("--inventory", type=Path, help="the runbook's Step 1 file list")
    verify.add_argument("--catalog-entries", type=Path, help="the file given to catalog register")
    verify.add_argument("--principal", default="kmflow-api", help="whose grants to audit")
    verify.set_defaults(handler=run_verify)


def _add_uc_name_flags(parser: argparse.ArgumentParser, volume: bool) -> None:
    parser.add_argument("--catalog", help="default: DATABRICKS_CATALOG (kmflow)")
    parser.add_argument("--schema", help="base schema; default: DATABRICKS_SCHEMA (evidence)")
    if volume:
        parser.add_argument("--volume", help="default: DATABRICKS_VOLUME (raw_evidence)")
    parser.add_argument("--warehouse-id", help="default: DATABRICKS_WAREHOUSE_ID, else discovered")


def _databricks_settings(args: argparse.Namespace) -> Settings:
    backend_class("databricks")  # a missing databricks-sdk fails here, with the install hint
    flags = {
        "databricks_catalog": args.catalog,
        "databricks_schema": args.schema,
        "databricks_volume": getattr(args, "volume", None),
        "databricks_warehouse_id": args.warehouse_id,
    }
    return load_settings(**{name: value for name, value in flags.items() if value is not None})


def run_catalog_register(args: argparse.Namespace) -> int:
    settings = _databricks_settings(args)
    from app.governance.catalog_file import load_catalog_entries
    from app.governance.errors import GovernanceError
    from app.governance.unity_catalog import register_tables
    from app.storage.databricks import workspace_client
    from app.storage.errors import StorageError

    try:
        entries, problems = load_catalog_entries(args.file)
        client = workspace_client(settings)
        results = register_tables(
            client,
            catalog_entries=entries,
            catalog=settings.databricks_catalog,
            schema=settings.databricks_schema,
            warehouse_id=settings.databricks_warehouse_id,
        )
    except (GovernanceError, StorageError) as error:
        print(f"kmflow: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"failed   entry {problem.position} ({problem.dataset_name}): {problem.error}")
    for result in results:
        reason = f": {result.error}" if result.error else ""
        print(f"{result.status:<8} {result.full_name or result.dataset_name}{reason}")
    failed = len(problems) + sum(result.status == "failed" for result in results)
    print(f"{len(problems) + len(results)} entries, {failed} failed")
    return 1 if failed else 0


def run_databricks_bootstrap(args: argparse.Namespace) -> int:
    settings = _databricks_settings(args)
    from app.governance.bootstrap import bootstrap
    from app.governance.errors import GovernanceError
    from app.storage.databricks import workspace_client
    from app.storage.errors import StorageError

    try:
        client = workspace_client(settings)
    except StorageError as error:
        print(f"kmflow: {error}", file=sys.stderr)
        return 2
    steps = bootstrap(
        client,
        settings.databricks_catalog,
        settings.databricks_schema,
        settings.databricks_volume,
        settings.databricks_warehouse_id,
        args.storage_root,
    )
    try:
        for step in steps:
            print(f"{step.outcome:<8} {step.kind:<7} {step.full_name}", flush=True)
    except GovernanceError as error:
        print(f"kmflow: {error}", file=sys.stderr)
        return 1
    return 0


def run_verify(args: argparse.Namespace) -> int:
    settings = load_settings()
    if settings.storage_backend == "databricks":
        backend_class("databricks")
    from app.governance.verify import VerifyOptions, run_checks

    api_key = args.api_key or next((k.get_secret_value() for k in settings.api_keys), None)
    options = VerifyOptions(
        url=args.url,
        api_key=api_key,
        engagement_id=args.engagement_id,
        inventory=args.inventory,
        catalog_entries=args.catalog_entries,
        principal=args.principal,
    )
    outcomes = []
    for result in run_checks(settings, options):
        print(result.line(), flush=True)
        outcomes.append(result.outcome)
    passed, failed, skipped = (outcomes.count(o) for o in ("PASS", "FAIL", "SKIP"))
    print(f"verify: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
