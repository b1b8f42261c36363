"""Fuzzing the hub's HTTP API from its own OpenAPI schema (schemathesis, in process over ASGI).

Every operation the app publishes at /openapi.json is generated against, valid and invalid
requests alike, each sent twice: with the headers schemathesis made up (no, or a random,
Authorization) and with the right bearer token for the operation (a registered device's for
ingest and the device-facing endpoints, the admin token for the rest). Every answer must be no 5xx, conform to
the schema (status, content type, body), and every 4xx must carry a `detail` that explains.

On SQLite and on PostgreSQL. Deterministic (derandomized) and bounded: IVS_FUZZ_EXAMPLES raises the examples per operation
for a longer session (docs/testing.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks as openapi_checks

from ivs.hub.app import create_app
from ivs.hub.store import Store

ADMIN = "admin-secret-for-fuzzing"
EXAMPLES = int(os.environ.get("IVS_FUZZ_EXAMPLES", "50"))
"""Examples per operation, split between valid and invalid requests where there are invalid ones."""

STREAMING = {"/api/v1/stream"}
"""Server-Sent Events: the response never ends while the client is there, and an in-process
client reads a response to its end, so these are exercised in tests/test_hub_dashboard.py."""

DEVICE_FACING = ("/api/v1/ingest", "/api/v1/device/")
"""Operations a sensor calls with its device token; the rest take the admin token (or none)."""

CHECKS = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
]


def _constrained(schema: dict[str, Any]) -> bool:
    """Whether a parameter's schema rules some value out (a bare or nullable string does not)."""
    options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
    return any(set(o) - {"type", "title", "description", "format"} or o.get("type") != "string" for o in options)


def _negatable(op: dict[str, Any]) -> bool:
    """Whether a request can get this operation wrong: a JSON body, or a parameter that rules
    values out. Otherwise there is no invalid request to generate."""
    content = op.get("requestBody", {}).get("content", {})
    return any("json" in media for media in content) or any(
        _constrained(p.get("schema", {})) for p in op.get("parameters", [])
    )


def _operations() -> list[tuple[str, str, bool]]:
    """(METHOD, path, negatable) of every operation the app publishes, read at collection time."""
    store = Store("sqlite://")
    try:
        spec = create_app(store, ADMIN).openapi()
    finally:
        store.close()
    return sorted(
        (method.upper(), path, _negatable(op))
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in ("get", "put", "post", "delete", "patch", "head", "options")
    )


OPERATIONS = _operations()
CASES = [
    pytest.param(method, path, negatable, mode, id=f"{method} {path} {mode}")
    for method, path, negatable in OPERATIONS
    if path not in STREAMING
    for mode in [GenerationMode.POSITIVE, GenerationMode.NEGATIVE][: 2 if negatable else 1]
]


class Hub:
    def __init__(self, store: Store, device_token: str) -> None:
        self.store = store
        self.device_token = device_token


@pytest.fixture()
def hub(db_url: str) -> Iterator[Hub]:
    """On SQLite and on PostgreSQL (`db_url`): a NUL in a text field once gave a 500 on PostgreSQL only."""
    store = Store(db_url)
    token = store.add_device("cam-1")
    yield Hub(store, token)
    store.close()


def explains(response: Any) -> str | None:
    """Why a 4xx body does not explain itself, or None when it does."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"a {response.status_code} whose body is not JSON: {response.content[:200]!r}"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str) and len(detail.strip()) >= 10:
        return None
    # FastAPI's request validation: a list of {loc, msg, type}, one per problem
    if isinstance(detail, list) and detail and all(isinstance(d, dict) and d.get("msg") and "loc" in d for d in detail):
        return None
    return f"a {response.status_code} without a `detail` that explains: {body!r}"


@pytest.mark.parametrize(("method", "path", "negatable", "mode"), CASES)
def test_hub_api_never_fails_and_explains_every_rejection(
    hub: Hub, method: str, path: str, negatable: bool, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(hub.store, ADMIN), headers={"Authorization": f"Bearer {ADMIN}"}
    )
    operation = schema[path][method]
    token = hub.device_token if path.startswith(DEVICE_FACING) else ADMIN
    # PostgreSQL's leg with half the examples: what only it failed on (NUL in text) is replayed
    # deterministically by tests/test_hub_attacks.py on both databases.
    examples = EXAMPLES if hub.store.dialect == "sqlite" else EXAMPLES // 2
    seen: dict[int, int] = {}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples // 2 if negatable else examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def fuzz(case: Any) -> None:
        # as generated (no, or a made-up, Authorization), then with the operation's real token
        for headers in (None, {"Authorization": f"Bearer {token}"}):
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            if 400 <= response.status_code < 500:
                why = explains(response)
                assert why is None, f"{case.method} {case.formatted_path}: {why}"

    try:
        fuzz()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        pytest.skip(f"{method} {path}: its schema admits every request, so there is no invalid one to send")
    assert sum(seen.values()) >= 2, f"{method} {path}: nothing was sent"


def test_every_published_operation_is_fuzzed() -> None:
    """The exclusion list names only what exists, so a new endpoint is fuzzed by default."""
    paths = {path for _, path, _ in OPERATIONS}
    assert paths >= STREAMING, f"{sorted(STREAMING - paths)} are excluded from fuzzing but no longer exist"
    assert {"/api/v1/ingest", "/api/v1/events", "/api/v1/devices"} <= paths - STREAMING
