"""The apps' exact semantics on hand-built tracks (docs/apps.md)."""

from __future__ import annotations

import numpy as np
import pytest

from ivs.apps import FrameContext
from ivs.apps.heatmap import HeatmapGrid
from ivs.apps.line import LineCounter
from ivs.apps.mask import MaskCheck
from ivs.apps.safety import SafetyZone
from ivs.apps.zone import Zone
from ivs.detections import Detections
from ivs.events import Clear, Count, Heatmap, Loiter, MaskPing, Stop, ZoneEnter, ZoneLeave

LABELS = ["person", "car"]


def ctx(i: int, boxes=(), ids=None, classes=None, conf=None, data=None, fps: float = 10.0) -> FrameContext:
    xyxy = np.array(boxes, np.float32).reshape(-1, 4)
    n = len(xyxy)
    det = Detections(
        xyxy=xyxy,
        confidence=conf if conf is not None else [0.9] * n,
        class_id=classes if classes is not None else [0] * n,
        tracker_id=ids if ids is not None else list(range(1, n + 1)),
        data=data or {},
    )
    return FrameContext(i, 1000.0 + i / fps, 10**9 + i, i / fps, 640, 480, LABELS, det, det)


def feet_at(x: float, y: float, w: float = 30, h: float = 80) -> tuple[float, float, float, float]:
    """A box whose bottom centre (the default anchor) is at x, y."""
    return (x - w / 2, y - h, x + w / 2, y)


def walk(app, xs, y=300.0, tid=1, cls=0):
    events = []
    for i, x in enumerate(xs):
        events += app.update(ctx(i, [feet_at(x, y)], ids=[tid], classes=[cls]))
    return events


# A vertical line drawn bottom to top: "in" is left to right.
LINE = ((320.0, 400.0), (320.0, 100.0))


def test_line_counts_a_crossing_once_with_direction_and_reason():
    app = LineCounter("door", *LINE)
    events = walk(app, range(250, 400, 10))
    assert len(events) == 1
    e = events[0]
    assert isinstance(e, Count) and e.direction == "in" and e.track_id == 1 and e.label == "person"
    assert e.anchor_from[0] < 320 < e.anchor_to[0]  # the explanation: where it was, where it is
    assert e.totals == {"in": {"person": 1}, "out": {}}


def test_line_out_is_the_other_way_and_back_and_forth_counts_each_crossing():
    app = LineCounter("door", *LINE)
    events = walk(app, [*range(400, 250, -10), *range(250, 400, 10)])
    assert [e.direction for e in events] == ["out", "in"]
    assert app.state() == {"in": {"person": 1}, "out": {"person": 1}}


def test_two_people_crossing_as_one_box_count_twice_and_their_parting_not_again():
    """Track 2 walks beside track 1, is hidden in 1's box (the tracker says so) while the box
    crosses, and comes out on the far side: two crossings, and none when they part."""
    import dataclasses

    app = LineCounter("door", *LINE)
    events = []
    for i, x in enumerate(range(250, 300, 10)):  # side by side, left of the line
        events += app.update(ctx(i, [feet_at(x, 300), feet_at(x + 12, 300)], ids=[1, 2]))
    for i, x in enumerate(range(300, 360, 10), start=5):  # one box; 2 hidden in it
        events += app.update(dataclasses.replace(ctx(i, [feet_at(x + 6, 300)], ids=[1]), hidden={2: 1}))
    for i, x in enumerate(range(360, 400, 10), start=11):  # they part, right of the line
        events += app.update(ctx(i, [feet_at(x, 300), feet_at(x + 14, 300)], ids=[1, 2]))
    assert [(e.track_id, e.direction) for e in events] == [(1, "in"), (2, "in")]
    assert app.state() == {"in": {"person": 2}, "out": {}}


def test_a_hidden_track_last_seen_on_the_far_side_is_not_counted_with_the_box():
    import dataclasses

    app = LineCounter("door", *LINE)
    app.update(ctx(0, [feet_at(250, 300), feet_at(400, 300)], ids=[1, 2]))  # 2 is already in
    events = []
    for i, x in enumerate(range(260, 360, 10), start=1):
        events += app.update(dataclasses.replace(ctx(i, [feet_at(x, 300)], ids=[1]), hidden={2: 1}))
    assert [(e.track_id, e.direction) for e in events] == [(1, "in")]


def test_a_zone_member_hidden_in_anothers_box_stays_and_their_parting_enters_nobody():
    import dataclasses

    zone = Zone("plaza", np.array([[300, 0], [639, 0], [639, 479], [300, 479]], np.float32), enter_frames=2,
                leave_frames=3)  # fmt: skip
    events = []
    for i, x in enumerate(range(310, 350, 10)):  # side by side, inside: two entries
        events += zone.update(ctx(i, [feet_at(x, 300), feet_at(x + 12, 300)], ids=[1, 2]))
    for i, x in enumerate(range(350, 450, 10), start=4):  # one box for ten frames; 2 hidden in it
        events += zone.update(dataclasses.replace(ctx(i, [feet_at(x + 6, 300)], ids=[1]), hidden={2: 1}))
    assert zone.occupancy == 2  # no leave while hidden
    for i, x in enumerate(range(450, 490, 10), start=14):  # they part inside: nothing new
        events += zone.update(ctx(i, [feet_at(x, 300), feet_at(x + 20, 300)], ids=[1, 2]))
    assert [(type(e).__name__, e.track_id) for e in events] == [("ZoneEnter", 1), ("ZoneEnter", 2)]
    # Without the tracker's word, the hidden one leaves after leave_frames and enters again.
    zone = Zone("plaza", np.array([[300, 0], [639, 0], [639, 479], [300, 479]], np.float32), enter_frames=2,
                leave_frames=3)  # fmt: skip
    events = []
    for i, x in enumerate(range(310, 350, 10)):
        events += zone.update(ctx(i, [feet_at(x, 300), feet_at(x + 12, 300)], ids=[1, 2]))
    for i, x in enumerate(range(350, 450, 10), start=4):
        events += zone.update(ctx(i, [feet_at(x + 6, 300)], ids=[1]))
    for i, x in enumerate(range(450, 490, 10), start=14):
        events += zone.update(ctx(i, [feet_at(x, 300), feet_at(x + 20, 300)], ids=[1, 2]))
    assert [type(e).__name__ for e in events].count("ZoneEnter") == 3


def test_loitering_on_the_line_is_counted_once():
    app = LineCounter("door", *LINE, hysteresis=6.0)
    # Arrive from the left, then jitter around the line (within the dead band) for 50 frames,
    # with one step just over it, then walk off to the right.
    xs = [280, 300, 315, *([318, 323, 317, 324, 319] * 10), 340, 360]
    events = walk(app, xs)
    assert [e.direction for e in events] == ["in"]


def test_a_tall_person_stepping_onto_the_line_and_back_is_not_counted():
    """The dead band grows with the box (hysteresis_height): 12 px past the line is a step
    onto it for someone 200 px tall (band 24 px), a crossing for someone 80 px tall (band 9.6)."""

    def turn_back(h: float) -> list:
        app = LineCounter("door", *LINE, hysteresis=6.0, hysteresis_height=0.12)
        xs = [280, 295, 310, 325, 332, 332, 325, 310, 295, 280]
        out = []
        for i, x in enumerate(xs):
            out += app.update(ctx(i, [feet_at(x, 300, h=h)], ids=[1]))
        return out

    assert turn_back(200) == []
    assert [e.direction for e in turn_back(80)] == ["in", "out"]


def test_crossing_beyond_the_segment_ends_does_not_count():
    app = LineCounter("door", *LINE)
    assert walk(app, range(250, 400, 10), y=470) == []  # below p1 (y=400) + margin


def test_line_counts_only_its_classes():
    app = LineCounter("door", *LINE, classes={0})
    assert walk(app, range(250, 400, 10), cls=1) == []
    assert len(walk(app, range(250, 400, 10), tid=2, cls=0)) == 1


SQUARE = np.array([[100, 100], [300, 100], [300, 300], [100, 300]], np.float32)


def test_zone_enter_leave_dwell_and_occupancy():
    zone = Zone("z", SQUARE, enter_frames=2, leave_frames=3)
    events = []
    for i in range(30):
        boxes, ids = [], []
        if 5 <= i < 20:
            boxes.append(feet_at(200, 200))
            ids.append(7)
        events += zone.update(ctx(i, boxes, ids=ids))
        if i == 6:
            assert zone.occupancy == 1
    assert [type(e) for e in events] == [ZoneEnter, ZoneLeave]
    enter, leave = events
    assert enter.frame == 6 and enter.occupancy == 1  # second consecutive frame inside
    assert leave.frame == 22 and leave.occupancy == 0  # third frame gone
    assert leave.dwell_s == pytest.approx(1.4)  # frames 5..19 at 10 fps
    assert zone.occupancy == 0


def test_zone_flicker_at_the_edge_does_not_spam():
    zone = Zone("z", SQUARE, enter_frames=2, leave_frames=3)
    events = []
    for i in range(40):
        x = 302 if i % 2 else 298  # the anchor alternates just outside / just inside
        events += zone.update(ctx(i, [feet_at(x, 200)], ids=[1]))
    assert events == []


def test_loiter_once_per_visit():
    zone = Zone("z", SQUARE, loiter_s=2.0)
    events = []
    for i in range(60):
        events += zone.update(ctx(i, [feet_at(200, 200)], ids=[3]))
    loiters = [e for e in events if isinstance(e, Loiter)]
    assert len(loiters) == 1 and loiters[0].frame == 20 and loiters[0].dwell_s == pytest.approx(2.0)


def test_safety_stops_on_the_first_frame_and_clears_after_n_empty():
    app = SafetyZone("cell", SQUARE, classes={0}, clear_frames=4)
    events = []
    for i in range(30):
        boxes = [feet_at(200, 250)] if 10 <= i < 15 else [feet_at(500, 250)]
        events += [(i, e) for e in app.update(ctx(i, boxes))]
    assert [(i, type(e)) for i, e in events] == [(10, Stop), (18, Clear)]
    stop = events[0][1]
    assert stop.t_capture_ns == 10**9 + 10 and stop.labels == ["person"]
    assert events[1][1].empty_frames == 4


def test_safety_overlap_vs_anchor_and_untracked_detections():
    # An arm reaching in: the box overlaps the zone, the feet stand outside.
    reach = [(290, 150, 360, 330)]
    assert len(SafetyZone("cell", SQUARE, trigger="overlap").update(ctx(0, reach, ids=[-1]))) == 1
    assert SafetyZone("cell", SQUARE, trigger="anchor").update(ctx(0, reach, ids=[-1])) == []


def test_mask_one_ping_per_person_not_per_frame():
    app = MaskCheck("masks", min_frames=3, min_share=0.7)
    events = []
    for i in range(20):
        data = {"mask.class_id": np.array([0, 1]), "mask.confidence": np.array([0.9, 0.9], np.float32)}
        events += app.update(ctx(i, [(0, 0, 50, 50), (100, 0, 150, 50)], ids=[1, 2], data=data))
    assert [(e.track_id, e.mask) for e in events] == [(1, True), (2, False)]
    assert all(isinstance(e, MaskPing) and e.frames == 3 for e in events)
    assert app.totals == {"mask": 1, "no_mask": 1}


def test_mask_needs_the_second_stage():
    with pytest.raises(ValueError, match="expected the 'mask' classifier as the second stage"):
        MaskCheck("masks").update(ctx(0, [(0, 0, 5, 5)]))


def test_heatmap_counts_anchor_cells_and_sends_every_period():
    app = HeatmapGrid("floor", cols=4, rows=3, period_s=1.0)
    events = []
    for i in range(25):
        events += app.update(ctx(i, [feet_at(100, 100)], ids=[1]))
    events += app.finish(None)
    assert [type(e) for e in events] == [Heatmap, Heatmap, Heatmap]
    grid = np.array(events[0].counts).reshape(3, 4)
    assert grid[0, 0] == 11 and grid.sum() == 11  # frames 0..10, all in cell (0, 0)
    assert sum(sum(e.counts) for e in events) == 25
