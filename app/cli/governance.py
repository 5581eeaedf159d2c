"""`kmflow catalog register`, `kmflow databricks bootstrap`, `kmflow verify`: the runbook's
Unity Catalog steps. The Databricks SDK is imported only when one of them runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.settings import Settings, load_settings
from app.storage.registry import backend_class


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
        "bootstrap", help="create the runbook's catalog, schemas, volume and tables (idempotent)"
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
    from app.storage.databricks.client import workspace_client
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
    from app.storage.databricks.client import workspace_client
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
    from app.governance.checklist import VerifyOptions
    from app.governance.verify import run_checks

    api_key = args.api_key or next((k.key.get_secret_value() for k in settings.api_keys), None)
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
