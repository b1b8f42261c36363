"""The crowding app: `crowded` when a zone's head count holds at or above `crowded_at`,
`crowd_clear` when it holds at or below `clear_at`; hysteresis between the two. Made by hand
frame by frame, from a YAML file, and on the street video through `ivs run`, where the
expected events are worked out again from the frame records' own tracked boxes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ivs.apps import FrameContext
from ivs.apps.crowding import Crowding
from ivs.config import parse
from ivs.detections import Detections
from ivs.events import CrowdCleared, Crowded
from ivs.sinks.homeassistant import entities

ZONE = np.array([[0, 0], [300, 0], [300, 300], [0, 300]], np.float32)


def frame(i: int, inside: int, outside: int = 2) -> FrameContext:
    """Frame i with `inside` people standing in the zone and `outside` beyond it, all tracked."""
    boxes = [(10 + 30 * k, 100, 30 + 30 * k, 200) for k in range(inside)]
    boxes += [(400 + 30 * k, 100, 420 + 30 * k, 200) for k in range(outside)]
    n = len(boxes)
    det = Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(n, 0.9, np.float32), np.zeros(n, np.int64),
                     tracker_id=np.arange(1, n + 1))  # fmt: skip
    return FrameContext(i, 1000.0 + i / 10, i, i / 10, 640, 480, ["person"], det, det)


def run(app: Crowding, counts: list[int]) -> list[tuple[int, str, int]]:
    events = []
    for i, n in enumerate(counts):
        for e in app.update(frame(i, n)):
            events.append((e.frame, type(e).__name__, e.count))
    return events


def test_crowded_after_holding_and_clear_after_holding_below_the_lower_threshold() -> None:
    app = Crowding("queue", ZONE, crowded_at=4, clear_at=2, hold_frames=3, clear_frames=4)
    counts = [1, 4, 5, 3, 4, 4, 4, 5, 3, 3, 3, 2, 2, 1, 2, 2, 0, 0]
    #  frame 0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 16 17
    # 1-2 reach 4 for two frames only; 4-6 hold three: crowded on 6. 8-10 are 3, between the two
    # thresholds: still crowded. 11-14 are 2 or fewer for four frames: clear on 14.
    assert run(app, counts) == [(6, "Crowded", 4), (14, "CrowdCleared", 2)]
    assert app.state() == {"crowded": False, "count": 0, "episodes": 1}


def test_a_count_wavering_around_one_threshold_sends_nothing_more() -> None:
    app = Crowding("queue", ZONE, crowded_at=4, clear_at=2, hold_frames=2, clear_frames=2)
    assert run(app, [4, 4] + [3, 4] * 20) == [(1, "Crowded", 4)], "3 is above clear_at: no clear"
    fresh = Crowding("queue", ZONE, crowded_at=4, clear_at=2, hold_frames=2, clear_frames=2)
    assert run(fresh, [3, 4] * 20) == [], "never held at 4 for two frames"


def test_clear_says_how_long_it_was_crowded_and_untracked_objects_do_not_count() -> None:
    app = Crowding("queue", ZONE, crowded_at=2, clear_at=0, hold_frames=1, clear_frames=1)
    (crowded,) = app.update(frame(5, 2))
    assert isinstance(crowded, Crowded) and (crowded.count, crowded.threshold, crowded.t_source) == (2, 2, 0.5)
    # Three people detected in the zone on frame 8, none of them a confirmed track yet: nobody counts.
    seen = frame(8, 3)
    nobody = seen.detections[np.array([], np.int64)]
    (cleared,) = app.update(FrameContext(8, 0.0, 8, 0.8, 640, 480, ["person"], seen.detections, nobody))
    assert isinstance(cleared, CrowdCleared)
    assert (cleared.count, cleared.threshold, cleared.crowded_s) == (0, 0, 0.3)


def test_the_yaml_settings_and_their_errors() -> None:
    base = "id: s\nsource: {url: synthetic}\nmodel: {name: person}\napps:\n"
    zone = "    polygon: [[0, 0], [100, 0], [100, 100]]\n"
    cfg, problems, _ = parse(base + "  - type: crowding\n    name: queue\n    crowded_at: 5\n" + zone)
    assert cfg is not None, problems
    (app,) = cfg.apps
    assert (app.type, app.crowded_at, app.clear_at, app.hold_frames, app.clear_frames) == ("crowding", 5, None, 3, 10)
    cfg, problems, _ = parse(base + "  - type: crowding\n    name: queue\n    crowded_at: 3\n    clear_at: 3\n" + zone)
    assert cfg is None and len(problems) == 1
    assert problems[0].line == 5 and "clear_at 3 is not below crowded_at 3" in problems[0].message


def test_home_assistant_shows_a_crowded_binary_sensor() -> None:
    app = Crowding("Front Queue", ZONE, crowded_at=2, clear_at=1)
    (entity,) = entities("cam1", [app])
    assert (entity.component, entity.object_id, entity.initial) == ("binary_sensor", "front_queue_crowded", "OFF")
    assert entity.extra["device_class"] == "problem"
    assert app.ha_states(Crowded(frame=1, time=1.0, t_capture_ns=1, t_source=0.1, app="Front Queue", count=2,
                                 threshold=2)) == {"crowded": "ON"}  # fmt: skip


@pytest.mark.slow
def test_ivs_run_on_the_street_video_sends_what_its_own_records_imply(tmp_path: Path, vtest: Path) -> None:
    """The whole frame as the zone: a frame's head count is its records' tracked people. The
    events must be exactly those the rule gives on those counts."""
    out = tmp_path / "out.jsonl"
    config = tmp_path / "crowd.yaml"
    config.write_text(
        f"id: street\nsource: {{url: '{vtest}', fps: 0, max_frames: 300}}\n"
        "model: {name: person, runtime: onnxruntime}\nframes: true\n"
        "apps:\n  - {type: crowding, name: street, crowded_at: 6, clear_at: 4, hold_frames: 3, clear_frames: 5,\n"
        "     polygon: [[0, 0], [768, 0], [768, 576], [0, 576]]}\n"
        f"sinks:\n  - {{type: jsonl, path: '{out}'}}\n"
    )
    done = subprocess.run([sys.executable, "-m", "ivs", "run", "--config", str(config), "-q"], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    messages = [json.loads(line) for line in out.read_text().splitlines()]
    records = [m for m in messages if m["schema"] == "ivs.frame/1"]
    got = [(m["frame"], m["kind"], m["count"]) for m in messages if m.get("kind") in ("crowded", "crowd_clear")]

    expected, crowded, streak = [], False, 0
    for r in records:
        n = sum(1 + len(d.get("hides", [])) for d in r["detections"] if d.get("track_id") is not None)
        beyond = n <= 4 if crowded else n >= 6
        streak = streak + 1 if beyond else 0
        if streak >= (5 if crowded else 3):
            crowded, streak = not crowded, 0
            expected.append((r["frame"], "crowded" if crowded else "crowd_clear", n))
    assert got == expected
    assert len(got) >= 2, "the street gets crowded and clears at least once in 30 s"


def test_the_console_line_of_each_event() -> None:
    app = Crowding("queue", ZONE, crowded_at=2, clear_at=0, hold_frames=1, clear_frames=1)
    (crowded,) = app.update(frame(1, 3))
    (cleared,) = app.update(frame(4, 0))
    assert app.describe(crowded) == "CROWDED: 3 in the zone (at 2 or more)"
    assert app.describe(cleared) == "clear: 0 in the zone after 0.3 s crowded"


def test_a_head_hidden_in_anothers_box_counts():
    import dataclasses

    app = Crowding("queue", ZONE, crowded_at=2, clear_at=1, hold_frames=1)
    assert app.update(frame(0, 1)) == [] and app.count == 1
    (crowded,) = app.update(dataclasses.replace(frame(1, 1), hidden={7: 1}))  # 7 is hidden in 1's box, inside
    assert crowded.count == 2
    app = Crowding("queue", ZONE, crowded_at=2, clear_at=1, hold_frames=1)
    assert app.update(dataclasses.replace(frame(0, 1), hidden={7: 2})) == [] and app.count == 1  # 2 is outside
