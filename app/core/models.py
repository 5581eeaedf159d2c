"""Domain models the runbook names: `DataCatalogEntry`, one dataset to register in Unity Catalog.

The model checks shape (required fields, the layer, sane numbers) so a catalogue file with a
typo fails at load time. It deliberately does not decide what is a safe SQL identifier or a
supported column type: that belongs to the code that writes the SQL
(`app.governance.sql_text`), which checks every entry again however it was built, so one bad
entry is reported there instead of stopping a bulk registration.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Layer = Literal["bronze", "silver", "gold"]
Classification = Literal["public", "internal", "confidential", "restricted"]


class ColumnSpec(BaseModel):
    """One column of a dataset, as it will be declared in the table's DDL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=255)
    type: str = Field(
        min_length=1,
        max_length=64,
        description="A Databricks SQL type: STRING, BIGINT, DECIMAL(18,2), TIMESTAMP, ...",
    )
    nullable: bool = True


class DataCatalogEntry(BaseModel):
    """A dataset of the medallion catalogue; `register_tables` makes each a Delta table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset_name: str = Field(
        min_length=1, max_length=255, description="Becomes the table name in `{schema}_{layer}`."
    )
    dataset_type: str = Field(
        min_length=1, max_length=64, description="What kind of data: 'structured', 'document', ..."
    )
    layer: Layer
    columns: list[ColumnSpec] = Field(
        min_length=1,
        description="The column schema, in order. A file may also give a {name: type} mapping.",
    )
    owner: str | None = Field(default=None, max_length=255, description="The accountable team.")
    classification: Classification = "internal"
    retention_days: int | None = Field(default=None, ge=1, le=36_500)
    description: str | None = Field(default=None, max_length=4096)

    @field_validator("columns", mode="before")
    @classmethod
    def _mapping_is_shorthand(cls, value: object) -> object:
        """`{"id": "STRING", "amount": "DECIMAL(18,2)"}` reads naturally in YAML files."""
        if isinstance(value, dict):
            return [{"name": name, "type": type_} for name, type_ in value.items()]
        return value

    @field_validator("description", "owner", "dataset_type")
    @classmethod
    def _no_control_characters(cls, value: str | None) -> str | None:
        # They end up inside SQL string literals; tabs and newlines are fine there, NUL and
        # other control characters have no business in a catalogue description.
        if value is not None and any(ord(c) < 32 and c not in "\t\n\r" for c in value):
            raise ValueError("must not contain control characters")
        return value
