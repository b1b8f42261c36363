"""Well-formed messages for the hub tests: one builder per kind, shared so every test posts the
same shapes the sensor sends (the schema lives in ivs.events and ivs.records)."""

from __future__ import annotations

import msgspec

from ivs.events import Count, Stop
from ivs.records import FrameRecord, ModelRef, Timings

T0 = 1_699_999_200.0  # a multiple of 3600, so hourly buckets start on it


def count(sensor: str, seq: int, t: float, direction: str = "in", label: str = "person", app: str = "door") -> Count:
    return Count(
        sensor_id=sensor,
        seq=seq,
        frame=seq,
        time=t,
        t_capture_ns=int(t * 1e9),
        t_source=t - T0,
        app=app,
        track_id=seq,
        class_id=0,
        label=label,
        direction=direction,
        anchor_from=(10.0, 20.0),
        anchor_to=(10.0, 30.0),
        totals={"in": {label: 1}, "out": {}},
    )


def stop(sensor: str, seq: int, t: float | None = None, label: str = "person") -> Stop:
    t = 1_700_000_000.0 + seq if t is None else t
    return Stop(
        sensor_id=sensor,
        seq=seq,
        frame=seq,
        time=t,
        t_capture_ns=int(t * 1e9),
        t_source=0.0,
        app="press",
        objects=1,
        labels=[label],
        boxes=[(1.0, 2.0, 3.0, 4.0)],
    )


def frame(sensor: str, seq: int, t: float) -> FrameRecord:
    return FrameRecord(
        sensor_id=sensor,
        seq=seq,
        frame=seq,
        time=t,
        t_capture_ns=int(t * 1e9),
        source="synthetic",
        width=640,
        height=480,
        model=ModelRef(name="person", version="1", task="detect", runtime="onnxruntime"),
        detections=[],
        timings_ms=Timings(read=1, queue=0, isp=1, infer=5, decode=1, total=8),
        dropped=0,
        dropped_total=0,
        mode="realtime",
    )


def body(*messages: msgspec.Struct) -> bytes:
    """An HTTP ingest body: a JSON array of messages."""
    return msgspec.json.encode(list(messages))
