"""Path parameters shared by several routes, with the examples the docs' "Try it out" fills in
(the upload's example engagement, so a record just uploaded there is found as filled in)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

EXAMPLE_ENGAGEMENT = "ENG-001"

EngagementPath = Annotated[
    str,
    Path(
        description="The engagement's id: 1-128 letters, digits, `_`, `.`, `-`.",
        openapi_examples={EXAMPLE_ENGAGEMENT: {"value": EXAMPLE_ENGAGEMENT}},
    ),
]
