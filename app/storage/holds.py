"""Legal holds: while an engagement is held, nothing of it may be withdrawn or purged.

A hold is one row per engagement in each backend's `engagement_holds` table (SQLite, Delta,
or the Databricks table beside `evidence_metadata`), so every replica sees it at once.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Hold(BaseModel):
    """An engagement under legal hold: who placed the hold, when and why."""

    engagement_id: str
    held_at: str = Field(description="When the hold was placed, ISO-8601 UTC.")
    held_by: str = Field(description="The principal (API key name) who placed it.")
    reason: str


# The columns of every backend's `engagement_holds` table, in order.
HOLD_COLUMNS: tuple[str, ...] = tuple(Hold.model_fields)


class HoldStatus(BaseModel):
    """What the hold routes answer: whether the engagement is held, and the hold if it is."""

    engagement_id: str
    held: bool
    hold: Hold | None = Field(description="The hold in force; null when none is.")
