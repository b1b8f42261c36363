"""Merging detections of overlapping tiles: one detection per object."""

import numpy as np

from ivs.detections import Detections
from ivs.isp import InputSpec, Isp
from ivs.model import merge_tiles


def tiles_and_inputs():
    spec = InputSpec(name="x", width=100, height=100, layout="NHWC")
    isp = Isp(spec, tiles=(2, 1), overlap=0.25)
    inputs = isp.process_tiles(np.zeros((480, 640, 3), np.uint8))
    return isp.tile_rects(640, 480), inputs


def det(*boxes, scores=None):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    return Detections(xyxy=boxes, confidence=scores or [0.9] * len(boxes), class_id=[0] * len(boxes))


def test_object_seen_whole_by_both_tiles_is_reported_once():
    rects, inputs = tiles_and_inputs()
    left, right = rects
    assert left[0] + left[2] > right[0]  # they overlap
    obj = (330, 100, 350, 200)  # inside the overlap
    merged = merge_tiles([det(obj), det(obj, scores=[0.8])], inputs, 0.5)
    assert len(merged) == 1 and merged.confidence.tolist() == [np.float32(0.9)]


def test_cut_copy_at_an_inner_edge_is_dropped_when_the_neighbour_saw_it_whole():
    rects, inputs = tiles_and_inputs()
    left_edge_of_right_tile = rects[1][0]
    whole = (left_edge_of_right_tile - 30, 100, left_edge_of_right_tile + 20, 200)  # seen by the left tile
    cut = (left_edge_of_right_tile, 100, left_edge_of_right_tile + 20, 200)  # right tile's cut view
    merged = merge_tiles([det(whole), det(cut)], inputs, 0.5)
    assert merged.xyxy.tolist() == [list(map(float, whole))]


def test_large_object_cut_by_both_tiles_is_kept():
    rects, inputs = tiles_and_inputs()
    # Wider than the overlap: neither tile sees it whole, so both cut boxes stay (NMS may join).
    a = (100, 100, rects[0][0] + rects[0][2], 400)
    b = (rects[1][0], 100, 600, 400)
    merged = merge_tiles([det(a), det(b)], inputs, 0.5)
    assert len(merged) >= 1
    assert merged.xyxy[:, 0].min() <= 100 or merged.xyxy[:, 2].max() >= 600


def test_separate_objects_stay_separate():
    _, inputs = tiles_and_inputs()
    merged = merge_tiles([det((10, 10, 50, 90)), det((500, 10, 540, 90))], inputs, 0.5)
    assert len(merged) == 2


def full_and_tiles():
    spec = InputSpec(name="x", width=100, height=100, layout="NHWC")
    isp = Isp(spec, tiles=(2, 1), overlap=0.25, full_frame=True)
    inputs = isp.process_tiles(np.zeros((480, 640, 3), np.uint8))
    assert len(inputs) == 3 and inputs[0].region.shape[:2] == (480, 640)  # the whole frame first
    return isp.tile_rects(640, 480), inputs


def test_large_object_is_one_box_from_the_whole_frame_pass():
    """Wider than the overlap: the tiles see only pieces (cut, and one that looks whole); the
    whole-frame pass sees it whole, and only its box is left."""
    rects, inputs = full_and_tiles()
    big = (100, 60, 500, 400)
    left_piece = (100, 60, rects[0][0] + rects[0][2], 400)  # cut by the left tile's inner edge
    right_piece = (300, 60, 500, 400)  # inside the right tile, not touching its edge
    merged = merge_tiles([det(big, scores=[0.95]), det(left_piece), det(right_piece)], inputs, 0.7, full_frame=True)
    assert merged.xyxy.tolist() == [list(map(float, big))]


def test_whole_frame_pass_does_not_replace_what_a_tile_saw_whole():
    """A small person that a tile holds whole keeps the tile's box (more pixels), even where the
    whole-frame pass found it too; a small person standing inside a large box is not a piece."""
    _, inputs = full_and_tiles()
    small_full, small_tile = (40, 100, 80, 200), (42, 98, 81, 203)
    big = (200, 40, 520, 470)
    in_front = (340, 300, 380, 400)  # about 4% of the large box
    full = det(small_full, big, scores=[0.9, 0.9])
    merged = merge_tiles([full, det(small_tile), det(in_front)], inputs, 0.5, full_frame=True)
    assert sorted(merged.xyxy.tolist()) == sorted([list(map(float, b)) for b in (small_tile, big, in_front)])


def test_without_the_whole_frame_pass_inputs_are_the_tiles():
    spec = InputSpec(name="x", width=100, height=100, layout="NHWC")
    assert len(Isp(spec, tiles=(2, 1)).process_tiles(np.zeros((480, 640, 3), np.uint8))) == 2
    assert len(Isp(spec, tiles=(1, 1), full_frame=True).process_tiles(np.zeros((480, 640, 3), np.uint8))) == 1


def test_the_package_layout_has_the_whole_frame_pass_and_a_forced_grid_has_not():
    from ivs.model import load_model

    shipped = load_model("person", runtime="onnxruntime")
    forced = load_model("person", runtime="onnxruntime", tiles=(3, 2))
    both = load_model("person", runtime="onnxruntime", tiles=(3, 2), full_frame=True)
    none = load_model("person", runtime="onnxruntime", full_frame=False)
    frame = np.zeros((576, 768, 3), np.uint8)
    try:
        assert [len(m.prepare(frame)) for m in (shipped, forced, both, none)] == [3, 6, 7, 2]
    finally:
        for m in (shipped, forced, both, none):
            m.close()
