"""The sensor's configuration: what one YAML file describes (source, model, tracker, filters,
apps, sinks, evidence, deploy), every field described and unknown keys refused. Reading a file
and refusing it with line numbers is `ivs.config.check`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from ivs.apps.registry import AppSettings, app_types
from ivs.config_base import Settings as _Model
from ivs.sink_config import (
    HttpSinkConfig,
    JsonlSinkConfig,
    MqttSinkConfig,
    SinkConfig,
    WebhookSinkConfig,
)

Point = tuple[float, float]


class ReconnectConfig(_Model):
    """How a live source (a camera, a network stream) that stops delivering is reopened:
    exponential backoff, `ivs.sources.reconnect.Reconnect`. Files are never reopened."""

    enabled: bool = Field(
        True, description="Reopen a live source that went away; false: its failure ends the run with an error."
    )
    first_s: float = Field(0.5, gt=0, le=3600, description="Wait before the first reopen attempt (seconds).")
    max_s: float = Field(
        10.0, gt=0, le=3600, description="Longest wait between attempts (seconds): the backoff grows up to this."
    )
    factor: float = Field(2.0, ge=1, le=10, description="Each wait is the last one times this (1: a fixed wait).")
    give_up_s: float | None = Field(
        None,
        gt=0,
        description="End the run with an error when the source is not back after this long (seconds); "
        "default: never give up, as a fixed camera wants.",
    )

    @model_validator(mode="after")
    def _first_within_max(self) -> ReconnectConfig:
        if self.first_s > self.max_s:
            raise ValueError(f"first_s {self.first_s:g} is more than max_s {self.max_s:g}: expected first_s <= max_s")
        return self


class SourceConfig(_Model):
    url: str = Field(description="Video file, RTSP/HTTP URL, camera index, image folder or synthetic[:WxH][@FPS][:N].")
    fps: float | None = Field(None, ge=0, description="Pace at this rate (default: the source's); 0 = unpaced.")
    max_frames: int | None = Field(None, gt=0, description="Stop after this many frames.")
    frame_size: tuple[int, int] | None = Field(
        None, description="Width, height: to check coordinates when the source cannot say (cameras)."
    )
    reconnect: ReconnectConfig = Field(
        default_factory=lambda: ReconnectConfig(),
        description="How a camera or network stream that went away is reopened (docs/reliability.md).",
    )
    stall_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="A network stream that delivers nothing for this long (seconds) counts as dropped.",
    )


class ModelConfig(_Model):
    name: str = Field(description="Zoo name or .ivsm package path.")
    runtime: Literal["auto", "onnxruntime", "openvino", "litert", "onnxruntime-cuda"] = Field(
        "auto", description="Inference engine (onnxruntime-cuda: an NVIDIA GPU, where onnxruntime-gpu is installed)."
    )
    roi: tuple[int, int, int, int] | None = Field(None, description="Region of interest x, y, w, h in pixels.")
    tiles: tuple[int, int] | None = Field(
        None, description="Columns, rows of overlapping tiles (default: the package's hint)."
    )
    full_frame: bool | None = Field(
        None,
        description="With tiles, also one pass over the whole frame, so that an object larger than a tile's "
        "overlap stays one box (default: with the package's tiles, its hint, on where it says nothing; with `tiles` "
        "set, off).",
    )
    threads: int | None = Field(None, gt=0, description="Inference threads.")
    classify_with: str | None = Field(None, description="Second-stage classifier run on each detection's crop.")


class TrackerConfig(_Model):
    high_threshold: float = Field(0.5, ge=0, le=1, description="Detections above this start and extend tracks.")
    low_threshold: float = Field(0.1, ge=0, le=1, description="Detections above this only extend tracks.")
    lost_frames: int = Field(30, ge=0, description="Frames a lost track is kept to be found again.")
    stationary_px: float = Field(10.0, gt=0, description="A track whose box centre stays within this many pixels...")
    stationary_s: float | None = Field(
        10.0,
        gt=0,
        description="... for this many seconds is stationary (in its record; zones may ignore it); null: off.",
    )


class ObjectFilterConfig(_Model):
    min_area: float | None = Field(
        None, gt=0, description="Smallest box: square pixels, or below 1 a fraction of the frame's area."
    )
    max_area: float | None = Field(
        None, gt=0, description="Largest box: square pixels, or below 1 a fraction of the frame's area."
    )
    min_score: float | None = Field(None, ge=0, le=1, description="Lowest score kept.")
    aspect: tuple[float, float] | None = Field(None, description="Range of a box's width / height: [min, max].")

    @model_validator(mode="after")
    def _ranges(self) -> ObjectFilterConfig:
        lo, hi = self.min_area, self.max_area
        if lo is not None and hi is not None and (lo < 1) == (hi < 1) and lo > hi:
            raise ValueError(f"min_area {lo:g} > max_area {hi:g}: expected min_area <= max_area")
        if self.aspect is not None:
            a, b = self.aspect
            if not 0 < a <= b:
                raise ValueError(f"aspect [{a:g}, {b:g}]: expected 0 < min <= max (width / height)")
        return self


class MaskConfig(_Model):
    name: str | None = Field(None, description="What the mask covers (for people reading the config).")
    polygon: list[tuple[float, float]] = Field(description="The masked area's corners, in order.")
    anchor: Literal["bottom_center", "center", "top_center"] = Field(
        "bottom_center", description="The point of a box that, inside the mask, drops it."
    )

    @field_validator("polygon")
    @classmethod
    def _three(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if len(v) < 3:
            raise ValueError(f"a polygon needs at least 3 points, got {len(v)}")
        return v


class FiltersConfig(_Model):
    coords: Literal["pixels", "normalized"] = Field(
        "pixels", description="The masks' points in pixels, or as fractions of the frame's width and height."
    )
    objects: dict[str, ObjectFilterConfig] = Field(
        default_factory=dict, description='Per label ("*": every label without its own): area, score, aspect.'
    )
    exclude: list[MaskConfig] = Field(default_factory=list, description="Masks: nothing is detected inside them.")


class EvidenceConfig(_Model):
    policy: Literal["none", "redacted", "full"] = Field(
        "none", description="none: no pixel is kept or leaves (the default); redacted; full."
    )
    redact: Literal["persons", "faces"] = Field(
        "persons", description="With redacted: every person box pixelated, or faces (the face detector's) blurred."
    )
    events: list[str] = Field(
        ["stop", "count", "zone_enter", "loiter", "mask"], description="Event kinds that get evidence."
    )
    apps: list[str] | None = Field(None, description="Only these apps' events (default: every app's).")
    pre_s: float = Field(5.0, ge=0, le=60, description="Seconds before the event in the clip.")
    post_s: float = Field(5.0, ge=0, le=60, description="Seconds after the event in the clip.")
    snapshot: bool = Field(True, description="A JPEG of the event's frame.")
    clip: bool = Field(True, description="An H.264 clip from pre_s before to post_s after.")
    memory_mib: float = Field(64.0, gt=0, le=4096, description="Memory cap of the pre-event buffer (JPEG frames).")
    coords: Literal["pixels", "normalized"] = Field("pixels", description="The masks' points.")
    masks: list[list[tuple[float, float]]] = Field(
        default_factory=list, description="Polygons blacked out in all evidence, whatever the policy."
    )
    spool: str = Field("ivs-evidence.sqlite", description="Durable spool of evidence waiting for the hub.")
    spool_mib: float = Field(256.0, gt=0, description="Spool cap: evidence past it is not kept (counted).")
    url: str | None = Field(None, description="The hub's evidence endpoint, e.g. https://hub:8080/api/v1/evidence.")
    token_env: str | None = Field(None, description="Environment variable holding the device's hub token.")
    ca_file: str | None = Field(None, description="CA certificate (PEM) to verify an https hub against.")

    @field_validator("events")
    @classmethod
    def _kinds(cls, v: list[str]) -> list[str]:
        from ivs.events import EVENT_KINDS

        known = sorted(str(k.__struct_config__.tag) for k in EVENT_KINDS)
        for kind in v:
            if kind not in known:
                raise ValueError(f"unknown event kind {kind!r}: expected some of {', '.join(known)}")
        return v

    @model_validator(mode="after")
    def _where(self) -> EvidenceConfig:
        if self.policy != "none" and (self.url is None or self.token_env is None):
            raise ValueError(f"policy {self.policy!r} sends evidence to the hub: expected url and token_env")
        for i, polygon in enumerate(self.masks):
            if len(polygon) < 3:
                raise ValueError(f"masks[{i}]: a polygon needs at least 3 points, got {len(polygon)}")
        return self


# The `apps:` entries: each app's module registers its settings (ivs.apps.registry).
if TYPE_CHECKING:
    AppConfig = AppSettings
else:
    _SETTINGS = tuple(app_types()[name].settings for name in sorted(app_types()))
    AppConfig = Annotated[Union[_SETTINGS], Field(discriminator="type")]  # noqa: UP007 - a union built at run time


class DeployConfig(_Model):
    hub: str = Field(description="The hub's base URL (e.g. http://hub:8080): where the desired model and config are.")
    token_env: str = Field(
        "IVS_HUB_TOKEN",
        description="Name of the environment variable holding the device token (never the token itself).",
    )
    ca_file: str | None = Field(
        None,
        description="CA certificate (PEM) to verify an https hub against, e.g. ca.pem from `ivs hub certs` "
        "(default: the system's CAs).",
    )
    folder: str = Field("ivs-deploy", description="Where downloaded packages and the deployed config are kept.")
    interval_s: float = Field(10.0, gt=0, le=86400, description="How often to ask the hub for the desired state.")
    push: bool = Field(
        True,
        description="Also act at once when the hub publishes a new desired revision on MQTT (retained "
        "`ivs/ID/desired`, through the first MQTT sink's connection); polling stays as the fallback.",
    )


def _stdout() -> list[SinkConfig]:
    return [JsonlSinkConfig(type="jsonl", path="-")]


class SensorConfig(_Model):
    """One sensor: where frames come from, what runs on them, what it says and where to."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="Sensor id in every message.")
    source: SourceConfig
    model: ModelConfig
    filters: FiltersConfig = Field(
        default_factory=lambda: FiltersConfig(), description="What is dropped before tracking: per class, masks."
    )
    tracker: TrackerConfig = Field(default_factory=lambda: TrackerConfig(), description="Multi-object tracker.")
    evidence: EvidenceConfig = Field(
        default_factory=lambda: EvidenceConfig(), description="Redacted snapshots and clips (off by default)."
    )
    apps: list[AppConfig] = Field(default_factory=list, description="What to decide from the tracks.")
    sinks: list[SinkConfig] = Field(default_factory=lambda: _stdout(), description="Where messages go.")
    frames: bool = Field(False, description="Also send the per-frame record (detections) of every frame.")
    heartbeat_s: float | None = Field(
        30.0,
        gt=0,
        le=3600,
        description="Send a heartbeat (model, fps, drops) with the first frame and then this often, on every "
        "sink; a hub shows a sensor offline when it hears nothing for its --offline-after. null: never.",
    )
    keyring: str | None = Field(None, description="Folder of trusted .pub keys (default: the zoo key).")
    deploy: DeployConfig | None = Field(
        None, description="Take the model (and config) the hub assigns to this sensor; it verifies every package."
    )

    @model_validator(mode="after")
    def _separate_outboxes(self) -> SensorConfig:
        boxes = [s.outbox for s in self.sinks if isinstance(s, MqttSinkConfig | HttpSinkConfig | WebhookSinkConfig)]
        if len(boxes) != len(set(boxes)):
            raise ValueError("each MQTT, HTTP or webhook sink needs an outbox file of its own: two sinks share one")
        return self

    @model_validator(mode="after")
    def _evidence_apps(self) -> SensorConfig:
        names = {a.name for a in self.apps}
        unknown = [a for a in self.evidence.apps or () if a not in names]
        if unknown:
            raise ValueError(f"evidence.apps {unknown}: expected names of this sensor's apps ({sorted(names)})")
        return self

    @model_validator(mode="after")
    def _unique_app_names(self) -> SensorConfig:
        names = [a.name for a in self.apps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"app names must be unique: {dupes} used more than once")
        return self
