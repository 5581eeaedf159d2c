"""The Prometheus metrics kmflow exports, and how they are collected across workers.

With several uvicorn workers each process counts on its own; `kmflow serve` then points
`PROMETHEUS_MULTIPROC_DIR` at a fresh directory under STATE_PATH before the workers start, so
prometheus-client keeps every value in a file there and `/metrics` (answered by whichever
worker) sums them. One worker keeps its values in memory. The mode is fixed when this module is
first imported, which is when prometheus-client makes the same decision.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROCESS = bool(os.environ.get(MULTIPROCESS_DIR_ENV))
CONTENT_TYPE = CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SIZE_BUCKETS = tuple(float(4**n * 1024) for n in range(12))  # 1 KiB ... 4 GiB

HTTP_REQUESTS = Counter(
    "kmflow_http_requests_total",
    "HTTP requests answered, by route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "kmflow_http_request_duration_seconds",
    "Time from the request's arrival to the end of its answer.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
UPLOAD_BYTES = Histogram(
    "kmflow_upload_bytes", "Size of each stored upload.", ["backend"], buckets=SIZE_BUCKETS
)
UPLOAD_DURATION = Histogram(
    "kmflow_upload_duration_seconds",
    "Time to receive, store durably and index one upload.",
    ["backend"],
    buckets=LATENCY_BUCKETS,
)
BACKEND_DURATION = Histogram(
    "kmflow_backend_operation_duration_seconds",
    "Time of each storage backend operation.",
    ["backend", "operation"],
    buckets=LATENCY_BUCKETS,
)
BACKEND_ERRORS = Counter(
    "kmflow_backend_errors_total",
    "Storage backend operations that raised, by error class.",
    ["backend", "operation", "error"],
)
PENDING_METADATA_ROWS = Gauge(
    "kmflow_databricks_pending_metadata_rows",
    "Metadata rows stored in the outbox and not yet in the evidence_metadata table.",
    multiprocess_mode="max",  # one outbox per machine: every worker sees the same count
)
METADATA_STATEMENTS = Counter(
    "kmflow_databricks_metadata_statements_total",
    "SQL statements sent for evidence_metadata rows and duplicate lookups, by kind "
    "(divide by uploads for statements per upload).",
    ["kind"],
)
METADATA_ROUND_JOBS = Histogram(
    "kmflow_databricks_metadata_round_jobs",
    "Uploads and queued rows served by one round of metadata statements.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 255),
)
AUDIT_EVENTS = Counter(
    "kmflow_audit_events_total",
    "Audit trail events, by what became of them: stored, or lost (a process that stopped "
    "before its store took them).",
    ["outcome"],
)
AUDIT_EVENTS_WAITING = Gauge(
    "kmflow_audit_events_waiting",
    "Audit events recorded and not yet stored, in this process.",
    multiprocess_mode="livesum",
)
DELTA_MAINTENANCE_RUNS = Counter(
    "kmflow_delta_maintenance_runs_total",
    "Delta maintenance runs (compaction, checkpoint), by outcome.",
    ["kind", "outcome"],
)


@contextmanager
def observed(
    backend: str, operation: str, clients_fault: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Time a backend operation; count it as an error if it raises, unless the error is the
    client's (`clients_fault`: a bad digest is no reason to page anyone)."""
    start = time.perf_counter()
    try:
        yield
    except clients_fault:
        raise
    except BaseException as error:
        BACKEND_ERRORS.labels(backend, operation, type(error).__name__).inc()
        raise
    finally:
        BACKEND_DURATION.labels(backend, operation).observe(time.perf_counter() - start)


def exposition() -> bytes:
    """Every metric of every worker, in the Prometheus text format."""
    if not MULTIPROCESS:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
