"""Domain models the runbook names."""
