"""The one error governance operations raise on purpose, with a message an operator can act on."""

from __future__ import annotations


class GovernanceError(Exception):
    """A Unity Catalog object could not be read or created; the message says what to do."""


class InvalidDefinition(GovernanceError):
    """A name or type that kmflow will not put into SQL (reported per catalogue entry)."""
