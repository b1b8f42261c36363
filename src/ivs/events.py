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


class Crowded(Event, frozen=True, tag="crowded"):
    """A zone's head count reached the crowding app's `crowded_at` and stayed there for its
    `hold_frames` (DeepStream's "overcrowding")."""

    count: int
    """Objects in the zone on the frame that decided it."""
    threshold: int
    """`crowded_at`."""


class CrowdCleared(Event, frozen=True, tag="crowd_clear"):
    """The head count of a crowded zone fell to the app's `clear_at` or below and stayed there
    for its `clear_frames`."""

    count: int
    threshold: int
    """`clear_at`."""
    crowded_s: float
    """How long the zone was crowded (source seconds)."""


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
    frames_skipped: int = 0
    """Frames of a damaged video that could not be decoded and were skipped."""
    evidence_bytes: int = 0
    """Bytes of evidence (redacted snapshots and clips) this sensor kept to send, apart from the
    metadata: 0 unless its `evidence.policy` lets pixels out."""


class Heartbeat(Event, frozen=True, tag="heartbeat"):
    """The sensor is alive: sent with its first frame and then every `period_s` (`heartbeat_s` in
    its config), on every transport; `app` is "sensor". A hub shows a sensor offline when it has
    heard nothing from it for its `--offline-after` seconds."""

    model: str
    version: str
    runtime: str
    fps: float
    """Frames processed per second, recent."""
    frames: int
    """Frames processed since the run started."""
    dropped: int
    """Frames dropped since the run started (the model was busy)."""
    period_s: float
    """When the next heartbeat is due."""


class SourceGap(Event, frozen=True, tag="gap"):
    """The source delivered nothing for a while (a camera unplugged, a stream dropped) and is back:
    sent with the first frame after the outage (`frame`, `time`); `app` is "source"."""

    start: float
    """Wall-clock seconds of the last frame before the outage."""
    end: float
    """Wall-clock seconds of the first frame after it."""
    duration_s: float
    frames_lost: int
    """Frames the source would have delivered meanwhile, at its rate (0 when it has none)."""
    attempts: int
    """Reopen attempts it took, the successful one included."""
    reason: str
    """Why the source stopped: the error, or "end of stream"."""


class ScheduleChange(Event, frozen=True, tag="schedule"):
    """An app with a `schedule` became active or inactive (sent with its first frame too): while
    inactive it sees no frames and sends nothing."""

    active: bool
    window: str | None = None
    """The window it is active in ("mon-fri 08:00-18:00 Europe/Berlin"), or None when inactive."""


AnyEvent = (
    Count
    | ZoneEnter
    | ZoneLeave
    | Loiter
    | Crowded
    | CrowdCleared
    | Stop
    | Clear
    | MaskPing
    | Heatmap
    | Ledger
    | SourceGap
    | Heartbeat
    | ScheduleChange
)
EVENT_KINDS: tuple[type[Event], ...] = (
    Count, ZoneEnter, ZoneLeave, Loiter, Crowded, CrowdCleared, Stop, Clear, MaskPing, Heatmap, Ledger, SourceGap,
    Heartbeat, ScheduleChange,
)  # fmt: skip

_decoder = msgspec.json.Decoder(AnyEvent)


def decode_event(data: bytes | str) -> AnyEvent:
    """Parse and validate one JSON event. Anything else raises msgspec.DecodeError
    (msgspec.ValidationError for well-formed JSON of the wrong shape) saying what was expected."""
    try:
        event: AnyEvent = _decoder.decode(data)
    except msgspec.ValidationError as err:
        raise explained(err) from None
    except msgspec.DecodeError as err:
        raise msgspec.DecodeError(f"not JSON ({err}): expected an {EVENT_SCHEMA} event as a JSON object") from None
    except RecursionError:
        raise msgspec.DecodeError(f"nested too deeply to decode: expected an {EVENT_SCHEMA} event") from None
    return event


def explained(err: msgspec.ValidationError) -> msgspec.ValidationError:
    """msgspec's validation error, naming the kinds there are where it names only the unknown
    one ("Invalid value 'x' - at `$.kind`"); its others say what was expected already
    ("Expected `int`, got `str` - at `$.seq`", "Object missing required field `app`")."""
    text = str(err)
    if text.startswith("Invalid value") and text.endswith("at `$.kind`"):
        kinds = ", ".join(str(k.__struct_config__.tag) for k in EVENT_KINDS)
        return msgspec.ValidationError(f"{text}: expected one of the {EVENT_SCHEMA} kinds {kinds}")
    return err


def kind_of(event: Event) -> str:
    """The `kind` tag of an event ("count", "stop", ...)."""
    return str(type(event).__struct_config__.tag)
