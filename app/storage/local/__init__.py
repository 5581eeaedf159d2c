"""The local backend: files in a directory, an embedded SQLite index beside it."""
