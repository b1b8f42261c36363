"""Crowding: an event when a zone holds too many objects, and one when it is back to few.

The zone's head count is the number of tracked objects whose anchor point is inside the
polygon on a frame. `crowded` is sent when the count has been `crowded_at` or more for
`hold_frames` consecutive frames; `crowd_clear` when it has then been `clear_at` or fewer for
`clear_frames` consecutive frames. `clear_at` below `crowded_at` is the hysteresis: a count
that wavers around one threshold does not make a stream of events, and neither does one
frame's miss or double detection. DeepStream's analytics calls this overcrowding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from ivs.apps import App, FrameContext
from ivs.apps.registry import AppBase, AppEnv, Entity, PolygonSettings, register
from ivs.events import CrowdCleared, Crowded, Event
from ivs.geometry import Anchor, anchors, inside_polygon


@dataclass
class Crowding(AppBase):
    """One polygon's head count against two thresholds (see the module docstring)."""

    name: str
    polygon: npt.NDArray[np.float32]
    crowded_at: int
    clear_at: int
    classes: set[int] | None = None
    anchor: Anchor = "bottom_center"
    hold_frames: int = 3
    clear_frames: int = 10
    crowded: bool = False
    count: int = 0
    """The head count on the last frame."""
    episodes: int = 0
    _streak: int = 0
    _since: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.clear_at < self.crowded_at:
            raise ValueError(f"crowding {self.name!r}: expected 0 <= clear_at < crowded_at")

    def update(self, ctx: FrameContext) -> list[Event]:
        det = ctx.tracked
        if self.classes is not None:
            det = det[np.isin(det.class_id, list(self.classes))]
        inside = inside_polygon(anchors(det.xyxy, self.anchor), self.polygon)
        # Heads hidden in another's box (walking together) are where that box is.
        carriers = {int(t) for t, ok in zip(det.tracker_id, inside, strict=True) if ok}
        self.count = int(inside.sum()) + sum(1 for c in ctx.hidden.values() if c in carriers)
        # Frames in a row on the far side of the threshold that would change the state.
        beyond = self.count <= self.clear_at if self.crowded else self.count >= self.crowded_at
        self._streak = self._streak + 1 if beyond else 0
        if not self.crowded and self._streak >= self.hold_frames:
            self.crowded, self._streak, self._since = True, 0, ctx.t_source
            self.episodes += 1
            return [Crowded(**ctx.event_fields(self.name), count=self.count, threshold=self.crowded_at)]
        if self.crowded and self._streak >= self.clear_frames:
            self.crowded, self._streak = False, 0
            lasted = round(ctx.t_source - self._since, 2)
            return [CrowdCleared(**ctx.event_fields(self.name), count=self.count, threshold=self.clear_at,
                                 crowded_s=lasted)]  # fmt: skip
        return []

    def state(self) -> dict[str, Any]:
        return {"crowded": self.crowded, "count": self.count, "episodes": self.episodes}

    def ha_entities(self) -> list[Entity]:
        return [Entity.binary("crowded", "crowded", self.crowded, "problem")]

    def describe(self, event: Event) -> str | None:
        if isinstance(event, Crowded):
            return f"CROWDED: {event.count} in the zone (at {event.threshold} or more)"
        if isinstance(event, CrowdCleared):
            return f"clear: {event.count} in the zone after {event.crowded_s:.1f} s crowded"
        return None

    def ha_states(self, event: Event) -> dict[str, str]:
        if isinstance(event, Crowded):
            return {"crowded": "ON"}
        if isinstance(event, CrowdCleared):
            return {"crowded": "OFF"}
        return {}


class CrowdingSettings(PolygonSettings):
    type: Literal["crowding"]
    crowded_at: int = Field(ge=1, description="Head count at or above which the zone is crowded.")
    clear_at: int | None = Field(
        None, ge=0, description="Head count at or below which it is clear again (default: crowded_at - 1)."
    )
    hold_frames: int = Field(3, ge=1, description="Consecutive frames at crowded_at or more before `crowded`.")
    clear_frames: int = Field(10, ge=1, description="Consecutive frames at clear_at or fewer before `crowd_clear`.")
    anchor: Literal["bottom_center", "center", "top_center"] = Field(
        "bottom_center", description="Point of the box judged."
    )

    @model_validator(mode="after")
    def _clear_below_crowded(self) -> CrowdingSettings:
        if self.clear_at is not None and self.clear_at >= self.crowded_at:
            raise ValueError(
                f"clear_at {self.clear_at} is not below crowded_at {self.crowded_at}: expected clear_at < crowded_at"
            )
        return self


@register(CrowdingSettings)
def _build(s: CrowdingSettings, env: AppEnv) -> App:
    polygon = np.asarray(env.scale(s.polygon, s.coords), np.float32)
    clear_at = s.crowded_at - 1 if s.clear_at is None else s.clear_at
    return Crowding(s.name, polygon, s.crowded_at, clear_at, env.class_ids(s.classes), s.anchor, s.hold_frames,
                    s.clear_frames)  # fmt: skip
