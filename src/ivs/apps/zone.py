"""Polygon zones: enter and leave events, occupancy, dwell time, and loitering.

A track is in the zone when its anchor point is inside the polygon for `enter_frames`
consecutive frames, and leaves it when outside (or not seen) for `leave_frames` consecutive
frames: a box flickering at the edge does not make a stream of enter/leave events. Dwell is
measured on the source's clock from the first frame inside to the last.

A member hidden in another track's box (`FrameContext.hidden`: two people walking together,
one box for both) is taken to be where that box is: it stays a member while hidden, and when
the two part inside nobody enters again. A track that is hidden before it became a member
enters when it is seen itself: whether it was inside the carrier's box when that box came in
is a guess, and a pair hovering at the edge made such guesses enter and leave on one runtime
and not on the other (vtest.avi, OpenVINO against onnxruntime).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from ivs.apps import App, FrameContext
from ivs.apps.registry import AppBase, AppEnv, Entity, PolygonSettings, register
from ivs.detections import box_iou
from ivs.events import Event, Loiter, ZoneEnter, ZoneLeave
from ivs.geometry import Anchor, anchors, inside_polygon


@dataclass
class _Visit:
    label: str
    first_inside: float
    last_inside: float
    inside_streak: int = 0
    outside_streak: int = 0
    member: bool = False
    loitered: bool = False
    refused: bool = False
    """Came in from a side `enter_from` does not list (or appeared inside): never a member."""
    stationary: bool = False
    """Stationary when last seen (`ivs.track.stationary`): held through a flicker."""
    settled: npt.NDArray[np.float32] | None = None
    """Its box when it became stationary: a new track there takes the held visit over, and is
    stationary at once (the tracker's new id has no history yet)."""


Side = Literal["left", "right", "top", "bottom"]


def side_entered_from(outside: tuple[float, float], inside: tuple[float, float]) -> Side:
    """Which side an object came in from, by its way from its last point outside to its first
    inside: from the left is moving right (on screen), from the top is moving down."""
    dx, dy = inside[0] - outside[0], inside[1] - outside[1]
    if abs(dx) >= abs(dy):
        return "left" if dx > 0 else "right"
    return "top" if dy > 0 else "bottom"


@dataclass
class Zone(AppBase):
    """One polygon zone.

    classes: class ids that count (None: all).
    loiter_s: send one `loiter` event when a visit lasts this long (None: never).
    enter_from: the sides an entry may come from (None: any); one from another side, or an
        object that appears inside, never enters (no event, not in the occupancy).
    stationary: "include" (default), "ignore" (a stationary object does not enter: a parked
        car is not an arrival; a member that stops stays a member) or "only" (only stationary
        objects enter: a car parked where it must not be, with `loiter_s` for how long).
    hold_s: a stationary member unseen (its detection flickers, the tracker loses it) stays a
        member this long, and a new track whose box overlaps its last box takes its visit over:
        a parked object does not leave and enter again.
    """

    name: str
    polygon: npt.NDArray[np.float32]
    classes: set[int] | None = None
    anchor: Anchor = "bottom_center"
    enter_frames: int = 2
    leave_frames: int = 5
    loiter_s: float | None = None
    enter_from: frozenset[str] | None = None
    stationary: Literal["include", "ignore", "only"] = "include"
    hold_s: float = 30.0
    entered: int = 0
    _visits: dict[int, _Visit] = field(default_factory=dict)
    _outside: dict[int, tuple[tuple[float, float], int]] = field(default_factory=dict)
    """Each track's last point outside, and the frame: where an entry came from."""

    @property
    def occupancy(self) -> int:
        return sum(1 for v in self._visits.values() if v.member)

    def present(self, ctx: FrameContext) -> int:
        """Objects whose anchor is inside on this very frame (no debouncing)."""
        det = self._select(ctx)
        return int(inside_polygon(anchors(det.xyxy, self.anchor), self.polygon).sum())

    def _select(self, ctx: FrameContext) -> Any:
        det = ctx.tracked
        if self.classes is not None:
            det = det[np.isin(det.class_id, list(self.classes))]
        return det

    def update(self, ctx: FrameContext) -> list[Event]:
        det = self._select(ctx)
        still = det.data.get("stationary")
        row_of = {int(t): i for i, t in enumerate(det.tracker_id)}
        self._take_over_held(det, row_of)
        judged = list(row_of.items())  # (track id, the det row whose anchor says where it is)
        # A member hidden in another's box (walking together) is where that box is: it stays
        # while hidden, and is not counted again when the two part. One not yet a member
        # enters when it is seen itself (see the module docstring).
        for hid, carrier in sorted(ctx.hidden.items()):
            visit = self._visits.get(hid)
            if carrier in row_of and hid not in row_of and visit is not None and visit.member:
                judged.append((hid, row_of[carrier]))
        points = anchors(det.xyxy, self.anchor)
        inside = inside_polygon(points, self.polygon)
        events: list[Event] = []
        seen: set[int] = set()
        for tid, i in judged:
            seen.add(tid)
            visit = self._visits.get(tid)
            if not inside[i]:
                if tid in row_of and row_of[tid] == i:  # its own box, not a carrier's
                    self._outside[tid] = ((float(points[i, 0]), float(points[i, 1])), ctx.index)
                if visit is not None:
                    visit.inside_streak = 0
                    visit.outside_streak += 1
                continue
            if visit is None:
                visit = self._visits[tid] = _Visit(ctx.label(int(det.class_id[i])), ctx.t_source, ctx.t_source)
            visit.inside_streak += 1
            visit.outside_streak = 0
            visit.last_inside = ctx.t_source
            if row_of.get(tid) == i:  # its own box (not a carrier's)
                self._note_stationary(visit, det.xyxy[i : i + 1], still is not None and bool(still[i]))
            if not visit.member and self.stationary != "include" and visit.stationary != (self.stationary == "only"):
                continue  # "ignore": a stationary object does not enter; "only": a moving one does not
            if not visit.member and not visit.refused and visit.inside_streak >= self.enter_frames:
                if self.enter_from is not None:
                    came = self._outside.get(tid)
                    here = (float(points[i, 0]), float(points[i, 1]))
                    if came is None or side_entered_from(came[0], here) not in self.enter_from:
                        visit.refused = True
                        continue
                visit.member = True
                self.entered += 1
                point = (round(float(points[i, 0]), 1), round(float(points[i, 1]), 1))
                events.append(
                    ZoneEnter(
                        **ctx.event_fields(self.name),
                        track_id=tid,
                        label=visit.label,
                        anchor=point,
                        occupancy=self.occupancy,
                    )
                )
            dwell = visit.last_inside - visit.first_inside
            if visit.member and not visit.loitered and self.loiter_s is not None and dwell >= self.loiter_s:
                visit.loitered = True
                events.append(
                    Loiter(
                        **ctx.event_fields(self.name),
                        track_id=tid,
                        label=visit.label,
                        dwell_s=round(dwell, 2),
                    )
                )
        for tid in [t for t, (_, at) in self._outside.items() if ctx.index - at > 300]:
            del self._outside[tid]  # gone long ago
        for tid, visit in list(self._visits.items()):
            if tid not in seen:
                visit.inside_streak = 0
                if visit.member and visit.stationary and ctx.t_source - visit.last_inside <= self.hold_s:
                    continue  # held: a parked object's detection flickers
                visit.outside_streak += 1
            if visit.outside_streak >= self.leave_frames:
                del self._visits[tid]
                if visit.member:
                    events.append(
                        ZoneLeave(
                            **ctx.event_fields(self.name),
                            track_id=tid,
                            label=visit.label,
                            dwell_s=round(visit.last_inside - visit.first_inside, 2),
                            occupancy=self.occupancy,
                        )
                    )
        return events

    @staticmethod
    def _note_stationary(visit: _Visit, box: npt.NDArray[np.float32], flagged: bool) -> None:
        if visit.settled is not None and box_iou(box, visit.settled)[0, 0] >= 0.5:
            visit.stationary = True  # still where it settled (a new track id is not flagged yet)
        elif flagged:
            visit.stationary, visit.settled = True, box.copy()
        else:
            visit.stationary, visit.settled = False, None

    def _take_over_held(self, det: Any, row_of: dict[int, int]) -> None:
        """A new track over a held stationary member's last box is that member, found again."""
        held = [t for t, v in self._visits.items() if v.member and v.settled is not None and t not in row_of]
        if not held:
            return
        for tid, i in row_of.items():
            if tid in self._visits or not held:
                continue
            overlap = box_iou(det.xyxy[i : i + 1], np.concatenate([self._visits[h].settled for h in held]))[0]
            k = int(np.argmax(overlap))
            if overlap[k] >= 0.3:
                self._visits[tid] = self._visits.pop(held.pop(k))

    def dwell(self) -> dict[int, float]:
        """Current dwell time in seconds of each track in the zone."""
        return {t: round(v.last_inside - v.first_inside, 2) for t, v in self._visits.items() if v.member}

    def state(self) -> dict[str, Any]:
        return {"occupancy": self.occupancy, "entered": self.entered, "dwell_s": self.dwell()}

    def ha_entities(self) -> list[Entity]:
        n = self.occupancy
        return [
            Entity.sensor("occupancy", "occupancy", n, "measurement"),
            Entity.binary("occupied", "occupied", n > 0, "occupancy"),
        ]

    def ha_states(self, event: Event) -> dict[str, str]:
        if not isinstance(event, ZoneEnter | ZoneLeave):
            return {}
        return {"occupancy": str(event.occupancy), "occupied": "ON" if event.occupancy > 0 else "OFF"}


class ZoneSettings(PolygonSettings):
    type: Literal["zone"]
    anchor: Literal["bottom_center", "center", "top_center"] = Field(
        "bottom_center", description="Point of the box judged."
    )
    enter_frames: int = Field(2, ge=1, description="Consecutive frames inside before `zone_enter`.")
    leave_frames: int = Field(5, ge=1, description="Consecutive frames outside before `zone_leave`.")
    loiter_s: float | None = Field(None, gt=0, description="Send `loiter` once a visit lasts this long (seconds).")
    stationary: Literal["include", "ignore", "only"] = Field(
        "include", description="Stationary objects: enter like any (include), never enter (ignore), or alone (only)."
    )
    hold_s: float = Field(30.0, ge=0, description="A stationary member unseen stays a member this long (seconds).")
    enter_from: list[Side] | None = Field(
        None, min_length=1, description="Sides an entry may come from (left, right, top, bottom; default any)."
    )


@register(ZoneSettings)
def _build(s: ZoneSettings, env: AppEnv) -> App:
    polygon = np.asarray(env.scale(s.polygon, s.coords), np.float32)
    return Zone(
        s.name, polygon, env.class_ids(s.classes), s.anchor, s.enter_frames, s.leave_frames, s.loiter_s,
        frozenset(s.enter_from) if s.enter_from else None, s.stationary, s.hold_s,
    )  # fmt: skip
