"""Property-based fuzzing of the OpenAPI schema (schemathesis), bounded: no 5xx, responses match it."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.test_service import Server, server  # noqa: F401  (module-scoped live server fixture)

EXAMPLES = 60  # per operation


def test_every_operation_fuzzed(server: Server) -> None:  # noqa: F811
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/indexes/{name}/search", "/v1/indexes/{name}/search/batch"}
    calls: dict[str, int] = {}
    for operation in operations:

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def fuzz(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(base_url=server.url, timeout=60)
            calls[operation.label] = calls.get(operation.label, 0) + 1
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
            case.validate_response(response, checks=[response_schema_conformance, status_code_conformance])

        fuzz()
    assert all(count > 0 for count in calls.values()) and len(calls) == len(operations)
