"""ByteTracker: hand-built detections for each behaviour, and one run on real video (slow)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from ivs.detections import Detections
from ivs.track import ByteTracker, TrackState, _assign, appearance_features

PERSON, CAR = 0, 2


def box(cx: float, cy: float, w: float = 40, h: float = 100) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def dets(boxes: list[list[float]], conf: float | list[float] = 0.9, cls: int | list[int] = PERSON) -> Detections:
    n = len(boxes)
    return Detections(
        xyxy=np.array(boxes, np.float32).reshape(n, 4),
        confidence=np.broadcast_to(np.asarray(conf, np.float32), (n,)),
        class_id=np.broadcast_to(np.asarray(cls, np.int64), (n,)),
    )


def ids_by_row(out: Detections) -> list[int]:
    assert out.tracker_id is not None
    return out.tracker_id.tolist()


def test_two_walkers_keep_their_ids_for_30_frames():
    tracker = ByteTracker()
    for f in range(30):
        out = tracker.update(dets([box(100 + 4 * f, 200), box(500 - 3 * f, 300, 60, 150)])).tracked()
        # Objects already in view in the first frame are confirmed at once, as in ByteTrack.
        assert ids_by_row(out) == [1, 2], f"frame {f}"
        np.testing.assert_allclose(out.xyxy, [box(100 + 4 * f, 200), box(500 - 3 * f, 300, 60, 150)])


def test_occluded_walker_gets_its_id_back_where_motion_predicts():
    tracker = ByteTracker()
    seen: dict[int, list[int]] = {}
    for f in range(30):
        walker, stander = box(100 + 8 * f, 200), box(600, 400)
        occluded = 12 <= f < 17  # 5 frames not detected at all
        out = tracker.update(dets([stander] if occluded else [walker, stander])).tracked()
        seen[f] = ids_by_row(out)
        if occluded:
            lost = [t for t in tracker.tracks if t.id == 1]
            assert lost[0].state is TrackState.LOST
            # The prediction kept walking: after the gap it is near the hidden walker.
            assert lost[0].xyxy[0] == pytest.approx(walker[0], abs=8)
    assert all(seen[f] == [1, 2] for f in range(30) if not 12 <= f < 17)
    assert all(seen[f] == [2] for f in range(12, 17))
    assert {t.id for t in tracker.tracks} == {1, 2}


def test_reappearing_far_from_the_prediction_is_a_new_object():
    tracker = ByteTracker()
    for f in range(10):
        tracker.update(dets([box(100 + 8 * f, 200)])).tracked()
    for _ in range(5):
        tracker.update(dets([])).tracked()
    # It walked on at 8 px a frame; a box back where it vanished does not match the prediction.
    tracker.update(dets([box(172, 200)])).tracked()
    out = tracker.update(dets([box(172, 200)])).tracked()
    assert ids_by_row(out) == [2]


@pytest.mark.parametrize("dy", [0, 70], ids=["head_on", "side_by_side"])
def test_same_class_walkers_crossing_keep_distinct_ids(dy: int):
    # Both stay detected while they cross; constant velocity lets the Kalman filter tell them
    # apart even in the frame where their boxes coincide (dy=0).
    tracker = ByteTracker()
    for f in range(41):
        a, b = box(100 + 10 * f, 200), box(500 - 10 * f, 200 + dy)
        out = tracker.update(dets([a, b])).tracked()
        assert ids_by_row(out) == [1, 2], f"frame {f}"


def test_different_classes_crossing_keep_ids_even_when_one_is_hidden():
    tracker = ByteTracker()
    for f in range(41):
        person, car = box(100 + 10 * f, 200), box(500 - 10 * f, 210, 60, 100)
        hidden = 18 <= f <= 22  # the car hides the person while they overlap
        out = tracker.update(dets([car] if hidden else [person, car], cls=[CAR] if hidden else [PERSON, CAR])).tracked()
        assert ids_by_row(out) == ([2] if hidden else [1, 2]), f"frame {f}"


def test_low_confidence_continues_a_track_but_never_starts_one():
    tracker = ByteTracker()
    for f in range(5):
        tracker.update(dets([box(100 + 5 * f, 200)])).tracked()
    for f in range(5, 15):
        out = tracker.update(dets([box(100 + 5 * f, 200), box(400, 300)], conf=0.2)).tracked()
        # The walker's weak box continues track 1; the weak box elsewhere starts nothing.
        assert ids_by_row(out) == [1]
        assert out.confidence.tolist() == pytest.approx([0.2])
    assert [t.id for t in tracker.tracks] == [1]


@pytest.mark.parametrize("conf", [0.05, 0.2, 0.55])
def test_detections_below_new_track_threshold_never_start_a_track(conf: float):
    tracker = ByteTracker()
    tracker.update(dets([])).tracked()  # past the first frame, whose tracks are confirmed at once
    for _ in range(10):
        assert len(tracker.update(dets([box(300, 300)], conf=conf)).tracked()) == 0
    assert tracker.tracks == ()


def test_new_object_is_confirmed_on_its_second_frame_with_a_new_id():
    tracker = ByteTracker()
    tracker.update(dets([box(100, 200)])).tracked()
    out = tracker.update(dets([box(100, 200), box(400, 200)])).tracked()
    assert ids_by_row(out) == [1]  # the newcomer is tentative
    assert [(t.id, t.state) for t in tracker.tracks] == [(1, TrackState.TRACKED), (-1, TrackState.TENTATIVE)]
    out = tracker.update(dets([box(100, 200), box(400, 200)])).tracked()
    assert ids_by_row(out) == [1, 2]


def test_one_frame_false_positive_never_gets_an_id():
    tracker = ByteTracker()
    tracker.update(dets([box(100, 200)])).tracked()
    tracker.update(dets([box(100, 200), box(400, 200)])).tracked()  # a blip
    tracker.update(dets([box(100, 200)])).tracked()
    assert [t.id for t in tracker.tracks] == [1]  # its tentative track died at its first miss
    tracker.update(dets([box(100, 200), box(600, 200)])).tracked()
    out = tracker.update(dets([box(100, 200), box(600, 200)])).tracked()
    assert ids_by_row(out) == [1, 2]  # the blip used no id


def test_min_hits_delays_confirmation():
    tracker = ByteTracker(min_hits=3)
    tracker.update(dets([])).tracked()
    counts = [len(tracker.update(dets([box(100, 200)])).tracked()) for _ in range(4)]
    assert counts == [0, 0, 1, 1]


def test_ids_are_never_reused_after_a_track_expires_or_a_reset():
    tracker = ByteTracker(lost_frames=3)
    assert ids_by_row(tracker.update(dets([box(100, 200)])).tracked()) == [1]
    for _ in range(3):
        tracker.update(dets([])).tracked()
    assert [t.state for t in tracker.tracks] == [TrackState.LOST]
    tracker.update(dets([])).tracked()  # the 4th missed frame: gone
    assert tracker.tracks == ()
    tracker.update(dets([box(100, 200)])).tracked()
    assert ids_by_row(tracker.update(dets([box(100, 200)])).tracked()) == [2]
    tracker.reset()
    assert tracker.tracks == ()
    assert ids_by_row(tracker.update(dets([box(100, 200)])).tracked()) == [3]


def test_lost_track_is_found_again_within_lost_frames():
    tracker = ByteTracker(lost_frames=3)
    tracker.update(dets([box(100, 200)])).tracked()
    for _ in range(3):
        tracker.update(dets([])).tracked()
    assert ids_by_row(tracker.update(dets([box(100, 200)])).tracked()) == [1]


def test_class_aware_person_track_does_not_take_a_car_box():
    tracker = ByteTracker()
    tracker.update(dets([box(100, 200)], cls=PERSON)).tracked()
    assert len(tracker.update(dets([box(100, 200)], cls=CAR)).tracked()) == 0
    out = tracker.update(dets([box(100, 200)], cls=CAR)).tracked()
    assert ids_by_row(out) == [2]
    assert out.class_id.tolist() == [CAR]


def test_class_agnostic_track_follows_a_class_change():
    tracker = ByteTracker(class_aware=False)
    tracker.update(dets([box(100, 200)], cls=PERSON)).tracked()
    out = tracker.update(dets([box(100, 200)], cls=CAR)).tracked()
    assert ids_by_row(out) == [1]
    assert tracker.tracks[0].class_id == CAR


def test_output_is_the_input_rows_in_order_with_data_carried_over():
    tracker = ByteTracker()
    d = dets([box(100, 200), box(300, 200), box(500, 200)], conf=[0.9, 0.05, 0.8])
    d.keypoints = np.arange(3 * 2 * 3, dtype=np.float32).reshape(3, 2, 3)
    d.data = {"embedding": np.array([[1.0], [2.0], [3.0]]), "fps": 10}
    out = tracker.update(d).tracked()
    assert ids_by_row(out) == [1, 2]
    assert out.xyxy.tolist() == d.xyxy[[0, 2]].tolist()
    assert out.confidence.tolist() == pytest.approx([0.9, 0.8])
    assert out.keypoints is not None and out.keypoints.tolist() == d.keypoints[[0, 2]].tolist()
    assert out.data["embedding"].tolist() == [[1.0], [3.0]]
    assert out.data["fps"] == 10


def test_unusable_boxes_are_ignored():
    tracker = ByteTracker()
    bad = dets([[10, 10, 10, 50], [np.nan, 0, 5, 5], [30, 40, 20, 80], box(100, 200)])
    assert ids_by_row(tracker.update(bad).tracked()) == [1]
    assert len(tracker.tracks) == 1


def test_empty_frames_and_the_tracks_view():
    tracker = ByteTracker()
    assert len(tracker.update(Detections.empty()).tracked()) == 0
    tracker.update(dets([box(100, 200)])).tracked()
    tracker.update(dets([box(104, 200)])).tracked()
    tracker.update(dets([])).tracked()
    (t,) = tracker.tracks
    # Started in frame 2 (not the first frame, so tentative), confirmed in 3, missed in 4.
    assert (t.id, t.state, t.age, t.hits, t.frames_since_seen) == (1, TrackState.LOST, 2, 2, 1)
    assert t.xyxy[0] > 84  # predicted on to the right


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"low_threshold": 0.6}, "low_threshold <= high_threshold"),
        ({"low_threshold": -0.1}, "0 <= low_threshold"),
        ({"new_track_threshold": 0.4}, "high_threshold <= new_track_threshold"),
        ({"match_iou": 0.0}, "0 < match_iou <= 1"),
        ({"second_match_iou": 1.5}, "0 < second_match_iou <= 1"),
        ({"lost_frames": -1}, "lost_frames an int >= 0"),
        ({"lost_frames": 2.5}, "lost_frames an int >= 0"),
        ({"min_hits": 0}, "min_hits an int >= 1"),
        ({"appearance_weight": -1.0}, "appearance_weight >= 0"),
        ({"appearance_momentum": 1.5}, "0 <= appearance_momentum <= 1"),
        ({"reid_distance": -0.1}, "0 <= reid_distance <= 1"),
    ],
)
def test_bad_parameters_say_what_was_expected(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        ByteTracker(**kwargs)


def test_assignment_leaves_a_pair_unmatched_rather_than_take_two_poor_matches():
    # Plain Hungarian assignment would match as many pairs as it can: (0, 1) and (1, 0).
    cost = np.array([[0.1, 0.7], [0.7, 0.9]])
    assert _assign(cost, 0.8) == [(0, 0)]
    assert _assign(np.zeros((0, 3)), 0.8) == []


def test_update_wants_detections():
    with pytest.raises(TypeError, match="expected Detections, got ndarray"):
        ByteTracker().update(np.zeros((1, 4)))  # type: ignore[arg-type]


RED, BLUE = (200, 30, 30), (30, 40, 200)


def frame_with(boxes: list[list[float]], colours: list[tuple[int, int, int]]) -> np.ndarray:
    """A grey 640x480 RGB frame with each box filled with its colour, later ones in front."""
    pixels = np.full((480, 640, 3), 128, np.uint8)
    for b, c in zip(boxes, colours, strict=True):
        x1, y1, x2, y2 = (round(v) for v in b)
        pixels[y1:y2, x1:x2] = c
    return pixels


def test_appearance_features_tell_colours_apart():
    pixels = frame_with([box(100, 200), box(300, 200), box(500, 200)], [RED, RED, BLUE])
    f = appearance_features(pixels, np.array([box(100, 200), box(300, 200), box(500, 200)], np.float32))
    assert f.shape[0] == 3
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0)
    assert 1 - f[0] @ f[1] == pytest.approx(0.0, abs=1e-9)  # same colours
    assert 1 - f[0] @ f[2] == pytest.approx(1.0, abs=1e-9)  # nothing in common
    # A box off the frame has no appearance, and counts as neither alike nor unlike.
    assert not appearance_features(pixels, np.array([[700, 10, 740, 110]], np.float32)).any()


def swap_while_overlapping() -> list[tuple[list[list[float]], list[tuple[int, int, int]]]]:
    """Red stands at x=100; blue walks up to overlap it, then they trade places in one frame."""
    frames = []
    for f in range(12):  # apart, then blue walks in: 300 -> 125
        frames.append(([box(100, 200), box(max(125, 300 - 15 * f), 200)], [RED, BLUE]))
    for _ in range(4):  # overlapping
        frames.append(([box(100, 200), box(125, 200)], [RED, BLUE]))
    for _ in range(6):  # swapped: red at 125, blue at 100
        frames.append(([box(125, 200), box(100, 200)], [RED, BLUE]))
    return frames


def test_colour_keeps_ids_of_same_class_objects_that_swap_while_overlapping():
    with_colour, iou_only = ByteTracker(), ByteTracker()
    for boxes, colours in swap_while_overlapping():
        d = dets(boxes)
        coloured = with_colour.update(d, frame_with(boxes, colours))
        plain = iou_only.update(d)
    # Row 0 is red, row 1 blue throughout; red got id 1 in the first frame.
    assert ids_by_row(coloured) == [1, 2]
    assert ids_by_row(plain) == [2, 1]  # boxes alone follow the positions, not the people


def test_lost_track_is_reidentified_by_colour_away_from_its_prediction():
    def run(tracker: ByteTracker, colour: tuple[int, int, int], use_pixels: bool) -> list[int]:
        out = None
        for f in range(10):
            b = [box(100 + 4 * f, 200)]
            tracker.update(dets(b), frame_with(b, [RED]) if use_pixels else None).tracked()
        for _ in range(5):  # hidden
            tracker.update(dets([]), frame_with([], []) if use_pixels else None).tracked()
        for _ in range(2):  # back, but 60 px above where motion predicts: IoU < 0.2
            b = [box(175, 140)]
            out = tracker.update(dets(b), frame_with(b, [colour]) if use_pixels else None).tracked()
        assert out is not None
        return ids_by_row(out)

    assert run(ByteTracker(), RED, use_pixels=True) == [1]  # looks the same: the same object
    assert run(ByteTracker(), BLUE, use_pixels=True) == [2]  # looks different: a new one
    assert run(ByteTracker(), RED, use_pixels=False) == [2]  # boxes alone: a new one
    assert run(ByteTracker(appearance_weight=0), RED, use_pixels=True) == [2]  # appearance off


def test_update_wants_rgb_pixels():
    with pytest.raises(ValueError, match="expected pixels HxWx3"):
        ByteTracker().update(dets([box(100, 200)]), np.zeros((480, 640), np.uint8))


@pytest.mark.slow
def test_vtest_ids_are_mostly_stable(vtest: Path, person_model):
    """The person model over 300 frames (30 s at 10 fps) of people walking across a square.

    Without identity ground truth this checks what broken tracking would show: many short
    fragments (a tracker that drops tracks at once gives 91 ids, mean length 11; one that
    needs IoU 0.5 gives 54 ids) and ids jumping between people far apart.
    """
    tracker = ByteTracker()
    lengths: dict[int, int] = {}
    last: dict[int, tuple[int, np.ndarray, float]] = {}
    jump = 0.0  # largest centre move of one id, in box heights per frame
    most_at_once = 0
    with av.open(str(vtest)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == 300:
                break
            rgb = frame.to_ndarray(format="rgb24")
            out = tracker.update(person_model(rgb), rgb).tracked()
            most_at_once = max(most_at_once, len(out))
            for xyxy, tid in zip(out.xyxy, ids_by_row(out), strict=True):
                lengths[tid] = lengths.get(tid, 0) + 1
                centre, height = (xyxy[:2] + xyxy[2:]) / 2, float(xyxy[3] - xyxy[1])
                if tid in last:
                    j, c, h = last[tid]
                    jump = max(jump, float(np.linalg.norm(centre - c)) / max(height, h) / (i - j))
                last[tid] = (i, centre, height)
    counts = np.array(list(lengths.values()))
    in_long = counts[counts >= 20].sum() / counts.sum()
    print(
        f"vtest: {len(counts)} ids, at most {most_at_once} at once, mean track {counts.mean():.1f} frames, "
        f"{in_long:.0%} of tracked boxes in tracks of >= 20 frames, largest jump {jump:.2f} h/frame"
    )
    assert most_at_once >= 5  # the detector and tracker do see the crowd
    # People come and go over 30 s, so more ids than people at once, but not many more.
    assert len(counts) < 4 * most_at_once
    assert counts.mean() > 20
    assert in_long > 0.9
    # Walkers move about 0.1 of their height a frame at 10 fps; an id jumping to someone else
    # moves further. Boxes that briefly merge two walkers account for what there is above that.
    assert jump < 0.5


def hide_in_a_companions_box(use_pixels: bool) -> list[list[int]]:
    """Blue stands at x=300; red walks left up to it and stops behind it, where the detector
    sees one box for both for 20 frames; then red steps out on its right. Red's own motion had
    it walking on left (160 px by then, further than re-identification reaches), so only the
    box it vanished into says where it is. Returns the ids reported in the 3 frames after parting."""
    tracker = ByteTracker()
    blue = box(300, 200)
    for f in range(16):  # apart: red walks 8 px a frame towards blue
        boxes = [blue, box(460 - 8 * f, 200)]
        tracker.update(dets(boxes), frame_with(boxes, [BLUE, RED]) if use_pixels else None).tracked()
    red_behind = box(330, 200)
    merged = [280.0, 150.0, 350.0, 250.0]  # one box around both
    for _ in range(20):
        tracker.update(dets([merged]), frame_with([red_behind, blue], [RED, BLUE]) if use_pixels else None).tracked()
    ids = []
    for _ in range(3):  # parted: red just right of blue
        boxes = [blue, box(345, 200)]
        out = tracker.update(dets(boxes), frame_with(boxes, [BLUE, RED]) if use_pixels else None).tracked()
        ids.append(ids_by_row(out))  # reported rows keep the input order: blue, then red
    return ids


def test_someone_hidden_in_a_companions_box_comes_out_with_their_id():
    # Blue got id 1 and red id 2 in the first frame; after parting each has its own back.
    assert hide_in_a_companions_box(use_pixels=True) == [[1, 2], [1, 2], [1, 2]]
    # Boxes alone cannot tell who came out: red gets a new id once confirmed.
    assert hide_in_a_companions_box(use_pixels=False)[-1] == [1, 3]


def test_weak_box_that_looks_like_a_lost_track_brings_it_back():
    def run(colour: tuple[int, int, int], use_pixels: bool) -> list[int]:
        tracker = ByteTracker()
        for f in range(10):
            b = [box(100 + 4 * f, 200)]
            tracker.update(dets(b), frame_with(b, [RED]) if use_pixels else None).tracked()
        for _ in range(3):  # hidden
            tracker.update(dets([]), frame_with([], []) if use_pixels else None).tracked()
        b = [box(152, 200)]  # back where motion predicts, but only weakly detected
        out = tracker.update(dets(b, conf=0.3), frame_with(b, [colour]) if use_pixels else None).tracked()
        return ids_by_row(out)

    assert run(RED, use_pixels=True) == [1]  # looks just like the lost track: it is back
    assert run(BLUE, use_pixels=True) == []  # a weak box of something else continues nothing
    assert run(RED, use_pixels=False) == []  # without looks, ByteTrack's rule: weak boxes only
    # continue tracks followed until the previous frame
