"""SQL against a Databricks SQL warehouse through the Statement Execution API.

Values always travel as named parameter markers (`:name`), never inside the SQL text; the only
things formatted into SQL are backtick-quoted Unity Catalog names validated by `Settings`,
marker names this module makes up, and page sizes that are Python ints.

A statement can end three ways besides success, and each is handled: the SDK raises (HTTP
errors, after its own retries of 429/503), the API answers 200 with `status.state = FAILED`,
or the statement is still PENDING/RUNNING when `wait_timeout` ends: then it is polled until it
finishes or kmflow's own deadline passes, and then cancelled. PENDING is never taken for done
or for failed. Every SQL text the backend sends is built here, which is why this module is
longer than most: the rule above is checked in one file.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import BadRequest, NotFound, PermissionDenied
from databricks.sdk.errors.base import DatabricksError
from databricks.sdk.service.sql import (
    Disposition,
    ExecuteStatementRequestOnWaitTimeout,
    Format,
    State,
    StatementParameterListItem,
    StatementResponse,
    StatementState,
)

from app.storage.errors import InvalidInput, StorageMisconfigured, StorageUnavailable
from app.storage.records import (
    RECORD_COLUMNS,
    WITHDRAWN_FIELDS,
    EvidenceRecord,
    record_from_columns,
)

logger = logging.getLogger(__name__)

COLUMNS = RECORD_COLUMNS
SqlValue = str | int | None

_POLL_FIRST_SECONDS = 0.2
_CHUNK_DOWNLOAD_SECONDS = 120
_POLL_MAX_SECONDS = 2.0


class StatementFailed(StorageUnavailable):
    """The warehouse ran the statement and reported an error (syntax, permissions, ...)."""


class StatementConflict(StatementFailed):
    """A concurrent commit to the table won (Delta's optimistic concurrency, SQLSTATE 2D521:
    DELTA_CONCURRENT_APPEND and its siblings); nothing was committed, so running the statement
    again may succeed at once."""


class StatementRefused(StatementFailed):
    """The warehouse will refuse this statement until someone changes something: a missing
    privilege (SQLSTATE 42501), table (42P01) or warehouse, SQL it cannot parse (class 42), a
    value it cannot take (class 22). Retrying soon only repeats the refusal."""


class WarehouseUnavailable(StorageUnavailable):
    """No warehouse answered in time: stopped, starting, overloaded or unreachable."""


def quote_name(*parts: str) -> str:
    """`catalog`.`schema`.`table`, for names already validated by Settings."""
    return ".".join("`" + part.replace("`", "``") + "`" for part in parts)


def create_table_statement(table: str) -> str:
    """The runbook's DDL for `evidence_metadata`, verbatim but for the table name."""
    return f"""CREATE TABLE IF NOT EXISTS {table} (
    id             STRING        NOT NULL,
    engagement_id  STRING        NOT NULL,
    file_name      STRING        NOT NULL,
    volume_path    STRING        NOT NULL,
    content_hash   STRING        NOT NULL,
    size_bytes     BIGINT        NOT NULL,
    stored_at      STRING        NOT NULL,
    metadata_json  STRING,
    CONSTRAINT pk_evidence_metadata PRIMARY KEY (id)
)
USING DELTA"""


# Limits of the Statement Execution API, and where they are written down:
# - Statement text: at most 16 MiB; INLINE results: at most 25 MiB; `wait_timeout`: 0 or 5-50 s
#   (databricks-sdk `service/sql.py`, `StatementExecutionAPI`, "Limits and limitations").
# - Parameters: a warehouse refuses too many named parameters in one statement ("BAD_REQUEST:
#   Parameterized query has too many parameters: 339 parameters were given but the limit is
#   256", airbytehq/airbyte#46931; databricks-jdbc#1047), and 256 itself is reported to fail
#   ("more than 255 cells", databricks-sql-python#300); the Databricks JDBC driver documents
#   256 ("Run queries with the Databricks JDBC driver"). The REST API documents no number; the
#   warehouse behind it is the same. kmflow sends at most 255.
MAX_STATEMENT_PARAMETERS = 255
# No limit on the size of parameter values is documented; a MERGE carries at most this much of
# them (a row is ~0.5 KiB, or up to ~66 KiB with the largest metadata).
MAX_MERGE_VALUE_BYTES = 4 * 1024 * 1024

# A row travels as ONE parameter, its columns joined by the ASCII unit separator (chr(31)) and
# split again in SQL (`split_part`: Databricks SQL / DBR 11.3+, and DuckDB), so a MERGE takes
# 255 rows within the parameter limit instead of 31 (8 columns each). No column can hold the
# separator: ids, hashes and timestamps are hex and digits, engagement ids are letters,
# digits and `_.-`, file names refuse control characters, and JSON text escapes them.
FIELD_SEPARATOR = chr(31)  # `chr(31)` in the SQL too
MAX_MERGE_ROWS = MAX_STATEMENT_PARAMETERS
# A duplicate lookup names (engagement_id, content_hash, stored_at, id): 4 parameters.
MAX_LOOKUPS = MAX_STATEMENT_PARAMETERS // 4


def packed_row(record: EvidenceRecord) -> str:
    """The row as one parameter value; `merge_rows_statement` splits it again."""
    row = record.model_dump()
    fields = ["" if row[column] is None else str(row[column]) for column in COLUMNS]
    if any(FIELD_SEPARATOR in value for value in fields):
        raise InvalidInput(f"record {record.id} holds a control character kmflow cannot store")
    return FIELD_SEPARATOR.join(fields)


def merge_chunks(records: Sequence[EvidenceRecord]) -> list[list[EvidenceRecord]]:
    """`records` cut into MERGEs that fit the parameter and value-size limits, in order."""
    chunks: list[list[EvidenceRecord]] = []
    size = 0
    for record in records:
        row_bytes = len(packed_row(record).encode())
        full = len(chunks[-1]) >= MAX_MERGE_ROWS if chunks else True
        if full or size + row_bytes > MAX_MERGE_VALUE_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(record)
        size += row_bytes
    return chunks


def merge_rows_statement(
    table: str, records: Sequence[EvidenceRecord]
) -> tuple[str, dict[str, SqlValue]]:
    """One MERGE that inserts the rows whose `id` is not in the table yet.

    Idempotent by the primary key across statements: a row delivered twice (a retry after a
    timeout, two workers draining the same outbox) is inserted once. Within one statement an
    insert-only MERGE inserts every unmatched source row, so an id may appear only once.
    """
    if not 0 < len(records) <= MAX_MERGE_ROWS:
        raise ValueError(f"a MERGE takes 1 to {MAX_MERGE_ROWS} rows, not {len(records)}")
    if len({record.id for record in records}) != len(records):
        raise ValueError("the same evidence id twice in one MERGE would insert it twice")
    params: dict[str, SqlValue] = {
        f"row_{n}": packed_row(record) for n, record in enumerate(records)
    }
    packed = "\n        UNION ALL ".join(
        f"SELECT :row_{n}" + (" AS r" if n == 0 else "") for n in range(len(records))
    )
    fields = []
    for position, column in enumerate(COLUMNS, start=1):
        value = f"split_part(r, chr(31), {position})"
        if column == "size_bytes":
            value = f"CAST({value} AS BIGINT)"
        elif column == "metadata_json":
            value = f"NULLIF({value}, '')"
        fields.append(f"{value} AS {column}")
    columns = ", ".join(COLUMNS)
    values = ", ".join(f"s.{column}" for column in COLUMNS)
    sql = (  # only quoted names and made-up marker names are formatted in
        f"MERGE INTO {table} AS t\nUSING (\n    SELECT {', '.join(fields)}\n"  # noqa: S608
        f"    FROM (\n        {packed}\n    ) AS packed\n) AS s\nON t.id = s.id\n"
        f"WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})"
    )
    return sql, params


def copies_statement(
    table: str, withdrawals: str, records: Sequence[EvidenceRecord], per_record: int
) -> tuple[str, dict[str, SqlValue]]:
    """For each record, the `per_record` newest rows with its bytes in its engagement stored
    before it and not withdrawn, tagged with the record's position: one statement for a
    round's uploads."""
    if not 0 < len(records) <= MAX_LOOKUPS:
        raise ValueError(f"a lookup takes 1 to {MAX_LOOKUPS} records, not {len(records)}")
    params: dict[str, SqlValue] = {}
    selects = []
    for n, record in enumerate(records):
        selects.append(  # only quoted names, marker names and ints are formatted in
            f"(SELECT {n} AS k, m.id, m.stored_at FROM {table} AS m"  # noqa: S608
            f" WHERE m.engagement_id = :e_{n} AND m.content_hash = :h_{n}"
            f" AND (m.stored_at < :s_{n} OR (m.stored_at = :s_{n} AND m.id < :i_{n}))"
            f" AND NOT EXISTS (SELECT 1 FROM {withdrawals} AS w WHERE w.id = m.id)"
            f" ORDER BY m.stored_at DESC, m.id DESC LIMIT {int(per_record)})"
        )
        params |= {
            f"e_{n}": record.engagement_id,
            f"h_{n}": record.content_hash,
            f"s_{n}": record.stored_at,
            f"i_{n}": record.id,
        }
    return "\nUNION ALL ".join(selects), params


def record_from_row(row: Sequence[Any]) -> EvidenceRecord:
    """A row of `evidence_metadata` joined with its withdrawal's columns (null for a live
    record: `lifecycle_sql.withdrawal_join`). Real Databricks returns every value as a
    string; emulators may return native types."""
    values = dict(zip((*COLUMNS, *WITHDRAWN_FIELDS), row, strict=True))
    values["size_bytes"] = int(values["size_bytes"])
    return record_from_columns(values)


class StatementRunner:
    def __init__(self, client: WorkspaceClient, warehouse_id: str | None, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        self._warehouse_id = warehouse_id
        self._lock = threading.Lock()

    @property
    def known_warehouse_id(self) -> str | None:
        """The warehouse if configured or already discovered; never calls Databricks."""
        return self._warehouse_id

    def warehouse_id(self) -> str:
        """The configured warehouse, or the one discovered on first use (then kept)."""
        with self._lock:
            if self._warehouse_id is None:
                self._warehouse_id = self._discover_warehouse()
            return self._warehouse_id

    def _discover_warehouse(self) -> str:
        try:
            warehouses = list(self.client.warehouses.list())
        except (DatabricksError, requests.RequestException, TimeoutError) as error:
            raise WarehouseUnavailable(f"cannot list SQL warehouses: {error}") from error
        if not warehouses:
            raise WarehouseUnavailable(
                "no SQL warehouse is visible to kmflow; set DATABRICKS_WAREHOUSE_ID"
            )
        running = [w for w in warehouses if w.state == State.RUNNING]
        chosen = (running or warehouses)[0]
        if chosen.id is None:
            raise WarehouseUnavailable("the SQL warehouse list returned a warehouse without id")
        logger.info("using SQL warehouse %s (%s)", chosen.id, chosen.name)
        return chosen.id

    def run(
        self,
        sql: str,
        params: Mapping[str, SqlValue] | None = None,
        timeout: float | None = None,
        *,
        large: bool = False,
    ) -> list[list[Any]]:
        """Run one statement to completion and return its rows (empty for DDL and DML).

        `timeout` (default: the runner's) bounds the waiting and polling, not the SDK's own
        retries of 429/503. `large`: the result may pass the 25 MiB an INLINE result may hold
        (the statement then fails), so it comes as EXTERNAL_LINKS, fetched chunk by chunk.
        """
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        wait = int(min(timeout, 50))
        try:
            response = self.client.statement_execution.execute_statement(
                statement=sql,
                warehouse_id=self.warehouse_id(),
                parameters=[_parameter(name, value) for name, value in (params or {}).items()],
                # The API accepts 0 (return at once) or 5-50 seconds.
                wait_timeout=f"{wait}s" if wait >= 5 else "0s",
                on_wait_timeout=ExecuteStatementRequestOnWaitTimeout.CONTINUE,
                disposition=Disposition.EXTERNAL_LINKS if large else None,
                format=Format.JSON_ARRAY if large else None,
            )
            response = self._until_finished(response, deadline, timeout)
            return self._rows(response)
        except (BadRequest, PermissionDenied, NotFound) as error:
            raise StatementRefused(f"SQL statement refused: {error}") from error
        except (DatabricksError, requests.RequestException, TimeoutError) as error:
            raise WarehouseUnavailable(f"SQL warehouse did not answer: {error}") from error

    def _until_finished(
        self, response: StatementResponse, deadline: float, timeout: float
    ) -> StatementResponse:
        pause = _POLL_FIRST_SECONDS
        while _state(response) in (StatementState.PENDING, StatementState.RUNNING):
            if time.monotonic() + pause > deadline:
                self._cancel(response.statement_id)
                raise WarehouseUnavailable(
                    f"SQL statement still {_state(response).value} after {timeout:g}s "
                    "(is the warehouse stopped or starting?)"
                )
            time.sleep(pause)
            pause = min(pause * 2, _POLL_MAX_SECONDS)
            assert response.statement_id is not None
            response = self.client.statement_execution.get_statement(response.statement_id)
        state = _state(response)
        if state != StatementState.SUCCEEDED:
            error = response.status.error if response.status else None
            code = error.error_code.value if error and error.error_code else "UNKNOWN"
            message = (error.message if error else None) or "no error message"
            # `sql_state` appeared in databricks-sdk after 0.72 (older ones drop the field):
            # then the error code and message tell the kinds apart.
            sql_state = getattr(response.status, "sql_state", None) or ""
            failure = _failure_kind(sql_state, code, message)
            raise failure(f"SQL statement {state.value}: {code} (SQLSTATE {sql_state}): {message}")
        return response

    def _cancel(self, statement_id: str | None) -> None:
        if statement_id is None:
            return
        try:
            self.client.statement_execution.cancel_execution(statement_id)
        except (DatabricksError, requests.RequestException, TimeoutError) as error:
            logger.warning("could not cancel SQL statement %s: %s", statement_id, error)

    def _rows(self, response: StatementResponse) -> list[list[Any]]:
        """Every chunk's rows: inline ones as they are, external ones downloaded."""
        result = response.result
        rows: list[list[Any]] = []
        while result is not None:
            rows += result.data_array or []
            for link in result.external_links or []:
                rows += _download_chunk(link.external_link)
            if result.next_chunk_index is None:
                break
            assert response.statement_id is not None
            result = self.client.statement_execution.get_statement_result_chunk_n(
                response.statement_id, result.next_chunk_index
            )
        return rows


def _download_chunk(url: str | None) -> list[list[Any]]:
    """One EXTERNAL_LINKS chunk: a short-lived cloud storage URL that must be fetched WITHOUT
    the workspace's Authorization header (Statement Execution API docs), so plain `requests`.
    The URL carries a signature: it is never logged or put in an error."""
    if not url:
        raise WarehouseUnavailable("a result chunk came without its link")
    try:
        answer = requests.get(url, timeout=_CHUNK_DOWNLOAD_SECONDS)
        answer.raise_for_status()
        rows: list[list[Any]] = answer.json()
    except (requests.RequestException, ValueError) as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        raise WarehouseUnavailable(
            f"downloading a result chunk failed ({type(error).__name__}, HTTP {status})"
        ) from None
    return rows


# SQLSTATE classes whose errors stay until someone acts: 42 syntax error or access rule
# violation (42501 insufficient privilege, 42P01 table or view not found, 42601 parse error),
# 22 data exception (a value the column cannot take), 0A feature not supported.
_REFUSED_SQL_STATE_CLASSES = ("42", "22", "0A")
# The statement's `error_code` (ServiceErrorCode) for the same cases.
_REFUSED_ERROR_CODES = ("BAD_REQUEST", "NOT_FOUND", "PERMISSION_DENIED")


def _failure_kind(sql_state: str, code: str, message: str) -> type[StatementFailed]:
    """Which StatementFailed a FAILED statement is, by its SQLSTATE (Databricks error
    conditions document one per error, e.g. DELTA_CONCURRENT_APPEND: 2D521)."""
    if sql_state == "2D521" or "[DELTA_CONCURRENT_" in message:
        return StatementConflict
    if sql_state[:2] in _REFUSED_SQL_STATE_CLASSES or code in _REFUSED_ERROR_CODES:
        return StatementRefused
    return StatementFailed


def _state(response: StatementResponse) -> StatementState:
    if response.status is None or response.status.state is None:
        raise StorageMisconfigured("SQL statement response without a state")
    return response.status.state


def _parameter(name: str, value: SqlValue) -> StatementParameterListItem:
    if isinstance(value, int):
        return StatementParameterListItem(name=name, value=str(value), type="BIGINT")
    return StatementParameterListItem(name=name, value=value, type="STRING")
