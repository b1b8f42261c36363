"""Line crossing counts: in and out, per class, one event per crossing.

A track's side of the line is judged by its anchor point (bottom centre by default). Inside
a dead band around the line a track keeps the side it had, so a person loitering on the line,
or a box that jitters across it, is counted once, when the anchor is clearly on the other
side; someone who steps onto the line and turns back is not counted at all. The band's
half-width is `hysteresis` pixels or `hysteresis_height` of the box's height, whichever is
wider: a near person is tall, and their feet move and jitter by more pixels than a far one's.
Only the segment p1-p2 counts (with `margin` pixels of slack at its ends), not the infinite
line.

A track first seen inside the dead band came into view on the line: out of a box it shared
with someone else (two people walking together are often one box until they part), or from
behind something. People do not start on a line, so it is counted once, in the direction in
which it leaves the band, as one that walked in from the other side would be.

Two people who cross together are often one box: the tracker keeps the one hidden in the
other's box (`FrameContext.hidden`). When a box crosses, each track hidden in it that was last
seen on the side the box came from is counted too, and moved to the new side, so that when the
two part later nobody is counted again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ivs.apps import App, FrameContext
from ivs.apps.registry import AppBase, AppEnv, AppSettings, Entity, Point, register
from ivs.events import Count, Event
from ivs.geometry import Anchor, along, anchors, signed_distance


@dataclass
class _TrackSide:
    side: int
    point: tuple[float, float]
    last_seen: int


@dataclass
class LineCounter(AppBase):
    """Counts tracks crossing the segment p1 -> p2.

    "in" is a crossing towards the side that p1 -> p2 turned 90 degrees clockwise on screen
    points to: for a line drawn top to bottom, in is right to left; drawn bottom to top, in
    is left to right.
    classes: class ids to count (None: all).
    hysteresis: half-width in pixels of the dead band around the line.
    hysteresis_height: the dead band's half-width as a fraction of the box's height, where that
        is wider than `hysteresis`: a near person's feet move more pixels, and jitter more, than
        a far one's.
    forget_frames: a track unseen this long is forgotten (its side too).
    directions: the directions counted ("in", "out"); a crossing the other way moves the track
        to its new side and sends nothing.
    """

    name: str
    p1: tuple[float, float]
    p2: tuple[float, float]
    classes: set[int] | None = None
    anchor: Anchor = "bottom_center"
    hysteresis: float = 6.0
    hysteresis_height: float = 0.12
    margin: float = 20.0
    forget_frames: int = 100
    directions: frozenset[str] = frozenset({"in", "out"})
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: {"in": {}, "out": {}})
    _tracks: dict[int, _TrackSide] = field(default_factory=dict)

    def update(self, ctx: FrameContext) -> list[Event]:
        det = ctx.tracked
        if self.classes is not None:
            det = det[np.isin(det.class_id, list(self.classes))]
        events: list[Event] = []
        points = anchors(det.xyxy, self.anchor)
        dist = signed_distance(points, self.p1, self.p2)
        pos = along(points, self.p1, self.p2)
        length = float(np.hypot(self.p2[0] - self.p1[0], self.p2[1] - self.p1[1]))
        slack = self.margin / max(length, 1e-9)
        band = np.maximum(self.hysteresis, self.hysteresis_height * (det.xyxy[:, 3] - det.xyxy[:, 1]))
        for i in range(len(det)):
            tid = int(det.tracker_id[i])
            point = (round(float(points[i, 0]), 1), round(float(points[i, 1]), 1))
            side = 1 if dist[i] > band[i] else -1 if dist[i] < -band[i] else 0
            on_segment = -slack <= pos[i] <= 1 + slack
            state = self._tracks.get(tid)
            if state is None:
                # First seen in the dead band: on the line, side 0 until it leaves the band,
                # which then counts (see the module docstring). Off the segment it stays unknown.
                if side != 0 or on_segment:
                    self._tracks[tid] = _TrackSide(side, point, ctx.index)
                continue
            state.last_seen = ctx.index
            if side == 0 or side == state.side:
                if side != 0:
                    state.point = point
                continue
            # The anchor is clearly on the other side now.
            if on_segment:
                class_id = int(det.class_id[i])
                events += self._count(ctx, tid, class_id, side, state.point, point)
                # Those hidden in this box (walking together) crossed with it; when they part
                # later they are on this side already and are not counted again.
                for hid in sorted(h for h, carrier in ctx.hidden.items() if carrier == tid):
                    carried = self._tracks.get(hid)
                    if carried is not None and carried.side == state.side != 0:
                        events += self._count(ctx, hid, class_id, side, carried.point, point)
                        carried.side, carried.point, carried.last_seen = side, point, ctx.index
            state.side, state.point = side, point
        for tid in [t for t, s in self._tracks.items() if ctx.index - s.last_seen > self.forget_frames]:
            del self._tracks[tid]
        return events

    def _count(
        self,
        ctx: FrameContext,
        tid: int,
        class_id: int,
        side: int,
        start: tuple[float, float],
        end: tuple[float, float],
    ) -> list[Event]:
        """The crossing's count event, or none when its direction is not counted."""
        direction = "in" if side > 0 else "out"
        if direction not in self.directions:
            return []
        label = ctx.label(class_id)
        self.counts[direction][label] = self.counts[direction].get(label, 0) + 1
        return [
            Count(
                **ctx.event_fields(self.name),
                track_id=tid,
                class_id=class_id,
                label=label,
                direction=direction,
                anchor_from=start,
                anchor_to=end,
                totals={k: dict(v) for k, v in self.counts.items()},
            )
        ]

    def state(self) -> dict[str, Any]:
        return {"in": dict(self.counts["in"]), "out": dict(self.counts["out"])}

    def ha_entities(self) -> list[Entity]:
        return [
            Entity.sensor("count_in", "count in", sum(self.counts["in"].values()), "total_increasing"),
            Entity.sensor("count_out", "count out", sum(self.counts["out"].values()), "total_increasing"),
        ]

    def ha_states(self, event: Event) -> dict[str, str]:
        if not isinstance(event, Count):
            return {}
        return {d: str(sum(event.totals.get(k, {}).values())) for d, k in (("count_in", "in"), ("count_out", "out"))}


class LineSettings(AppSettings):
    type: Literal["line"]
    p1: Point = Field(description="Start of the counting segment.")
    p2: Point = Field(description="End of the counting segment; in = crossing to the right of p1->p2.")
    classes: list[str] | None = Field(None, description="Labels to count (default: all).")
    anchor: Literal["bottom_center", "center", "top_center"] = Field(
        "bottom_center", description="Point of the box judged."
    )
    hysteresis: float = Field(6.0, ge=0, description="Dead band in pixels each side of the line.")
    hysteresis_height: float = Field(
        0.12,
        ge=0,
        le=1,
        description="Dead band as a fraction of the box's height, where wider than `hysteresis` (near people).",
    )
    directions: list[Literal["in", "out"]] = Field(
        ["in", "out"], min_length=1, description="Directions counted (e.g. [in]: entries only)."
    )

    def class_names(self) -> list[str] | None:
        return self.classes

    def points(self) -> list[tuple[str, int | None, Point]]:
        return [("p1", None, self.p1), ("p2", None, self.p2)]

    def problems(self, has_classifier: bool) -> list[tuple[str, str]]:
        return [("p2", "p1 and p2 are the same point: expected a line of some length")] if self.p1 == self.p2 else []


@register(LineSettings)
def _build(s: LineSettings, env: AppEnv) -> App:
    p1, p2 = env.scale([s.p1, s.p2], s.coords)
    return LineCounter(
        s.name, p1, p2, env.class_ids(s.classes), s.anchor, s.hysteresis, s.hysteresis_height,
        directions=frozenset(s.directions),
    )  # fmt: skip
