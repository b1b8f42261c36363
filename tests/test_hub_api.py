"""The hub's HTTP API on SQLite and on PostgreSQL: devices, ingest (idempotent, validated element by
element), queries, metrics, and malformed requests that must never give a 5xx."""

from __future__ import annotations

import msgspec
import pytest
from fastapi.testclient import TestClient

from ivs.hub.app import create_app
from ivs.hub.store import SCHEMA_VERSION, Store
from tests.messages import T0, body, count, frame, stop

ADMIN = "admin-secret"


@pytest.fixture()
def store(db_url: str):
    """The hub's store on SQLite and on PostgreSQL (`db_url`): every test here runs on both."""
    s = Store(db_url)
    yield s
    s.close()


@pytest.fixture()
def client(store: Store):
    with TestClient(create_app(store, ADMIN, open_read=True), raise_server_exceptions=False) as c:
        yield c


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def add_device(client: TestClient, name: str) -> dict[str, str]:
    r = client.post("/api/v1/devices", json={"name": name}, headers=admin())
    assert r.status_code == 201, r.text
    assert r.json()["name"] == name
    return {"Authorization": f"Bearer {r.json()['token']}", "Content-Type": "application/json"}


def post(client: TestClient, auth: dict[str, str], data: bytes):
    return client.post("/api/v1/ingest", content=data, headers=auth)


def metric(client: TestClient, line_start: str) -> float:
    text = client.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{line_start} not in /metrics:\n{text}")


def test_schema_is_created_with_its_version(store: Store, db_url: str) -> None:
    assert store.schema_version() == SCHEMA_VERSION == 5
    again = Store(db_url)  # opening it again changes nothing
    assert again.schema_version() == 5
    again.close()


def test_ingest_then_query_events_counts_and_sensors(client: TestClient) -> None:
    auth = add_device(client, "cam-1")
    batch = [
        count("cam-1", 1, T0 + 5),
        count("cam-1", 2, T0 + 10, "out"),
        count("cam-1", 3, T0 + 70, "in", "car"),
        stop("cam-1", 4, T0 + 75),
        frame("cam-1", 5, T0 + 80),
    ]
    r = post(client, auth, body(*batch))
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 5, "duplicates": 0, "rejected": []}

    events = client.get("/api/v1/events", params={"sensor": "cam-1"}).json()
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert events[0] == msgspec.json.decode(msgspec.json.encode(batch[0]))  # stored as sent
    assert [e["seq"] for e in client.get("/api/v1/events", params={"kind": "count"}).json()] == [1, 2, 3]
    assert [e["seq"] for e in client.get("/api/v1/events", params={"kind": "frame"}).json()] == [5]
    assert [e["seq"] for e in client.get("/api/v1/events", params={"app": "press"}).json()] == [4]
    in_window = client.get("/api/v1/events", params={"since": T0 + 10, "until": T0 + 75}).json()
    assert [e["seq"] for e in in_window] == [2, 3]
    assert [e["seq"] for e in client.get("/api/v1/events", params={"after_seq": 3, "limit": 1}).json()] == [4]
    assert client.get("/api/v1/events", params={"sensor": "nobody"}).json() == []

    counts = client.get("/api/v1/counts", params={"sensor": "cam-1", "interval": 60}).json()
    assert counts == [
        {"start": T0, "end": T0 + 60, "counts": {"in": {"person": 1}, "out": {"person": 1}}},
        {"start": T0 + 60, "end": T0 + 120, "counts": {"in": {"car": 1}}},
    ]
    one_bucket = client.get("/api/v1/counts", params={"interval": 3600, "since": T0 + 6}).json()
    assert [b["counts"] for b in one_bucket] == [{"in": {"car": 1}, "out": {"person": 1}}]

    (sensor,) = client.get("/api/v1/sensors").json()
    assert sensor["sensor_id"] == "cam-1"
    assert sensor["online"] is True
    assert sensor["last_seq"] == 5
    assert sensor["messages"] == 5
    assert sensor["last_seen"] > T0


def test_counts_by_app_and_before_until(client: TestClient) -> None:
    auth = add_device(client, "cam-1")
    batch = [
        count("cam-1", 1, T0 + 5, "in", app="door"),
        count("cam-1", 2, T0 + 20, "in", app="till"),
        count("cam-1", 3, T0 + 30, "out", app="door"),
        count("cam-1", 4, T0 + 60, "in", app="door"),  # exactly at `until` below: excluded
        count("cam-1", 5, T0 + 70, "in", app="till"),
    ]
    assert post(client, auth, body(*batch)).json()["accepted"] == 5

    def counts(**params: object) -> list[object]:
        r = client.get("/api/v1/counts", params={"interval": 3600, **params})
        assert r.status_code == 200, r.text
        return [b["counts"] for b in r.json()]

    assert counts() == [{"in": {"person": 4}, "out": {"person": 1}}]
    assert counts(app="door") == [{"in": {"person": 2}, "out": {"person": 1}}]
    assert counts(app="till") == [{"in": {"person": 2}}]
    assert counts(until=T0 + 60) == [{"in": {"person": 2}, "out": {"person": 1}}], "until is exclusive"
    assert counts(app="door", until=T0 + 60) == [{"in": {"person": 1}, "out": {"person": 1}}]
    assert counts(app="till", since=T0 + 21, until=T0 + 71) == [{"in": {"person": 1}}]
    assert counts(app="nobody") == [] and counts(until=T0) == []


def test_a_repeated_batch_is_stored_once(client: TestClient, store: Store) -> None:
    auth = add_device(client, "cam-1")
    data = body(*(count("cam-1", seq, T0 + seq) for seq in range(1, 51)))
    assert post(client, auth, data).json() == {"accepted": 50, "duplicates": 0, "rejected": []}
    assert post(client, auth, data).json() == {"accepted": 0, "duplicates": 50, "rejected": []}
    # overlapping, and a message repeated inside one batch
    overlap = body(*(count("cam-1", seq, T0 + seq) for seq in [49, 50, 51, 51]))
    assert post(client, auth, overlap).json() == {"accepted": 1, "duplicates": 3, "rejected": []}
    assert store.message_count() == 51
    assert len(client.get("/api/v1/events", params={"limit": 10000}).json()) == 51
    assert metric(client, "ivs_hub_messages_accepted_total") == 51
    assert metric(client, "ivs_hub_messages_duplicates_total") == 53


def test_unknown_missing_and_revoked_tokens_get_401(client: TestClient, store: Store) -> None:
    data = body(count("cam-1", 1, T0))
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}):
        r = client.post("/api/v1/ingest", content=data, headers=headers)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer"
    auth = add_device(client, "cam-1")
    assert post(client, auth, data).status_code == 200
    assert client.delete("/api/v1/devices/cam-1", headers=admin()).json() == {"name": "cam-1", "revoked": True}
    r = post(client, auth, body(count("cam-1", 2, T0)))
    assert r.status_code == 401
    assert "revoked" in r.json()["detail"]
    assert store.message_count() == 1
    assert metric(client, 'ivs_hub_messages_rejected_total{reason="auth"}') == 4
    # re-issuing a revoked device gives a new token; the old one stays dead
    new_auth = add_device(client, "cam-1")
    assert post(client, auth, data).status_code == 401
    assert post(client, new_auth, body(count("cam-1", 2, T0))).json()["accepted"] == 1


def test_devices_need_the_admin_token_and_never_show_hashes(client: TestClient, store: Store) -> None:
    assert client.post("/api/v1/devices", json={"name": "cam-1"}).status_code == 401
    assert (
        client.post("/api/v1/devices", json={"name": "cam-1"}, headers={"Authorization": "Bearer x"}).status_code == 401
    )
    assert client.get("/api/v1/devices").status_code == 401
    add_device(client, "cam-1")
    add_device(client, "cam-2")
    r = client.post("/api/v1/devices", json={"name": "cam-1"}, headers=admin())
    assert r.status_code == 409
    assert "revoke it first" in r.json()["detail"]
    for bad in ({"name": "has space"}, {"name": "a/b"}, {"name": ""}, {"name": 5}, {}):
        assert client.post("/api/v1/devices", json=bad, headers=admin()).status_code == 422, bad
    client.delete("/api/v1/devices/cam-2", headers=admin())
    listed = client.get("/api/v1/devices", headers=admin()).json()
    assert [(d["name"], d["revoked"] is None) for d in listed] == [("cam-1", True), ("cam-2", False)]
    assert all(set(d) == {"name", "created", "revoked"} for d in listed)
    assert client.delete("/api/v1/devices/nobody", headers=admin()).status_code == 404
    # no admin token configured: that token is nobody's (an admin user's token still manages)
    with TestClient(create_app(store, "", open_read=True)) as no_admin:
        assert no_admin.post("/api/v1/devices", json={"name": "cam-3"}, headers=admin()).status_code == 401


def test_a_device_cannot_post_as_another_sensor(client: TestClient, store: Store) -> None:
    auth = add_device(client, "cam-1")
    add_device(client, "cam-2")
    r = post(client, auth, body(count("cam-1", 1, T0), count("cam-2", 1, T0)))
    assert r.status_code == 200
    assert r.json()["accepted"] == 1
    assert r.json()["rejected"] == [{"index": 1, "reason": "device 'cam-1' may not post as 'cam-2'"}]
    assert [s["sensor_id"] for s in client.get("/api/v1/sensors").json()] == ["cam-1"]
    assert metric(client, 'ivs_hub_messages_rejected_total{reason="sensor_mismatch"}') == 1


def test_malformed_elements_are_rejected_with_index_and_reason(client: TestClient, store: Store) -> None:
    auth = add_device(client, "cam-1")
    good = msgspec.to_builtins(count("cam-1", 1, T0))
    missing = {k: v for k, v in msgspec.to_builtins(count("cam-1", 2, T0)).items() if k != "direction"}
    wrong_type = {**msgspec.to_builtins(count("cam-1", 3, T0)), "track_id": "seven"}
    unknown_kind = {**msgspec.to_builtins(count("cam-1", 4, T0)), "kind": "teleport"}
    unknown_schema = {**msgspec.to_builtins(count("cam-1", 5, T0)), "schema": "ivs.event/99"}
    zero_seq = msgspec.to_builtins(count("cam-1", 0, T0))
    huge_seq = msgspec.to_builtins(count("cam-1", 2**63, T0))
    good2 = msgspec.to_builtins(count("cam-1", 6, T0))
    data = msgspec.json.encode(
        [good, missing, wrong_type, unknown_kind, 42, "text", None, [1, 2], unknown_schema, zero_seq, huge_seq, good2]
    )
    r = post(client, auth, data)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["accepted"] == 2
    reasons = {x["index"]: x["reason"] for x in result["rejected"]}
    assert sorted(reasons) == list(range(1, 11))
    assert "direction" in reasons[1]
    assert "track_id" in reasons[2] and "int" in reasons[2]
    assert "teleport" in reasons[3]
    for i in (4, 5, 6, 7):
        assert "expected a JSON object" in reasons[i]
    assert "ivs.event/99" in reasons[8]
    assert "seq 0" in reasons[9]
    assert "seq 9223372036854775808" in reasons[10]
    assert [e["seq"] for e in client.get("/api/v1/events").json()] == [1, 6]
    assert metric(client, 'ivs_hub_messages_rejected_total{reason="schema"}') == 10


def test_a_body_that_is_not_an_array_is_400(client: TestClient) -> None:
    auth = add_device(client, "cam-1")
    for data in (b"", b"{", b'{"schema": "ivs.event/1"}', b"42", b"[1, 2", b"\xff\xfe", msgspec.msgpack.encode([1])):
        r = post(client, auth, data)
        assert r.status_code == 400, (data, r.text)
        assert "expected a JSON array" in r.json()["detail"]
    assert post(client, auth, b"[]").json() == {"accepted": 0, "duplicates": 0, "rejected": []}


def test_oversized_batches_are_413(store: Store) -> None:
    with TestClient(create_app(store, ADMIN, max_messages=10, max_bytes=4096, open_read=True)) as client:
        auth = add_device(client, "cam-1")
        r = post(client, auth, body(*(count("cam-1", seq, T0) for seq in range(1, 12))))
        assert r.status_code == 413
        assert "11 messages" in r.json()["detail"] and "at most 10" in r.json()["detail"]
        r = post(client, auth, b"[" + b" " * 5000 + b"]")
        assert r.status_code == 413
        assert "at most 4096" in r.json()["detail"]

        def chunks():  # no Content-Length: the limit applies while reading
            for _ in range(10):
                yield b" " * 1000

        r = client.post("/api/v1/ingest", content=chunks(), headers=auth)
        assert r.status_code == 413
        assert metric(client, 'ivs_hub_messages_rejected_total{reason="too_large"}') == 3
        assert store.message_count() == 0


def test_the_default_limits(client: TestClient) -> None:
    auth = add_device(client, "cam-1")
    r = post(client, auth, b"[" + b",".join([b"{}"] * 10_001) + b"]")
    assert r.status_code == 413
    assert "at most 10000" in r.json()["detail"]
    r = post(client, auth, b"[" + b" " * (10 * 1024 * 1024) + b"]")
    assert r.status_code == 413


def test_metrics(client: TestClient, store: Store) -> None:
    auth = add_device(client, "cam-1")
    post(client, auth, body(count("cam-1", 1, T0), count("cam-1", 2, T0)))
    post(client, auth, body(count("cam-1", 2, T0)))
    post(client, auth, b"[5]")
    text = client.get("/metrics").text
    assert "ivs_hub_messages_accepted_total 2.0" in text
    assert "ivs_hub_messages_duplicates_total 1.0" in text
    assert 'ivs_hub_messages_rejected_total{reason="schema"} 1.0' in text
    assert 'ivs_hub_messages_rejected_total{reason="auth"} 0.0' in text
    assert "ivs_hub_ingest_batch_seconds_count 2.0" in text
    assert "ivs_hub_sensors_online 1.0" in text
    # every app has its own registry
    with TestClient(create_app(store, ADMIN, open_read=True)) as other:
        assert "ivs_hub_messages_accepted_total 0.0" in other.get("/metrics").text


@pytest.mark.parametrize(
    "path, params",
    [
        ("/api/v1/events", {"limit": "many"}),
        ("/api/v1/events", {"limit": 0}),
        ("/api/v1/events", {"limit": 10_001}),
        ("/api/v1/events", {"since": "yesterday"}),
        ("/api/v1/events", {"since": "nan"}),
        ("/api/v1/events", {"until": "inf"}),
        ("/api/v1/events", {"after_seq": 2**64}),
        ("/api/v1/events", {"after_seq": -1}),
        ("/api/v1/events", {"sensor": "a\x00b"}),
        ("/api/v1/events", {"sensor": "x" * 200}),
        ("/api/v1/counts", {"interval": 0}),
        ("/api/v1/counts", {"interval": "1.5"}),
        ("/api/v1/counts", {"interval": 10**30}),
        ("/api/v1/counts", {"app": "\x01"}),
    ],
)
def test_malformed_queries_are_4xx(client: TestClient, path: str, params: dict[str, object]) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 422, r.text


def test_malformed_requests_never_give_a_5xx(client: TestClient) -> None:
    auth = add_device(client, "cam-1")
    odd_queries = [
        {"since": "1e308", "until": "-1e308"},
        {"sensor": "é✓", "kind": "count", "app": "'; DROP TABLE messages; --"},
        {"after_seq": 2**63 - 1, "limit": 10_000},
    ]
    for params in odd_queries:
        assert client.get("/api/v1/events", params=params).status_code == 200
        assert client.get("/api/v1/counts", params={k: v for k, v in params.items() if k != "kind"}).status_code in (
            200,
            422,
        )
    bad_bodies = [
        b'[{"schema": "ivs.event/1", "kind": "count", "seq": "1"}]',
        b'[{"schema": 5}]',
        b'[{"schema": "ivs.frame/1", "sensor_id": "cam-1"}]',
        msgspec.json.encode([{**msgspec.to_builtins(count("cam-1", 1, T0)), "frame": -1}]),
        msgspec.json.encode([{**msgspec.to_builtins(count("cam-1", 1, T0)), "t_capture_ns": 2**64 - 1}]),
        msgspec.json.encode([{**msgspec.to_builtins(count("cam-1", 1, T0)), "time": 1e400}]),
        msgspec.json.encode([{**msgspec.to_builtins(count("cam-1", 1, T0)), "app": "a\x00b"}]),
        msgspec.json.encode([{**msgspec.to_builtins(count("cam-1", 1, T0)), "sensor_id": ""}]),
        b'[{"schema": "ivs.event/1", "kind": "count", "seq": 1e999}]',
        b"[" + b"[" * 2000 + b"]" * 2000 + b"]",
        b'[{"schema": "ivs.event/1", "kind": "count", "labels": ' + b"[" * 2000 + b"]" * 2000 + b"}]",
        b'[{"schema": ' + b"{" * 2000 + b"}" * 2000 + b"}]",
    ]
    for data in bad_bodies:
        r = post(client, auth, data)
        assert r.status_code < 500, (data[:80], r.text)
        assert r.status_code == 400 or r.json()["accepted"] == 0, (data[:80], r.text)
    for r in (
        client.post("/api/v1/devices", content=b"{", headers={**admin(), "Content-Type": "application/json"}),
        client.post("/api/v1/devices", content=b"x", headers=admin()),
        client.delete("/api/v1/devices/" + "x" * 5000, headers=admin()),
        client.get("/api/v1/sensors", params={"junk": "\x00"}),
    ):
        assert r.status_code < 500, r.text
    assert client.get("/api/v1/events").json() == []


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json", headers=admin()).json()
    for path in ("/api/v1/ingest", "/api/v1/events", "/api/v1/counts", "/api/v1/sensors", "/api/v1/devices"):
        assert path in spec["paths"], path
    assert spec["paths"]["/api/v1/ingest"]["post"]["requestBody"]["content"]["application/json"]["schema"]["type"] == (
        "array"
    )
    # No Swagger or ReDoc page (they would run a CDN's script on the hub's origin).
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    answers = [client.get("/healthz"), client.get("/nowhere"), client.get("/api/v1/devices"),
               client.post("/api/v1/login", content=b"\xff\xfe", headers={"Content-Type": "application/json"}),
               client.get("/dashboard")]  # fmt: skip
    assert [r.status_code for r in answers] == [200, 404, 401, 422, 200]
    for r in answers:
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp and "unsafe-inline" not in csp
    page = answers[-1]
    assert "script-src 'sha256-" in page.headers["content-security-policy"]  # its own inline script, by hash
