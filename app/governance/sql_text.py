"""The text kmflow puts into Unity Catalog DDL: checked names, allowed types, escaped literals.

Databricks DDL takes no parameter markers (a table name, a column type or a COMMENT cannot be
`:name`), so everything a catalogue entry contributes to a CREATE TABLE is either checked
against a strict pattern and backtick-quoted, or written as an escaped string literal.

String literals follow Databricks' rules, not the SQL standard's: a backslash escapes the next
character (`'O\\'Connell'`), and two adjacent literals are concatenated, so doubling a quote
(`'it''s'`) would silently lose it. See
https://learn.microsoft.com/azure/databricks/sql/language-manual/data-types/string-type.
"""

from __future__ import annotations

import re

from app.governance.errors import InvalidDefinition

# Tables and columns: plain identifiers only, so they read the same quoted or not.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
# Catalogs, schemas, volumes: the rule `Settings` applies to DATABRICKS_CATALOG and friends.
_CONTAINER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,254}")

# Databricks scalar types (and their documented synonyms) that every Databricks Runtime with
# Unity Catalog supports; written out under the canonical name.
_SCALAR_TYPES = {
    "STRING": "STRING",
    "BINARY": "BINARY",
    "BOOLEAN": "BOOLEAN",
    "TINYINT": "TINYINT",
    "BYTE": "TINYINT",
    "SMALLINT": "SMALLINT",
    "SHORT": "SMALLINT",
    "INT": "INT",
    "INTEGER": "INT",
    "BIGINT": "BIGINT",
    "LONG": "BIGINT",
    "FLOAT": "FLOAT",
    "REAL": "FLOAT",
    "DOUBLE": "DOUBLE",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP",
}
# Precision is required: a bare DECIMAL means DECIMAL(10,0) on Databricks but not elsewhere.
_DECIMAL = re.compile(r"(?:DECIMAL|DEC|NUMERIC)\s*\(\s*(\d{1,2})\s*(?:,\s*(\d{1,2})\s*)?\)")
_MAX_DECIMAL_PRECISION = 38
_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def identifier(value: str, what: str) -> str:
    """A table or column name: a letter or `_`, then letters, digits, `_` (at most 255)."""
    if not _IDENTIFIER.fullmatch(value):
        raise InvalidDefinition(
            f"invalid {what} {value!r}: "
            "use 1-255 letters, digits and '_', not starting with a digit"
        )
    return value


def container_name(value: str, what: str) -> str:
    """A catalog, schema or volume name, as `Settings` accepts them."""
    if not _CONTAINER.fullmatch(value):
        raise InvalidDefinition(f"invalid {what} {value!r}: use 1-255 letters, digits, '_', '-'")
    return value


def column_type(value: str) -> str:
    """The canonical Databricks spelling of an allowed column type."""
    text = " ".join(value.upper().split())
    if text in _SCALAR_TYPES:
        return _SCALAR_TYPES[text]
    if match := _DECIMAL.fullmatch(text):
        precision = int(match.group(1))
        scale = int(match.group(2) or 0)
        if not 1 <= precision <= _MAX_DECIMAL_PRECISION or scale > precision:
            raise InvalidDefinition(
                f"invalid type {value!r}: DECIMAL(p,s) needs 1 <= p <= 38 and 0 <= s <= p"
            )
        return f"DECIMAL({precision},{scale})"
    if text.startswith(("ARRAY", "MAP", "STRUCT")):
        raise InvalidDefinition(
            f"unsupported type {value!r}: nested types are not registered by kmflow; "
            "create that table with hand-written DDL"
        )
    allowed = ", ".join(sorted(set(_SCALAR_TYPES.values())))
    raise InvalidDefinition(f"unsupported type {value!r}: use one of {allowed}, DECIMAL(p,s)")


def string_literal(text: str) -> str:
    """`text` as a Databricks SQL string literal; any input stays one literal."""
    return "'" + "".join(_ESCAPES.get(char, char) for char in text) + "'"
