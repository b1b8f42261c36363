"""The per-frame metadata record: what leaves the sensor for every processed frame.

Schema `ivs.frame/1`; every field is documented in docs/metadata.md. No field can hold pixel
data: boxes, scores, labels, timings and counters only.
"""

from __future__ import annotations

import msgspec

SCHEMA = "ivs.frame/1"


class ClassScore(msgspec.Struct, frozen=True):
    class_id: int
    label: str
    score: float


class DetectionRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    box: tuple[float, float, float, float]
    """x1, y1, x2, y2 in full-frame pixels."""
    score: float
    class_id: int
    label: str
    track_id: int | None = None
    top_k: list[ClassScore] | None = None
    attributes: dict[str, ClassScore] | None = None
    """Second-stage answers about this object, by model name (e.g. {"mask": ...})."""
    hides: list[int] | None = None
    """Ids of tracks hidden in this box (two people walking together, one box for both); the
    apps count them where this box goes."""
    stationary: bool | None = None
    """True when the track has barely moved for a while (a parked car, someone standing):
    `tracker.stationary_px` over `tracker.stationary_s`; absent otherwise."""


class Timings(msgspec.Struct, frozen=True, omit_defaults=True):
    """Milliseconds spent on this frame in each stage."""

    read: float
    queue: float
    isp: float
    infer: float
    decode: float
    total: float
    classify: float = 0.0
    """Second-stage classifiers on the detections' crops (0 when there are none)."""
    apps: float = 0.0
    """Tracker and apps (0 when there are none)."""
    sensor_dnn: float | None = None
    """The network's runtime on the IMX500, as the sensor reports it (absent on other sources)."""
    sensor_dsp: float | None = None
    """The DSP runtime the IMX500 reports for the frame (absent on other sources)."""


class ModelRef(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    version: str
    task: str
    runtime: str
    notice: str | None = None


class FrameRecord(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="schema", tag=SCHEMA):
    """One processed frame. `schema` (always first in JSON) is "ivs.frame/1"."""

    sensor_id: str
    seq: int
    frame: int
    time: float
    t_capture_ns: int
    source: str
    width: int
    height: int
    model: ModelRef
    detections: list[DetectionRecord]
    timings_ms: Timings
    dropped: int
    dropped_total: int
    mode: str
    pts: float | None = None
    roi: tuple[int, int, int, int] | None = None
    artifact: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(FrameRecord)


def encode(message: msgspec.Struct) -> bytes:
    """JSON bytes of a frame record or an event."""
    return _encoder.encode(message)


def decode(data: bytes | str) -> FrameRecord:
    return _decoder.decode(data)
