"""Storage backends behind one contract (`base.StorageBackend`)."""
