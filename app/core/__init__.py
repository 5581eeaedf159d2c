"""Domain models the runbook (`docs/databricks-upgrade-runbook.md`) names."""
