"""The only place client-supplied names are checked, and turned into safe storage names.

A client's engagement id becomes a directory and its file name part of a file name on every
backend, so both are checked once here (by `StorageBackend`'s public methods) and no backend
can forget. The client's file name is kept verbatim in the record; it never becomes a path.
"""

from __future__ import annotations

import re
import unicodedata
import uuid

from app.storage.errors import InvalidInput

# Ids for files that arrive without one (a bare directory, a file put in a Volume by hand):
# derived from the path, so every later scan derives the same id.
_PATH_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "https://kmflow/evidence-path")

MAX_ENGAGEMENT_ID_LENGTH = 128
MAX_FILE_NAME_LENGTH = 1024
MAX_SLUG_LENGTH = 80

# The patterns, defined here once; the API's OpenAPI text is built from them.
ENGAGEMENT_ID_PATTERN = f"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_ENGAGEMENT_ID_LENGTH - 1}}}"
EVIDENCE_ID_PATTERN = "[0-9a-f]{32}"
# A SHA-256 as kmflow writes it (lower case), and as a client may state one (either case).
SHA256_HEX_PATTERN = "[0-9a-f]{64}"
SHA256_HEX_ANY_CASE_PATTERN = "[0-9a-fA-F]{64}"

_ENGAGEMENT_ID = re.compile(ENGAGEMENT_ID_PATTERN)
_EVIDENCE_ID = re.compile(EVIDENCE_ID_PATTERN)
_UNSAFE_SLUG_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_STORED_NAME = re.compile(f"({EVIDENCE_ID_PATTERN})(?:_(.+))?")


def validate_engagement_id(engagement_id: str) -> str:
    """Engagement ids are directory names everywhere: letters, digits, `_`, `.`, `-`."""
    if not 0 < len(engagement_id) <= MAX_ENGAGEMENT_ID_LENGTH:
        raise InvalidInput(f"engagement_id must be 1 to {MAX_ENGAGEMENT_ID_LENGTH} characters long")
    if not _ENGAGEMENT_ID.fullmatch(engagement_id):
        raise InvalidInput(
            "engagement_id may contain only letters, digits, '_', '.' and '-', "
            "and must start with a letter or digit"
        )
    return engagement_id


def is_engagement_id(value: str) -> bool:
    return len(value) <= MAX_ENGAGEMENT_ID_LENGTH and _ENGAGEMENT_ID.fullmatch(value) is not None


def is_evidence_id(value: str) -> bool:
    return _EVIDENCE_ID.fullmatch(value) is not None


def new_evidence_id() -> str:
    return uuid.uuid4().hex


def clean_file_name(file_name: str) -> str:
    """Keep the client's name, minus any directory part a client may have sent with it.

    Browsers on Windows and some tools send `C:\\dir\\name.pdf` or `dir/name.pdf`; only the
    last component names the file. Control characters (NUL included) are refused rather than
    silently altered, because the name is part of the evidence's provenance.
    """
    name = unicodedata.normalize("NFC", file_name).replace("\\", "/").rsplit("/", 1)[-1].strip()
    if any(unicodedata.category(char) == "Cc" for char in name):
        raise InvalidInput("file name must not contain control characters")
    if name in ("", ".", ".."):
        raise InvalidInput("file name is empty")
    if len(name) > MAX_FILE_NAME_LENGTH:
        raise InvalidInput(f"file name is longer than {MAX_FILE_NAME_LENGTH} characters")
    return name


def stored_file_name(evidence_id: str, file_name: str) -> str:
    """The on-storage name: the unique id, then a readable ASCII slug of the client's name.

    The id alone makes it unique (so names differing only by case never collide); the slug
    only helps a person browsing the store, and is short and safe on every filesystem.
    """
    ascii_name = unicodedata.normalize("NFKD", file_name).encode("ascii", "ignore").decode("ascii")
    slug = _UNSAFE_SLUG_CHARS.sub("_", ascii_name).strip("._")
    if len(slug) > MAX_SLUG_LENGTH:
        stem, dot, suffix = slug.rpartition(".")
        keep_suffix = dot and 0 < len(suffix) <= 16
        slug = (
            stem[: MAX_SLUG_LENGTH - len(suffix) - 1] + "." + suffix
            if keep_suffix
            else slug[:MAX_SLUG_LENGTH]
        )
    return f"{evidence_id}_{slug}" if slug else evidence_id


def parse_stored_file_name(name: str) -> tuple[str, str] | None:
    """(id, readable name) of a file named by `stored_file_name`, or None for other names."""
    match = _STORED_NAME.fullmatch(name)
    if match is None:
        return None
    return match.group(1), match.group(2) or match.group(1)


def evidence_id_for_file(relative_path: str) -> tuple[str, str]:
    """(id, file name) for a stored file: kmflow's own `<id>_<name>`, else one from its path."""
    name = relative_path.rsplit("/", 1)[-1]
    return parse_stored_file_name(name) or (uuid.uuid5(_PATH_IDS, relative_path).hex, name)
