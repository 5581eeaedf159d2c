"""`kmflow migrate`: the operator's front end to `app.migration`, shared by the runbook's
(`docs/databricks-upgrade-runbook.md`) `scripts/migrate_to_databricks.py` and
`scripts/migrate_from_databricks.py`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.config import BackendName, ConfigError
from app.migration import (
    backend_items,
    describe_plan,
    directory_items,
    plan_migration,
    run_migration,
)
from app.settings import Settings, load_settings
from app.storage.base import StorageBackend
from app.storage.capabilities import IndexesStrayFiles
from app.storage.errors import StorageError
from app.storage.local import store_identity
from app.storage.names import parse_stored_file_name
from app.storage.registry import BACKENDS, backend_class, create_backend

DEFAULT_WORKERS = 8


def add_migrate_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="copy evidence between backends (idempotent, resumable)",
        description="Copy every record (file, id, time, name, metadata) from one backend to "
        "another. Already-copied records are skipped; rerun after any failure or kill.",
    )
    migrate.add_argument("--from", dest="source", choices=list(BACKENDS), required=True)
    migrate.add_argument("--to", dest="target", choices=list(BACKENDS), required=True)
    migrate.add_argument(
        "--source-dir", type=Path,
        help="local source store (default LOCAL_STORAGE_PATH); without a kmflow index in "
        "--state-dir it is read as a bare <engagement_id>/<file> tree",
    )  # fmt: skip
    migrate.add_argument("--target-dir", type=Path, help="local target store")
    migrate.add_argument(
        "--state-dir",
        type=Path,
        help="the local store's index directory (default STATE_PATH; unset, the directory "
        "beside the store: kmflow_state for evidence_store, else <store>.kmflow_state)",
    )
    migrate.add_argument("--catalog", help="Unity Catalog catalog (default DATABRICKS_CATALOG)")
    migrate.add_argument("--schema", help="base schema (default DATABRICKS_SCHEMA)")
    migrate.add_argument("--volume", help="volume (default DATABRICKS_VOLUME)")
    migrate.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    migrate.add_argument(
        "--verify", action="store_true",
        help="skip a record the target already holds only if its file there hashes to the record "
        "(reads those files; without it, present with the recorded size is enough)",
    )  # fmt: skip
    migrate.add_argument(
        "--bare", action="store_true",
        help="read --source-dir as a bare <engagement_id>/<file> tree even where it looks like "
        "a kmflow store whose index is elsewhere (original names and metadata are then lost)",
    )  # fmt: skip
    migrate.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="parallel copies")
    migrate.add_argument(
        "--backfill-metadata", action="store_true",
        help="(--to databricks) add missing evidence_metadata rows for files already in the "
        "Volume, without uploading anything",
    )  # fmt: skip
    migrate.set_defaults(handler=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    if args.source == args.target:
        raise ConfigError("--from and --to name the same backend; nothing to migrate")
    if not 1 <= args.workers <= 64:
        raise ConfigError("--workers must be between 1 and 64")
    for name in (args.source, args.target):
        backend_class(name)  # a missing optional package fails here, clearly
    if args.backfill_metadata:
        return _backfill(args)

    source_settings = _settings(args, args.source, args.source_dir)
    target_settings = _settings(args, args.target, args.target_dir)
    build = _open_for_reading if args.dry_run else create_backend
    bare_directory = args.source == "local" and _is_bare_tree(source_settings, args.bare)
    source = None if bare_directory else build(source_settings)
    target = (
        None  # a dry run creates nothing: a local target without an index is simply empty
        if args.dry_run
        and args.target == "local"
        and not (target_settings.state_path / store_identity.INDEX_FILE).exists()
        else build(target_settings)
    )
    try:
        items: Any
        if source is None:
            root = source_settings.local_storage_path
            print(f"no kmflow index in {source_settings.state_path}: reading {root} as a bare "
                  "<engagement_id>/<file> tree", file=sys.stderr)  # fmt: skip
            items = directory_items(root)
        else:
            items = backend_items(source)
        return _migrate(args, items, target, source)
    finally:
        if target is not None:
            target.close()
        if source is not None:
            source.close()


def _migrate(
    args: argparse.Namespace,
    items: Any,
    target: StorageBackend | None,
    source: StorageBackend | None,
) -> int:
    try:
        plan = plan_migration(items, target, verify=args.verify, workers=args.workers)
    except StorageError as error:
        print(f"kmflow: cannot plan the migration: {error}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(describe_plan(plan))
        print("dry run: nothing was copied")
        return 1 if plan.refused else 0
    assert target is not None  # only a dry run plans against a target that does not exist
    report = run_migration(
        plan, target, workers=args.workers, progress_stream=sys.stderr, source=source
    )
    print(report.summary())
    return 0 if report.ok else 1


def _backfill(args: argparse.Namespace) -> int:
    from app.storage.databricks.backfill import backfill_metadata

    if not issubclass(backend_class(args.target), IndexesStrayFiles):
        raise ConfigError(
            f"--backfill-metadata: the {args.target} backend has no files without records to "
            "index (only storage that files can reach without kmflow does: databricks)"
        )
    settings = _settings(args, args.target, None)
    target = _open_for_reading(settings) if args.dry_run else create_backend(settings)
    assert isinstance(target, IndexesStrayFiles)
    try:
        report = backfill_metadata(target, dry_run=args.dry_run, progress_stream=sys.stderr)
    finally:
        target.close()
    print(report.summary())
    return 0 if report.ok else 1


def _settings(args: argparse.Namespace, backend: BackendName, store: Path | None) -> Settings:
    overrides: dict[str, object] = {"storage_backend": backend}
    for name, value in (
        ("local_storage_path", store),
        ("state_path", args.state_dir if backend == "local" else None),
        ("databricks_catalog", args.catalog),
        ("databricks_schema", args.schema),
        ("databricks_volume", args.volume),
    ):
        if value is not None:
            overrides[name] = value
    return load_settings(**overrides)


def _is_bare_tree(settings: Settings, bare: bool) -> bool:
    """Whether a local source is read without an index; refuses to guess wrong.

    A kmflow store read without its index loses every client file name and metadata for
    good, and a later run with the right index would skip those records as already copied.
    """
    if store_identity.read_index(settings.state_path, with_contents=True).records:
        return False
    root = settings.local_storage_path
    looks_like_a_store = any(
        parse_stored_file_name(path.name) for path in root.rglob("*") if path.is_file()
    )
    if looks_like_a_store and not bare:
        raise ConfigError(
            f"{root} holds kmflow-stored files (<id>_<name>) but the index at "
            f"{settings.state_path} has none of their records: pass --state-dir with the "
            "store's index, or --bare to copy the files without it (names and metadata lost)"
        )
    return True


def _open_for_reading(settings: Settings) -> StorageBackend:
    """A backend for a dry run: built, but without startup work (table creation, cleanup)."""
    return backend_class(settings.storage_backend).from_settings(settings)


def forward_to_migrate(
    argv: list[str],
    *,
    description: str,
    direction: list[str],
    value_flags: dict[str, str],
    switches: dict[str, str],
) -> list[str]:
    """The runbook's scripts: parse their documented flags, return the `kmflow` argv."""
    parser = argparse.ArgumentParser(description=description)
    for flag, text in value_flags.items():
        parser.add_argument(flag, help=text)
    for flag, text in switches.items():
        parser.add_argument(flag, action="store_true", help=text)
    args = vars(parser.parse_args(argv))
    command = ["migrate", *direction]
    for flag in value_flags:
        if (value := args[flag.lstrip("-").replace("-", "_")]) is not None:
            command += [flag, value]
    for flag in switches:
        if args[flag.lstrip("-").replace("-", "_")]:
            command.append(flag)
    return command
