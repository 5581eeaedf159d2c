"""kmflow: evidence storage with full provenance on local disk, Delta Lake or Databricks."""

__version__ = "0.1.0"
