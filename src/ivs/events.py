"""Events: what the apps say, on change. Schema `ivs.event/1`; docs/metadata.md has every field.

Every event carries the sensor, a sequence number shared with everything else the sensor
emits (so `(sensor_id, seq)` names one message exactly once), the frame that caused it, the
frame's capture time, and the app instance that decided it. The `kind` field selects the rest.
"""

from __future__ import annotations

import msgspec

EVENT_SCHEMA = "ivs.event/1"


class Event(msgspec.Struct, frozen=True, tag_field="kind", kw_only=True):
    """Fields every event has. `time` is wall-clock seconds at capture; `t_source` is the
    source's own clock (video pts, else monotonic capture time) that dwell times use."""

    schema: str = EVENT_SCHEMA
    sensor_id: str = ""
    seq: int = 0
    frame: int
    time: float
    t_capture_ns: int
    t_source: float
    app: str


class Count(Event, frozen=True, tag="count"):
    """A tracked object crossed a counting line."""

    track_id: int
    class_id: int
    label: str
    direction: str
    """"in" or "out" (see docs/apps.md for which way is in)."""
    anchor_from: tuple[float, float]
    anchor_to: tuple[float, float]
    """The anchor point on the last frame on the old side and on this frame: why it counted."""
    totals: dict[str, dict[str, int]]
    """Running totals: {"in": {label: n}, "out": {label: n}}."""


class ZoneEnter(Event, frozen=True, tag="zone_enter"):
    track_id: int
    label: str
    anchor: tuple[float, float]
    occupancy: int
    """Objects in the zone after this event."""


class ZoneLeave(Event, frozen=True, tag="zone_leave"):
    track_id: int
    label: str
    dwell_s: float
    occupancy: int


class Loiter(Event, frozen=True, tag="loiter"):
    """An object has stayed in a zone longer than the configured time (sent once per visit)."""

    track_id: int
    label: str
    dwell_s: float


class Stop(Event, frozen=True, tag="stop"):
    """Someone is in the safety zone: stop the machine. Sent on the first frame they are."""

    objects: int
    labels: list[str]
    boxes: list[tuple[float, float, float, float]]


class Clear(Event, frozen=True, tag="clear"):
    """The safety zone has been empty for the configured number of consecutive frames."""

    empty_frames: int
    stopped_s: float


class MaskPing(Event, frozen=True, tag="mask"):
    """One answer per tracked face: wearing a mask or not, decided over several frames."""

    track_id: int
    mask: bool
    score: float
    """Share of this face's frames that voted for the answer."""
    frames: int
    totals: dict[str, int]
    """Running totals: {"mask": n, "no_mask": n}."""


class Heatmap(Event, frozen=True, tag="heatmap"):
    """Where objects have been: counts of anchor points per grid cell since the last one."""

    cols: int
    rows: int
    width: int
    height: int
    counts: list[int]
    """Row-major, rows x cols; cell (r, c) covers x in [c*width/cols, (c+1)*width/cols)."""
    frames: int


class Ledger(Event, frozen=True, tag="ledger"):
    """The bandwidth ledger since the run started: metadata sent against the video it replaced."""

    frames: int
    """Frames read from the source (processed and dropped)."""
    raw_bytes: int
    """Bytes of those frames as raw RGB pixels."""
    compressed_bytes: int | None
    """Bytes of compressed video read from the source (None where the source has none)."""
    metadata_bytes: int
    """Bytes of every message this sensor sent, as JSON, this one excluded."""


AnyEvent = Count | ZoneEnter | ZoneLeave | Loiter | Stop | Clear | MaskPing | Heatmap | Ledger
EVENT_KINDS: tuple[type[Event], ...] = (Count, ZoneEnter, ZoneLeave, Loiter, Stop, Clear, MaskPing, Heatmap, Ledger)

_decoder = msgspec.json.Decoder(AnyEvent)


def decode_event(data: bytes | str) -> AnyEvent:
    """Parse and validate one JSON event."""
    event: AnyEvent = _decoder.decode(data)
    return event


def kind_of(event: Event) -> str:
    """The `kind` tag of an event ("count", "stop", ...)."""
    return str(type(event).__struct_config__.tag)
