"""Catalogue entries from a JSON or YAML file, for `kmflow catalog register FILE`.

The file holds a list of entries, or an object with an `entries` list. Each entry is checked
on its own, so one malformed entry is reported with its position and the rest still load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.core.models import DataCatalogEntry
from app.governance.errors import GovernanceError


@dataclass(frozen=True)
class EntryProblem:
    position: int  # 1-based, in file order
    dataset_name: str | None
    error: str


def load_catalog_entries(path: Path) -> tuple[list[DataCatalogEntry], list[EntryProblem]]:
    """The valid entries, and a problem for each invalid one. Raises if the file is unusable."""
    items = _entry_list(_parse(path), path)
    entries: list[DataCatalogEntry] = []
    problems: list[EntryProblem] = []
    for position, item in enumerate(items, start=1):
        try:
            entries.append(DataCatalogEntry.model_validate(item))
        except ValidationError as error:
            name = item.get("dataset_name") if isinstance(item, dict) else None
            problems.append(
                EntryProblem(position, name if isinstance(name, str) else None, _describe(error))
            )
    return entries, problems


def _parse(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise GovernanceError(f"cannot read {path}: {error}") from error
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise GovernanceError(f"{path} is not valid JSON: {error}") from error
    try:
        import yaml
    except ModuleNotFoundError as error:
        raise GovernanceError(
            "pyyaml is required to read YAML files: pip install 'kmflow[databricks]'"
        ) from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise GovernanceError(f"{path} is not valid YAML: {error}") from error


def _entry_list(document: Any, path: Path) -> list[Any]:
    if isinstance(document, dict) and "entries" in document:
        document = document["entries"]
    if not isinstance(document, list):
        raise GovernanceError(f"{path}: expected a list of entries (or {{entries: [...]}})")
    return document


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'entry'}: {item['msg']}"
        for item in error.errors()
    )
