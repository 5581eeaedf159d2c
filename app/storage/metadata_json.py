"""Client metadata as kmflow keeps it: one canonical JSON text that every store and reader
(SQLite, Delta, Databricks SQL, a client) reads back the same."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from app.storage.errors import InvalidInput


def encode_metadata(metadata: Mapping[str, Any] | None) -> str | None:
    """Canonical JSON text of a metadata object; refuses what another JSON reader (Delta,
    Databricks SQL, a client) could not read back: NaN and infinities, text that is not
    Unicode (lone surrogates)."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise InvalidInput("metadata must be a JSON object")
    try:
        text = json.dumps(
            dict(metadata), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
        text.encode("utf-8")
    except (ValueError, RecursionError) as error:  # UnicodeEncodeError is a ValueError
        raise InvalidInput(f"metadata cannot be stored as portable JSON: {error}") from None
    return text


def decode_metadata(text: str) -> dict[str, Any]:
    """A client's metadata JSON text as an object, or InvalidInput saying what is wrong."""
    try:
        metadata = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"metadata is not valid JSON: {error.msg}") from None
    except RecursionError:
        raise InvalidInput("metadata is nested too deeply") from None
    except ValueError as error:  # NaN, infinities, integers too long to convert
        raise InvalidInput(f"metadata holds a value JSON readers cannot share: {error}") from None
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be a JSON object")
    encode_metadata(metadata)  # what could not be written back is refused now
    return metadata


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"{text} overflows a 64-bit float")
    return number
