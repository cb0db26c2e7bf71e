"""``GET /openapi.json``: a valid document of every route, and the running API fuzzed from it.

The document is built from the same declarations as the router
(:func:`daemon.admin.api.operations`), so these tests check that nothing was
registered without being described, that the document is valid OpenAPI
(``openapi-spec-validator``), and — against a real ``tradingd demo`` — that
what schemathesis generates from it (valid and invalid requests alike) never
gets a 5xx or hangs, and that every
answer has a status code and content type the document declares.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import httpx2
import pytest
import schemathesis
import trio
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from daemon.admin.api import AdminAPI
from daemon.http import serve_http
from tests.helpers.admin import Host, idle_service
from tests.helpers.demo import running_demo

#: Generated cases per operation (15 operations: well under a minute in all).
EXAMPLES_PER_OPERATION = 25
#: One request may take this long at most: a hang is a failure, not a slow test.
REQUEST_TIMEOUT_S = 5.0


def test_document_is_valid_openapi_and_describes_every_route() -> None:
    api = AdminAPI(Host(orders=idle_service()))
    document = api.openapi_document()
    validate(document)  # raises on an invalid document
    paths = document["paths"]
    for method, pattern in api.router.routes():
        assert pattern in paths, pattern
        operation = paths[pattern].get(method.lower())
        assert operation is not None, (method, pattern)
        assert "400" in operation["responses"] and "503" in operation["responses"]
        if operation["security"]:
            assert {"401", "403"} <= set(operation["responses"]), (method, pattern)
    described = {(m.upper(), p) for p, ops in paths.items() for m in ops}
    assert described == set(api.router.routes())


async def test_document_is_served_without_a_token() -> None:
    api = AdminAPI(Host(orders=idle_service()))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(
                functools.partial(serve_http, api.handle, "127.0.0.1", 0)
            )
            async with httpx2.AsyncClient(base_url=f"http://{host}:{port}") as client:
                r = await client.get("/openapi.json")
                assert r.status_code == 200
                assert r.headers["content-type"] == "application/json"
                assert r.json() == api.openapi_document()
                # Every route behind the token says so, and refuses without it.
                for path, ops in r.json()["paths"].items():
                    for method, op in ops.items():
                        if op["security"] and "{" not in path:
                            answer = await client.request(method.upper(), path)
                            assert answer.status_code == 401, (method, path)
            nursery.cancel_scope.cancel()


def _fuzz(base: str, token: str) -> list[str]:
    """Run schemathesis against ``base`` (synchronous); returns the failures found."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", timeout=REQUEST_TIMEOUT_S)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    expected = {f"{m} {p}" for m, p in AdminAPI(Host(orders=idle_service())).router.routes()}
    # schemathesis leaves out the document's own URL when it loads it from there.
    assert {op.label for op in operations} == expected - {"GET /openapi.json"}
    for operation in operations:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(
            case=operation.as_strategy(GenerationMode.POSITIVE)
            | operation.as_strategy(GenerationMode.NEGATIVE)
        )
        def run(case: Any) -> None:
            response = case.call(base_url=base, headers=headers, timeout=REQUEST_TIMEOUT_S)
            case.validate_response(response, checks=checks)

        try:
            run()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
    return failures


@pytest.mark.slow
async def test_schemathesis_fuzz_of_the_running_demo(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_demo(tmp_path) as demo:
            failures = await trio.to_thread.run_sync(_fuzz, demo.base, demo.token)
            assert not failures, "\n\n".join(failures)[:20_000]
            # The daemon is still up and answering.
            async with httpx2.AsyncClient(trust_env=False, timeout=5.0) as client:
                r = await client.get(f"{demo.base}/health")
                assert "state" in r.json()
            assert demo.proc.returncode is None
        # No handler raised (that is logged, and answered with a generic 500).
        assert "admin HTTP: handler for" not in demo.stderr(), demo.stderr()[-5000:]
