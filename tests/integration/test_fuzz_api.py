"""Property-based fuzzing of the OpenAPI schema (schemathesis), bounded: no 5xx, responses match it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from indexes.storage.docstore.layout import IndexRoot
from tests.support.server import Server

EXAMPLES = 60  # per read operation
WRITE_EXAMPLES = 20  # per write operation (each may encode documents or create an index)


@pytest.fixture(scope="module")
def server(index_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own, on a copy: fuzzed writes and deletes must not reach the other tests' index."""
    root = tmp_path_factory.mktemp("fuzz-root")
    shutil.copytree(IndexRoot(index_root).resolve("small"), root / "small")
    s = Server(root)
    yield s
    s.stop()


def test_every_operation_fuzzed(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/indexes/{name}/search", "/v1/indexes/{name}/search/batch",
                                              "/v1/indexes/{name}/documents", "/v1/indexes", "/v1/jobs/{job_id}"}
    calls: dict[str, int] = {}
    for operation in operations:
        examples = EXAMPLES if operation.method.upper() == "GET" or operation.path.endswith("search") else WRITE_EXAMPLES

        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def fuzz(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(base_url=server.url, timeout=60)
            calls[operation.label] = calls.get(operation.label, 0) + 1
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
            case.validate_response(response, checks=[response_schema_conformance, status_code_conformance])

        fuzz()
    assert all(count > 0 for count in calls.values()) and len(calls) == len(operations)
