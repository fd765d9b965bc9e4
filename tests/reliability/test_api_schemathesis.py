"""Property-based tests of the whole API from its OpenAPI document (schemathesis): with an admin key and a real
InfluxDB holding readings of every device, generated requests to every route never get a 5xx, and every answer
matches what the document declares (status code, content type, body schema).

Bounded for CI by ``EXAMPLES`` per operation; ``PILOTWATCH_FUZZ_EXAMPLES=2000 pytest -s tests/reliability/
test_api_schemathesis.py`` runs a long one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from api.app import create_app
from api.settings import ApiSettings
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from tests.reliability.conftest import KeyKind

EXAMPLES = int(os.environ.get("PILOTWATCH_FUZZ_EXAMPLES", "15"))
"""Examples per operation and generation mode (valid and invalid inputs)."""
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def admin(key_kinds: list[KeyKind]) -> str:
    key = next(k.key for k in key_kinds if k.name == "admin-all")
    assert key is not None
    return key


@pytest.fixture
def app_under_test(
    api_settings: ApiSettings, manifest: Manifest, key_kinds: list[KeyKind], seeded_influx: InfluxV1
) -> Iterator[FastAPI]:
    app = create_app(api_settings, manifest=manifest)
    with TestClient(app) as client:  # runs the lifespan: the store and its InfluxDB client exist meanwhile
        app.state.test_client = client
        yield app


def fuzz(
    client: TestClient,
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    key: str,
    tried: dict[str, int],
) -> None:
    """Run one operation's generated cases through ``client``; count them in ``tried``.

    Sent with the app's TestClient and checked with schemathesis' own checks: schemathesis' sender (requests)
    breaks on the urllib3 variant that httpx2 installs beside it.
    """

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case[Any]) -> None:
        tried[operation.label] = tried.get(operation.label, 0) + 1
        headers = {str(k): str(v) for k, v in (case.headers or {}).items()}
        headers["X-API-Key"] = key
        params = dict(case.query or {})
        if case.path == "/alerts/stream":
            params["follow"] = "false"  # the live stream is endless by design: ask for what is there, then stop
        body = case.body if isinstance(case.body, dict | list) else None
        response = client.request(case.method, case.formatted_path, params=params or None, json=body, headers=headers)
        case.validate_response(response, checks=CHECKS)

    run()


def test_no_5xx_and_every_answer_matches_the_document(app_under_test: FastAPI, admin: str) -> None:
    # Driven by hand rather than by schemathesis' pytest plugin, which does not run on pytest 9 yet.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app_under_test)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the OpenAPI document has an invalid operation: {result}"
        operations.append(result.ok())
    assert len(operations) >= 8
    tried: dict[str, int] = {}
    unsatisfiable: list[str] = []
    for operation in operations:
        # Invalid inputs need a parameter to be invalid in (/health and /me have none).
        has_parameters = any(True for _ in operation.iter_parameters())
        for mode in (
            (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_parameters else (GenerationMode.POSITIVE,)
        ):
            try:
                fuzz(app_under_test.state.test_client, operation, mode, admin, tried)
            except Unsatisfiable:
                # Only where every input is valid (a free-form path string such as /ack-link/{token}) is there
                # no invalid case to generate.
                assert mode is GenerationMode.NEGATIVE, operation.label
                unsatisfiable.append(operation.label)
    print(f"schemathesis: {sum(tried.values())} requests over {len(tried)} operations")
    assert unsatisfiable == ["GET /ack-link/{token}", "POST /ack-link/{token}"], unsatisfiable
