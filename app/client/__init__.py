"""The people-facing client: `kmflow upload`, `kmflow ls` and `kmflow download` against a
running kmflow server, over HTTP (httpx). Nothing here imports the server or a backend."""
