"""Schemathesis against the live OpenAPI document of a real `kmflow serve`: a bounded number
of generated requests per operation, schema-valid and schema-invalid, with the API key. No
answer may be a 5xx, every answer must match the document (a documented status, content
type, headers and body schema).

(schemathesis' `negative_data_rejection` check is left out: it counts an ignored unknown query
parameter as accepting invalid data, and strips the Authorization header that every request
here carries.)

Run through schemathesis' Python API (each operation's Hypothesis strategy under `@given`):
its pytest plugin does not run on pytest 9 (it reads the removed `Function._nodeid`).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.specs.openapi import checks as openapi_checks

from tests.conftest import AUTH
from tests.live_server import LiveServer

EXAMPLES_PER_OPERATION = 50
CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
]

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend_name", ["local"])]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_5xx_and_every_answer_matches_the_schema(
    live_server: LiveServer, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    failures: dict[str, str] = {}
    sent = 0

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,  # the same requests every run: a failure is never a fluke
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            nonlocal sent
            sent += 1
            response = case.call(headers=AUTH, timeout=30)
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:  # no invalid request exists (GET /health takes no input)
            assert mode == GenerationMode.NEGATIVE, operation.label
        except Exception as failure:
            failures[operation.label] = str(failure)[:2000]

    assert len(operations) >= 5
    assert failures == {}
    print(f"schemathesis ({mode}): {len(operations)} operations, {sent} requests, 0 failures")
