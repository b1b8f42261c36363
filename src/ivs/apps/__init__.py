"""Apps: small stateful objects that turn tracked detections into events, on change.

Each app gets a `FrameContext` for every processed frame and returns the events that frame
caused (usually none). Apps are configured in the sensor's YAML (see `ivs.config`) and
documented in docs/apps.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ivs.detections import Detections
from ivs.events import Event


@dataclass(frozen=True)
class FrameContext:
    """What an app may know about one frame.

    detections: everything the model found (full-frame pixels), before tracking: what a
        safety stop must react to without waiting for a track to be confirmed.
    tracked: the detections that belong to confirmed tracks, with `tracker_id` set.
    hidden: tracks not seen this frame because they are hidden in another track's box (two
        people walking together, one box for both): hidden id -> the id of the box's track.
    t_source: the source's clock in seconds (video pts; else monotonic capture time), which
        dwell times and periods use, so offline runs give the same answers as live ones.
    """

    index: int
    time: float
    t_capture_ns: int
    t_source: float
    width: int
    height: int
    labels: list[str]
    detections: Detections
    tracked: Detections
    hidden: Mapping[int, int] = field(default_factory=dict)

    def event_fields(self, app: str) -> dict[str, Any]:
        return {
            "frame": self.index,
            "time": round(self.time, 6),
            "t_capture_ns": self.t_capture_ns,
            "t_source": round(self.t_source, 4),
            "app": app,
        }

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else str(class_id)


class App(Protocol):
    """An app may set a class attribute `uses_tracks = False` when it reads only
    `ctx.detections`: a sensor whose apps all do runs no tracker (see `uses_tracks`)."""

    name: str

    def update(self, ctx: FrameContext) -> list[Event]: ...

    def state(self) -> dict[str, Any]:
        """A summary for the run summary and the sensor's state topic."""
        ...

    def finish(self, ctx: FrameContext | None) -> list[Event]:
        """Events owed at the end of a run (e.g. the last heatmap)."""
        ...


def uses_tracks(apps: Sequence[object]) -> bool:
    """Whether any of `apps` reads `ctx.tracked` (an app says it does not with a class
    attribute `uses_tracks = False`). The tracker costs about a millisecond a frame, which a
    safety stop, reacting to raw detections, should not wait for."""
    return any(getattr(app, "uses_tracks", True) for app in apps)
