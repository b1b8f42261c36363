"""The sensor paces frames, drops (and counts) instead of queueing, and times every stage."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ivs.frame import Frame
from ivs.records import FrameRecord, decode
from ivs.sensor import STAGES, FrameSlot, Sensor, _Captured
from ivs.sinks.jsonl import JsonlSink
from ivs.sources.synthetic import SyntheticSource


class ListSink:
    def __init__(self) -> None:
        self.records: list[FrameRecord] = []
        self.closed = False

    def write(self, record: FrameRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        self.closed = True


def test_slot_keeps_only_the_newest_frame_and_counts_the_rest():
    slot = FrameSlot(replace=True)
    stop = threading.Event()
    for i in range(5):
        slot.put(_Captured(Frame(None, i), 0.0), stop)  # type: ignore[arg-type]
    item = slot.get()
    assert item is not None and item.frame.index == 4
    assert slot.dropped == 4
    slot.close()
    assert slot.get() is None


def test_a_waiting_frame_is_not_overwritten_when_the_sensor_stops():
    """Unpaced, the capture waits for the unread frame; stopped meanwhile, it must not replace
    the frame in the slot (that frame was lost without a word): the new one is not taken."""
    slot = FrameSlot(replace=False)
    stop = threading.Event()
    assert slot.put(_Captured(Frame(None, 0), 0.0), stop)  # type: ignore[arg-type]
    taken: list[bool] = []
    waiting = threading.Thread(target=lambda: taken.append(slot.put(_Captured(Frame(None, 1), 0.0), stop)))  # type: ignore[arg-type]
    waiting.start()
    stop.set()
    waiting.join(5)
    item = slot.get()
    assert item is not None and item.frame.index == 0 and taken == [False] and slot.dropped == 0


def test_unpaced_processes_every_frame_in_order(classifier_model):
    sink = ListSink()
    src = SyntheticSource(320, 240, fps=30, frames=12)
    stats = Sensor(src, classifier_model, [sink], fps=0, sensor_id="s1").run()
    assert [r.frame for r in sink.records] == list(range(12))
    assert [r.seq for r in sink.records] == list(range(1, 13))
    assert stats.frames_processed == 12 and stats.dropped == 0
    assert sink.closed
    for r in sink.records:
        assert r.sensor_id == "s1" and r.model.name == "classifier" and r.mode == "metadata"
        t = r.timings_ms
        assert min(t.read, t.isp, t.infer, t.decode) > 0
        # total is capture-to-metadata: it contains every stage.
        assert t.total >= t.read + t.isp + t.infer + t.decode - 0.01


def test_slow_model_drops_frames_and_counts_them(classifier_model):
    # 400 fps is far beyond what the model sustains here: frames must be dropped, not queued.
    sink = ListSink()
    src = SyntheticSource(320, 240, fps=400, frames=400)
    stats = Sensor(src, classifier_model, [sink]).run()
    assert stats.dropped > 0
    assert stats.frames_read == 400
    assert stats.frames_processed + stats.dropped == stats.frames_read
    assert sum(r.dropped for r in sink.records) == sink.records[-1].dropped_total == stats.dropped
    frames = [r.frame for r in sink.records]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)
    # The queue never grows: a processed frame waited at most about one model run in the slot.
    worst_queue = max(r.timings_ms.queue for r in sink.records)
    worst_work = max(r.timings_ms.isp + r.timings_ms.infer + r.timings_ms.decode for r in sink.records)
    assert worst_queue < 3 * worst_work + 20


def test_paced_source_runs_at_the_source_rate(classifier_model):
    src = SyntheticSource(160, 120, fps=20, frames=10)
    t0 = time.monotonic()
    stats = Sensor(src, classifier_model, [ListSink()]).run()
    elapsed = time.monotonic() - t0
    # 10 frames at 20 fps: the 10th is captured 0.45 s after the first.
    assert elapsed >= 0.45
    assert stats.frames_processed + stats.dropped == 10


def test_max_frames_and_stop(classifier_model):
    sink = ListSink()
    Sensor(SyntheticSource(160, 120, frames=None), classifier_model, [sink], fps=0, max_frames=7).run()
    assert len(sink.records) == 7

    sink = ListSink()
    sensor = Sensor(SyntheticSource(160, 120, fps=30), classifier_model, [sink])
    threading.Timer(0.3, sensor.stop).start()
    stats = sensor.run()  # an endless source ends on stop()
    assert 1 <= stats.frames_processed <= 30


def test_stats_summary_has_every_stage(classifier_model):
    from ivs.sensor import summarize

    stats = Sensor(SyntheticSource(160, 120, frames=5), classifier_model, [ListSink()], fps=0).run()
    s = summarize(stats)
    assert set(s["timings_ms"]) == set(STAGES)
    assert s["frames_processed"] == 5 and s["timings_ms"]["infer"]["p50"] > 0


def test_jsonl_lines_round_trip(classifier_model, tmp_path: Path):
    out = tmp_path / "m.jsonl"
    Sensor(SyntheticSource(160, 120, frames=3), classifier_model, [JsonlSink(out)], fps=0).run()
    records = [decode(line) for line in out.read_bytes().splitlines()]
    assert [r.frame for r in records] == [0, 1, 2]
    assert out.read_bytes().startswith(b'{"schema":"ivs.frame/1"')


def test_mode_needs_matching_artifact_writer(classifier_model):
    src = SyntheticSource(160, 120, frames=1)
    with pytest.raises(ValueError, match="needs an ArtifactWriter"):
        Sensor(src, classifier_model, [], mode="image")


def test_stage_samples_keep_the_newest_values_in_a_fixed_ring() -> None:
    from ivs.sensor import Samples

    ring = Samples(capacity=5)
    assert len(ring) == 0 and not ring
    for value in range(1, 8):
        ring.append(float(value))
    assert list(ring) == [3.0, 4.0, 5.0, 6.0, 7.0]  # the two oldest were overwritten
    assert ring[0] == 3.0 and ring[-1] == 7.0 and len(ring) == 5
    with pytest.raises(IndexError):
        ring[5]
    before = ring.array().nbytes
    ring.append(8.0)
    assert ring.array().nbytes == before  # never grows past its capacity
