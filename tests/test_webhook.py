"""Webhooks against a real HTTP server on 127.0.0.1: one signed POST per event, retried through
the outbox, frame records never posted."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivs.events import Count
from ivs.outbox import Outbox
from ivs.records import FrameRecord, ModelRef, Timings
from ivs.sinks.webhook import WebhookSink, signature, verify
from tests.test_http_sink import Script, Server, stop_event
from tests.waiting import wait_for

SECRET = b"whsec-test"


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def server(script: Script) -> Iterator[Server]:
    srv = Server(script)
    yield srv
    srv.stop()


def frame_record(seq: int) -> FrameRecord:
    return FrameRecord(
        sensor_id="s1", seq=seq, frame=seq, time=1.0, t_capture_ns=1, source="x", width=4, height=4,
        model=ModelRef("m", "1", "detect", "onnxruntime"), detections=[],
        timings_ms=Timings(read=0, queue=0, isp=0, infer=0, decode=0, total=0), dropped=0, dropped_total=0,
        mode="metadata",
    )  # fmt: skip


def count_event(seq: int) -> Count:
    return Count(
        sensor_id="s1", seq=seq, frame=seq, time=1.0, t_capture_ns=1, t_source=0.0, app="door", track_id=1,
        class_id=0, label="person", direction="in", anchor_from=(0.0, 0.0), anchor_to=(1.0, 1.0), totals={},
    )  # fmt: skip


def sink(box: Outbox, url: str, **kw) -> WebhookSink:
    return WebhookSink("s1", box, url, secret=SECRET, max_backoff_s=0.05, timeout_s=5, **kw)


def test_each_event_is_one_signed_post_and_frames_are_not_posted(server: Server, script: Script, tmp_path: Path):
    s = sink(Outbox(tmp_path / "w.sqlite"), server.url)
    try:
        s.write(frame_record(1))
        s.write(stop_event(2))
        s.write(count_event(3))
        assert s.flush(10)
    finally:
        s.close()
    assert len(script.requests) == 2
    for request, (kind, seq) in zip(script.requests, [("stop", 2), ("count", 3)], strict=True):
        h = {k.lower(): v for k, v in request.headers.items()}
        body = json.loads(request.body)
        assert (body["kind"], body["seq"], h["x-ivs-event"], h["x-ivs-seq"]) == (kind, seq, kind, str(seq))
        # What a receiver in another language computes from the documented scheme, with nothing
        # of ivs's: HMAC-SHA256(secret, "<timestamp>.<body>"), hex, after "sha256=".
        expected = hmac.new(SECRET, h["x-ivs-timestamp"].encode() + b"." + request.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(h["x-ivs-signature"], "sha256=" + expected)
        assert abs(int(h["x-ivs-timestamp"]) - time.time()) < 300
        assert verify(SECRET, request.body, h["x-ivs-timestamp"], h["x-ivs-signature"])
        assert not verify(b"another secret", request.body, h["x-ivs-timestamp"], h["x-ivs-signature"])
        assert not verify(SECRET, request.body + b" ", h["x-ivs-timestamp"], h["x-ivs-signature"])  # tampered
        stale = str(int(h["x-ivs-timestamp"]) - 600)
        assert not verify(SECRET, request.body, stale, signature(SECRET, stale, request.body))  # a replay


def test_retried_through_outages_and_kept_across_a_restart(script: Script, tmp_path: Path):
    from ivs.localnet import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    box = Outbox(tmp_path / "w.sqlite")
    first = sink(box, url)  # nobody listens yet
    for n in range(1, 6):
        first.write(stop_event(n))
    wait_for(lambda: first.retries >= 2, what="failed attempts")
    first.close(timeout=0.1)
    assert box.depth() == 5  # kept
    script.answers = [503, "drop"]
    srv = Server(script, port=port)
    second = sink(box, url)
    try:
        assert second.flush(20)
    finally:
        second.close()
        srv.stop()
    delivered = [json.loads(r.body)["seq"] for r in script.requests if r.status == 200]
    assert delivered == [1, 2, 3, 4, 5]
    signatures = [r.headers["X-Ivs-Signature"] for r in script.requests]
    assert all(sig.startswith("sha256=") for sig in signatures)


def test_kinds_narrow_what_is_posted(server: Server, script: Script, tmp_path: Path):
    s = sink(Outbox(tmp_path / "w.sqlite"), server.url, kinds=["stop"])
    try:
        s.write(count_event(1))
        s.write(stop_event(2))
        assert s.flush(10)
    finally:
        s.close()
    assert [json.loads(r.body)["kind"] for r in script.requests] == ["stop"]


def test_webhook_config_errors_name_their_line(tmp_path: Path):
    from tests.test_config import GOOD, check

    bad = GOOD + "sinks:\n  - type: webhook\n    url: http://127.0.0.1:9/hook\n    kinds: [stop, stops]\n"
    r = check(tmp_path, bad)
    errors = [x for x in r.stderr.splitlines() if x.startswith("ivs: error:")]
    assert any("sensor.yaml:16:" in e and "secret_env" in e and "Field required" in e for e in errors), errors
    assert any("sensor.yaml:18:" in e and "unknown event kind 'stops'" in e for e in errors), errors


def test_every_sink_type_is_known_to_the_line_finder():
    from typing import get_args

    from ivs.sink_config import SINK_TYPES, SinkConfig

    members = get_args(get_args(SinkConfig)[0])
    assert set(SINK_TYPES) == {get_args(m.model_fields["type"].annotation)[0] for m in members}
