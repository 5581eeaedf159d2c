"""Catalogue entries for the tests."""

from __future__ import annotations

from app.core.models import DataCatalogEntry


def entry(name: str, layer: str, **fields: object) -> DataCatalogEntry:
    values: dict[str, object] = {
        "dataset_name": name,
        "dataset_type": "structured",
        "layer": layer,
        "columns": [
            {"name": "id", "type": "STRING", "nullable": False},
            {"name": "amount", "type": "DECIMAL(18, 2)"},
        ],
    }
    return DataCatalogEntry.model_validate(values | fields)
