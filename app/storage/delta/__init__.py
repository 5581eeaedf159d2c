"""The delta backend: evidence files and an `evidence_metadata` Delta Lake table.

Imports nothing itself: settings use `location` without the optional package."""
