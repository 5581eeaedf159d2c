"""Log lines as operators read them: text for people, one JSON object per line for machines.

`LOG_FORMAT=json` gives every line `time`, `level`, `logger`, `message` and `request_id`, plus
the request fields of the per-request line (method, route, status, duration, bytes, engagement
and record ids, the principal: the name of the request's key). Nothing here reads headers or
bodies, so keys and tokens cannot reach a line.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal

REQUEST_FIELDS = (
    "method",
    "path",
    "route",
    "status",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "engagement_id",
    "evidence_id",
    "principal",
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for name in REQUEST_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = None
        return super().format(record)


def logging_config(log_format: Literal["text", "json"]) -> dict[str, Any]:
    """dictConfig for uvicorn and kmflow: one stderr handler; uvicorn's access log is off
    (kmflow's own line per request replaces it)."""
    formatter = "json" if log_format == "json" else "text"
    handler = {"handlers": ["stderr"], "level": "INFO", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": JsonFormatter},
            "text": {"()": TextFormatter},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": formatter,
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": handler,
            "uvicorn.error": {"level": "INFO"},  # through "uvicorn"
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "app": handler,
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
