"""The databricks backend: Unity Catalog Volumes and `evidence_metadata` over SQL.

Imports nothing itself: `kmflow --help` works without databricks-sdk."""
