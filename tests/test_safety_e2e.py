"""Safety stop end to end: a real person (cut from a vtest frame) walks into a stop zone in a
generated scene at a known frame; the real detector and the app must stop on that frame."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ivs.apps.safety import SafetyZone
from ivs.events import Clear, Stop
from ivs.model import load_model
from ivs.sensor import Sensor
from ivs.sources.synthetic import Figure, SyntheticSource
from tests.conftest import DATA, read_frames


class Collect:
    def __init__(self) -> None:
        self.messages: list = []

    def write(self, message) -> None:
        self.messages.append(message)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def walker(vtest) -> np.ndarray:
    labels = json.loads((DATA / "vtest_people.json").read_text())
    frame = next(f for f in labels["frames"] if f["index"] == 60)
    x1, y1, x2, y2 = max((p["box"] for p in frame["people"]), key=lambda b: b[3] - b[1])
    return np.ascontiguousarray(read_frames(vtest, {60})[60][y1:y2, x1:x2])


def test_stop_on_the_entry_frame_and_clear_after_n_empty(walker):
    # 20 px a frame; the zone spans x 320..430. True box right edge 90 + 20k: 310 at k=11,
    # 330 at k=12, so the person enters at frame 12; the left edge 20 + 20k is 420 at k=20 and
    # 440 at k=21. Each boundary is crossed by 10 px, more than the detector's box error.
    fig = Figure(x=20, y=200, vx=20, vy=0, w=70, h=180, color=(0, 0, 0), sprite=walker)
    src = SyntheticSource(640, 480, fps=30, frames=28, figures=[fig])  # gone right before it bounces
    zone = np.array([[320, 0], [430, 0], [430, 479], [320, 479]], np.float32)
    truth_in = [k for k in range(28) if src.boxes_at(k)[0, 2] > 320 and src.boxes_at(k)[0, 0] < 430]
    assert truth_in[0] == 12 and truth_in[-1] == 20

    sink = Collect()
    app = SafetyZone("cell", zone, classes={0}, clear_frames=5)
    model = load_model("person", runtime="onnxruntime", tiles=(1, 1))
    sensor = Sensor(src, model, [sink], fps=0, apps=[app], emit_frames=True)
    assert sensor.tracker is None  # the stop reacts to raw detections: no tracker to wait for
    sensor.run()
    model.close()

    records = {m.frame: m for m in sink.messages if type(m).__name__ == "FrameRecord"}
    events = [m for m in sink.messages if isinstance(m, Stop | Clear)]
    assert [type(e) for e in events] == [Stop, Clear]
    stop, clear = events
    assert stop.frame == truth_in[0]
    # The stop carries its frame's capture time, so capture-to-event latency is measurable.
    assert stop.t_capture_ns == records[stop.frame].t_capture_ns
    assert clear.frame == truth_in[-1] + 5  # frames 21..25 empty: the fifth one clears
    # Every message has one sequence number, in order.
    assert [m.seq for m in sink.messages] == list(range(1, len(sink.messages) + 1))


def test_a_tracker_runs_only_when_an_app_reads_tracks() -> None:
    from ivs.apps.line import LineCounter

    src = SyntheticSource(640, 480, fps=30, frames=1)
    zone = np.array([[0, 0], [10, 0], [10, 10]], np.float32)
    safety = SafetyZone("cell", zone)
    line = LineCounter("door", (0.0, 240.0), (639.0, 240.0))
    model = load_model("person", runtime="onnxruntime", tiles=(1, 1))
    try:
        assert Sensor(src, model, [Collect()], apps=[safety]).tracker is None
        assert Sensor(src, model, [Collect()], apps=[safety, line]).tracker is not None
        assert Sensor(src, model, [Collect()]).tracker is None  # no apps: per-frame detections only
    finally:
        model.close()
