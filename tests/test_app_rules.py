"""The rules that cut false alerts: a line that counts one direction, a zone entered only from
one side, stationary objects, and apps active on a schedule."""

from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo

import numpy as np

from ivs.apps import FrameContext
from ivs.apps.line import LineCounter
from ivs.apps.safety import SafetyZone
from ivs.apps.schedule import Schedule, Scheduled, ScheduleSettings
from ivs.apps.zone import Zone, side_entered_from
from ivs.detections import Detections
from ivs.events import Loiter, ScheduleChange, ZoneEnter, ZoneLeave
from ivs.track import ByteTracker
from ivs.track.stationary import Stationary
from tests.test_apps import LINE, SQUARE, ctx, feet_at, walk
from tests.test_config import GOOD, check


def test_a_line_counts_only_its_directions_and_keeps_the_side_of_the_others():
    entries = LineCounter("door", *LINE, directions=frozenset({"in"}))
    events = walk(entries, [*range(400, 250, -10), *range(250, 400, 10), *range(400, 250, -10)])
    assert [e.direction for e in events] == ["in"]  # out, in, out: only the entry
    assert entries.state() == {"in": {"person": 1}, "out": {}}
    exits = LineCounter("door", *LINE, directions=frozenset({"out"}))
    assert [e.direction for e in walk(exits, [*range(400, 250, -10), *range(250, 400, 10)])] == ["out"]


def test_the_side_an_entry_came_from():
    assert side_entered_from((90, 200), (110, 205)) == "left"
    assert side_entered_from((310, 200), (290, 190)) == "right"
    assert side_entered_from((200, 90), (205, 110)) == "top"
    assert side_entered_from((200, 310), (195, 290)) == "bottom"


def test_a_zone_entered_only_from_the_left_ignores_the_other_ways_in():
    # SQUARE is 100..300 on both axes
    def visit(zone: Zone, path: list[tuple[float, float]], tid: int, start: int) -> list:
        events = []
        for k, (x, y) in enumerate(path):
            events += zone.update(ctx(start + k, [feet_at(x, y)], ids=[tid]))
        for k in range(10):  # gone: it leaves
            events += zone.update(ctx(start + len(path) + k))
        return events

    zone = Zone("shelf", SQUARE, enter_frames=2, leave_frames=3, enter_from=frozenset({"left"}))
    from_left = visit(zone, [(60 + 20 * k, 200) for k in range(8)], tid=1, start=0)
    from_right = visit(zone, [(340 - 20 * k, 200) for k in range(8)], tid=2, start=100)
    from_top = visit(zone, [(200, 60 + 20 * k) for k in range(8)], tid=3, start=200)
    appeared_inside = visit(zone, [(200, 200)] * 8, tid=4, start=300)
    assert [type(e).__name__ for e in from_left] == ["ZoneEnter", "ZoneLeave"]
    assert from_right == from_top == appeared_inside == []
    assert zone.entered == 1
    # the one from the right was inside meanwhile, and never counted in the occupancy
    anyway = Zone("shelf", SQUARE, enter_frames=2, leave_frames=3)
    assert type(visit(anyway, [(340 - 20 * k, 200) for k in range(8)], tid=2, start=0)[0]) is ZoneEnter


def still_box(x: float, y: float, jitter: tuple[float, float] = (0.0, 0.0)) -> list[float]:
    bx, by = x + jitter[0], y + jitter[1]
    return [bx - 15, by - 80, bx + 15, by]


def test_stationary_after_its_seconds_and_not_once_it_moves_off():
    st = Stationary(max_px=10, seconds=5)
    flags = []
    for i in range(100):  # 10 fps: still for 6 s, then walks off
        x = 200 + (0 if i < 60 else (i - 60) * 5)
        d = Detections(
            xyxy=np.asarray([still_box(x, 300, (i % 3 - 1, 0)), still_box(50 + 8 * i, 100)], np.float32),
            confidence=np.asarray([0.9, 0.9], np.float32),
            class_id=np.zeros(2, np.int64),
            tracker_id=np.asarray([1, 2]),
        )
        flags.append(st.update(d, i / 10).data["stationary"].tolist())
    person, walker = [f[0] for f in flags], [f[1] for f in flags]
    assert person.index(True) == 50  # 5 s of samples within 10 px
    assert all(person[50:62]) and not any(person[63:])  # 10 px from where it settled: moving again
    assert not any(walker)


def scene(frames: int, seed: int = 3) -> list[tuple[list[list[float]], list[float]]]:
    """A generated scene at 10 fps: a person walks into the zone and stands still there, their
    detection flickering (gaps of 1 to 45 frames, past the tracker's 30-frame memory), the box
    jittering by 2 px; another walks through the zone."""
    rng = np.random.default_rng(seed)
    out = []
    gap = 0
    for i in range(frames):
        boxes: list[list[float]] = []
        if i < 30:
            boxes.append(still_box(60 + i * 5, 200))  # walking in from the left
        else:
            if gap == 0 and rng.random() < 0.04:
                gap = int(rng.integers(1, 46))
            if gap > 0:
                gap -= 1
            else:
                boxes.append(still_box(210, 200, tuple(rng.uniform(-2, 2, 2))))
        if 200 <= i < 260:
            boxes.append(still_box(100 + (i - 200) * 4, 150))  # a walker passing through
        out.append((boxes, [0.9] * len(boxes)))
    return out


def run_scene(zone: Zone, frames: int) -> list:
    tracker, st = ByteTracker(), Stationary(max_px=10, seconds=3)
    events = []
    for i, (boxes, scores) in enumerate(scene(frames)):
        det = Detections(
            xyxy=np.asarray(boxes, np.float32).reshape(-1, 4),
            confidence=np.asarray(scores, np.float32),
            class_id=np.zeros(len(boxes), np.int64),
        )
        det = st.update(tracker.update(det), i / 10)
        tracked = det.tracked()
        events += zone.update(FrameContext(i, 1000 + i / 10, i, i / 10, 640, 480, ["person"], det, tracked))
    return events


def test_a_person_standing_in_a_zone_stays_one_entry_while_their_detection_flickers():
    frames = 1200  # two minutes
    gaps = [len(b) == 0 for b, _ in scene(frames)[30:]]
    assert sum(gaps) > 100  # the scene does flicker, past the tracker's memory too
    held = run_scene(Zone("counter", SQUARE, enter_frames=2, leave_frames=5, hold_s=30), frames)
    enters = [e for e in held if isinstance(e, ZoneEnter)]
    assert len(enters) == 2  # the person once, the walker once
    assert [e.frame for e in held if isinstance(e, ZoneLeave)] and len(
        [e for e in held if isinstance(e, ZoneLeave)]
    ) == 1
    # without holding, the same scene leaves and enters again at the long gaps
    plain = run_scene(Zone("counter", SQUARE, enter_frames=2, leave_frames=5, hold_s=0), frames)
    assert len([e for e in plain if isinstance(e, ZoneEnter)]) > 3


def test_a_zone_can_ignore_stationary_objects_or_count_only_them():
    frames = 400
    ignore = run_scene(Zone("aisle", SQUARE, stationary="ignore"), frames)
    only = run_scene(Zone("aisle", SQUARE, stationary="only", loiter_s=5), frames)
    # the person walks in (moving: enters); "ignore" sees them, as they were moving when they came
    assert len([e for e in ignore if isinstance(e, ZoneEnter)]) == 2
    # "only": the person enters once they have stood still 3 s, the walker never; loiter after 5 s
    only_enters = [e for e in only if isinstance(e, ZoneEnter)]
    assert len(only_enters) == 1 and only_enters[0].frame > 50  # 3 s after it stopped (frame 30), not at 9
    assert [type(e) for e in only if isinstance(e, Loiter)] == [Loiter]


def berlin(text: str) -> float:
    """Epoch seconds of a local time in Berlin, e.g. "2026-12-07 07:59" (a Monday)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=zoneinfo.ZoneInfo("Europe/Berlin")).timestamp()


def at(i: int, wall: float, boxes=()) -> FrameContext:
    c = ctx(i, boxes)
    return dataclasses.replace(c, time=wall)


def test_an_app_on_a_schedule_sends_nothing_outside_its_windows_and_says_when_it_changes():
    settings = ScheduleSettings(
        timezone="Europe/Berlin",
        windows=[{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"},
                 {"days": ["sat"], "start": "22:00", "end": "02:00"}],
    )  # fmt: skip
    app = Scheduled(SafetyZone("press", SQUARE, classes={0}, clear_frames=2), Schedule.of(settings))
    person = [feet_at(200, 200)]
    out = []
    times = [
        ("2026-12-07 07:59", person),  # Monday before the window: inactive, no stop
        ("2026-12-07 08:00", person),  # the window opens: a stop at once
        ("2026-12-07 12:00", []),
        ("2026-12-07 12:00", []),  # cleared
        ("2026-12-07 18:00", person),  # closed: nothing
        ("2026-12-12 23:30", person),  # Saturday night, past midnight window
        ("2026-12-13 01:59", []),  # Sunday morning: still Saturday's window
        ("2026-12-13 02:00", []),  # over
    ]
    for i, (text, boxes) in enumerate(times):
        out.append([type(e).__name__ + (f":{e.active}" if isinstance(e, ScheduleChange) else "") for e in
                    app.update(at(i, berlin(text), boxes))])  # fmt: skip
    assert out == [
        ["ScheduleChange:False"],
        ["ScheduleChange:True", "Stop"],
        [],
        ["Clear"],
        ["ScheduleChange:False"],
        ["ScheduleChange:True", "Stop"],
        [],
        ["ScheduleChange:False"],
    ]
    assert app.state()["active"] is False and app.name == "press"


def test_schedule_settings_say_what_was_wrong(tmp_path):
    bad = GOOD.replace(
        "    classes: [person]\n  - type: zone",
        "    classes: [person]\n    schedule:\n      timezone: Mars/Olympus\n"
        "      windows: [{start: '8am', end: '18:00'}]\n  - type: zone",
    )
    r = check(tmp_path, bad)
    errors = [x for x in r.stderr.splitlines() if x.startswith("ivs: error:")]
    assert r.returncode == 1
    assert any("sensor.yaml:13:" in e and "unknown time zone 'Mars/Olympus'" in e for e in errors), errors
    assert any("sensor.yaml:14:" in e and "time '8am': expected HH:MM" in e for e in errors), errors
