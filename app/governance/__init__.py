"""Unity Catalog operations from the runbook (`docs/databricks-upgrade-runbook.md`): bootstrap
the objects, register the catalogue's tables, verify a deployment. Everything here talks to
Databricks through databricks-sdk, which is imported only by the modules that need it (so
`kmflow --help` works without the extra).
"""
