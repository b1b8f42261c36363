"""The decoder of networks with on-chip NMS (IMX500 ``_pp`` networks) on hand-built tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ivs.decode import DecodeContext, get
from ivs.decode.postprocessed import decode_postprocessed

CTX = DecodeContext(input_width=400, input_height=200, assets={})
# Three detections, (y0, x0, y1, x1) normalized, then one padding row past the count.
BOXES_YX = [[0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.5, 0.25], [0.5, 0.125, 1.0, 0.375], [0.0, 0.0, 0.0, 0.0]]
SCORES = [0.9, 0.6, 0.3, 0.0]
CLASSES = [0.0, 2.0, 0.0, 0.0]


def outputs(
    boxes: Any = BOXES_YX, scores: Any = SCORES, classes: Any = CLASSES, count: float | None = 3
) -> dict[str, np.ndarray[Any, Any]]:
    out = {
        "boxes": np.asarray(boxes, np.float32)[None],
        "scores": np.asarray(scores, np.float32)[None],
        "classes": np.asarray(classes, np.float32)[None],
    }
    if count is not None:
        out["count"] = np.array([[count]], np.float32)
    return out


def test_registered_as_postprocessed() -> None:
    assert get("postprocessed") is decode_postprocessed


def test_normalized_yx_boxes_become_xyxy_input_pixels_in_network_order() -> None:
    d = decode_postprocessed(outputs(), {"score_threshold": 0.5}, CTX)
    # (y0 0.25, x0 0.5, y1 0.75, x1 1.0) of 400x200 -> x 200..400, y 50..150
    assert d.xyxy.tolist() == [[200.0, 50.0, 400.0, 150.0], [0.0, 0.0, 100.0, 100.0]]
    assert d.confidence.tolist() == pytest.approx([0.9, 0.6])
    assert d.class_id.tolist() == [0, 2]


def test_threshold_keeps_scores_at_or_above_it() -> None:
    d = decode_postprocessed(outputs(), {"score_threshold": 0.3}, CTX)
    assert d.class_id.tolist() == [0, 2, 0]
    assert d.xyxy[2].tolist() == [50.0, 100.0, 150.0, 200.0]


def test_count_cuts_the_padding_and_no_count_takes_every_row() -> None:
    padded = outputs(scores=[0.9, 0.6, 0.3, 0.8], count=2)
    assert len(decode_postprocessed(padded, {"score_threshold": 0.1}, CTX)) == 2
    assert len(decode_postprocessed(outputs(scores=[0.9, 0.6, 0.3, 0.8], count=None), {}, CTX)) == 3
    assert len(decode_postprocessed(outputs(count=0), {"score_threshold": 0.0}, CTX)) == 0


def test_pixel_xy_boxes_as_yolo_pp_networks_give_them() -> None:
    xy = [[10.0, 20.0, 110.0, 220.0]]  # x0, y0, x1, y1 in input pixels; y1 past the 200-pixel input
    params = {"box_order": "xyxy", "normalized": False}
    d = decode_postprocessed(outputs(xy, [0.8], [5.0], 1), params, CTX)
    assert d.xyxy.tolist() == [[10.0, 20.0, 110.0, 200.0]]  # clipped to the input
    d = decode_postprocessed(outputs(xy, [0.8], [5.0], 1), {**params, "clip": False}, CTX)
    assert d.xyxy.tolist() == [[10.0, 20.0, 110.0, 220.0]]


def test_class_indices_pick_and_renumber_network_classes() -> None:
    d = decode_postprocessed(outputs(), {"score_threshold": 0.3, "class_indices": [2]}, CTX)
    assert d.class_id.tolist() == [0] and d.xyxy.tolist() == [[0.0, 0.0, 100.0, 100.0]]
    d = decode_postprocessed(outputs(), {"score_threshold": 0.3, "class_indices": [2, 0]}, CTX)
    assert d.class_id.tolist() == [1, 0, 1]
    assert len(decode_postprocessed(outputs(), {"class_indices": [7]}, CTX)) == 0


def test_a_dequantized_count_a_hair_off_a_whole_number_is_taken() -> None:
    assert len(decode_postprocessed(outputs(count=1.9999), {"score_threshold": 0.1}, CTX)) == 2


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"boxes": np.zeros((1, 4, 4)), "scores": np.zeros((1, 4))}, "expected outputs with roles 'boxes', 'scores'"),
        (outputs(boxes=np.zeros((4, 5))), r"expected 'boxes' of shape \(1, N, 4\), got \(1, 4, 5\)"),
        (outputs(scores=[0.5, 0.5]), r"expected 'scores' of shape \(1, 4\) \(one per box\), got \(1, 2\)"),
        (outputs(count=5), r"'count' is 5; expected a whole number of detections in 0..4"),
        (outputs(count=2.5), r"'count' is 2.5; expected a whole number"),
        (outputs(classes=[0.5, 0, 0, 0]), r"'classes' holds \[0.5\]; expected whole numbers >= 0"),
        (outputs(classes=[-1, 0, 0, 0]), r"expected whole numbers >= 0"),
        (outputs(scores=[np.nan, 0, 0, 0]), "'scores' holds NaN or infinity"),
        (outputs(boxes=[[0, 0, np.inf, 1], *BOXES_YX[1:]]), "'boxes' holds NaN or infinity"),
    ],
)
def test_malformed_outputs_are_refused_with_what_was_expected(tensors: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_postprocessed(tensors, {}, CTX)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"score_threshold": 1.5}, r"'score_threshold' must be in \[0.0, 1.0\]"),
        ({"box_order": "xy"}, r"'box_order' must be one of \['yxyx', 'xyxy'\], got 'xy'"),
        ({"normalized": "yes"}, "'normalized' must be true or false"),
        ({"clip": 1}, "'clip' must be true or false"),
        ({"class_indices": []}, "'class_indices' must be a non-empty list"),
        ({"class_indices": [0, 0]}, "distinct class indices"),
        ({"class_indices": [-1]}, "class indices >= 0"),
    ],
)
def test_bad_params_are_rejected(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_postprocessed(outputs(), params, CTX)
