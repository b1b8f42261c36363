"""Safety stop: a person in the stop zone stops the machine, on the first frame they are.

It reacts to the raw detections, not to confirmed tracks: a tracker waits a frame or two
before it believes in a new object, and a co-bot must not. `clear` comes only after
`clear_frames` consecutive frames with nobody in the zone. Every event carries the capture
time of its frame, so the latency from capture to the stop reaching the machine can be
measured end to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from ivs.apps import App, FrameContext
from ivs.apps.registry import AppBase, AppEnv, Entity, Point, PolygonSettings, register
from ivs.events import Clear, Event, Stop
from ivs.geometry import anchors, inside_polygon


@dataclass
class SafetyZone(AppBase):
    """trigger: "overlap" (any part of the box in the zone: the safe default) or "anchor"
    (the box's bottom centre in the zone: where the person stands).
    min_confidence: detections below it are ignored (the model's own threshold applies first).
    """

    uses_tracks: ClassVar[bool] = False  # raw detections: no wait for a track to be confirmed
    name: str
    polygon: npt.NDArray[np.float32]
    classes: set[int] | None = None
    clear_frames: int = 10
    trigger: Literal["overlap", "anchor"] = "overlap"
    min_confidence: float = 0.0
    stopped: bool = False
    stops: int = 0
    _empty: int = 0
    _stopped_at: float = 0.0

    def _inside(self, xyxy: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
        if self.trigger == "anchor":
            return inside_polygon(anchors(xyxy, "bottom_center"), self.polygon)
        # Points along the box outline (5 per edge) and its centre, and the polygon's own
        # corners inside the box: catches every overlap but a sliver between samples.
        t = np.linspace(0, 1, 5, dtype=np.float32)
        x1, y1, x2, y2 = (xyxy[:, k : k + 1] for k in range(4))
        xs = np.concatenate(
            [x1 + (x2 - x1) * t, x1 + (x2 - x1) * t, np.repeat(x1, 5, 1), np.repeat(x2, 5, 1), (x1 + x2) / 2],
            axis=1,
        )
        ys = np.concatenate(
            [np.repeat(y1, 5, 1), np.repeat(y2, 5, 1), y1 + (y2 - y1) * t, y1 + (y2 - y1) * t, (y1 + y2) / 2],
            axis=1,
        )
        n, k = xs.shape
        pts = np.stack([xs.ravel(), ys.ravel()], axis=1)
        hit = inside_polygon(pts, self.polygon).reshape(n, k).any(axis=1)
        px, py = self.polygon[:, 0][None, :], self.polygon[:, 1][None, :]
        corner_in_box = ((px >= x1) & (px <= x2) & (py >= y1) & (py <= y2)).any(axis=1)
        return np.asarray(hit | corner_in_box)

    def update(self, ctx: FrameContext) -> list[Event]:
        det = ctx.detections
        keep = det.confidence >= self.min_confidence
        if self.classes is not None:
            keep &= np.isin(det.class_id, list(self.classes))
        det = det[keep]
        inside = self._inside(det.xyxy) if len(det) else np.zeros(0, bool)
        if inside.any():
            self._empty = 0
            if not self.stopped:
                self.stopped, self._stopped_at = True, ctx.t_source
                self.stops += 1
                hits = det[inside]
                return [
                    Stop(
                        **ctx.event_fields(self.name),
                        objects=len(hits),
                        labels=[ctx.label(int(c)) for c in hits.class_id],
                        boxes=[tuple(round(float(v), 1) for v in b) for b in hits.xyxy],  # type: ignore[misc]
                    )
                ]
            return []
        if self.stopped:
            self._empty += 1
            if self._empty >= self.clear_frames:
                self.stopped = False
                return [
                    Clear(
                        **ctx.event_fields(self.name),
                        empty_frames=self._empty,
                        stopped_s=round(ctx.t_source - self._stopped_at, 3),
                    )
                ]
        return []

    def state(self) -> dict[str, Any]:
        return {"stopped": self.stopped, "stops": self.stops}

    def ha_entities(self) -> list[Entity]:
        return [Entity.binary("stop", "stop", self.stopped, "safety")]

    def ha_states(self, event: Event) -> dict[str, str]:
        if not isinstance(event, Stop | Clear):
            return {}
        return {"stop": "ON" if isinstance(event, Stop) else "OFF"}


class SafetySettings(PolygonSettings):
    type: Literal["safety"]
    polygon: list[Point] = Field(description="The stop zone's corners, in order.")
    classes: list[str] | None = Field(["person"], description="Labels that stop the machine.")
    clear_frames: int = Field(10, ge=1, description="Consecutive empty frames before `clear`.")
    trigger: Literal["overlap", "anchor"] = Field("overlap", description="Any part of the box, or where it stands.")
    min_confidence: float = Field(0.0, ge=0, le=1, description="Ignore detections below this.")


@register(SafetySettings)
def _build(s: SafetySettings, env: AppEnv) -> App:
    polygon = np.asarray(env.scale(s.polygon, s.coords), np.float32)
    return SafetyZone(s.name, polygon, env.class_ids(s.classes), s.clear_frames, s.trigger, s.min_confidence)
