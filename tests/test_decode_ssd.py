"""The SSD decoder on hand-built tensors (no model needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ivs.decode import DecodeContext, get
from ivs.decode.ssd import decode_ssd

# Two anchors (ycenter, xcenter, h, w), normalized.
ANCHORS = np.array([[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.1, 0.1]], np.float32)
CTX = DecodeContext(input_width=300, input_height=200, assets={"anchors": ANCHORS})
PARAMS: dict[str, Any] = {"class_logit_indices": [1], "score_threshold": 0.5}
BIG = 10.0  # sigmoid(10) ~ 0.99995


def outputs(boxes: Any, logits: Any) -> dict[str, np.ndarray[Any, Any]]:
    return {
        "boxes": np.asarray(boxes, np.float32)[None],
        "scores": np.asarray(logits, np.float32)[None],
    }


def test_registered_as_ssd() -> None:
    assert get("ssd") is decode_ssd


def test_zero_encoding_decodes_to_the_anchor_box_in_input_pixels() -> None:
    out = outputs(np.zeros((2, 4)), [[0.0, BIG], [0.0, -BIG]])
    d = decode_ssd(out, PARAMS, CTX)
    assert len(d) == 1
    # ycenter 0.5, xcenter 0.5, h 0.2, w 0.4 -> x 0.3..0.7 of 300, y 0.4..0.6 of 200
    np.testing.assert_allclose(d.xyxy[0], [90.0, 80.0, 210.0, 120.0], atol=1e-4)
    assert d.class_id.tolist() == [0]
    assert d.confidence[0] == pytest.approx(1 / (1 + np.exp(-BIG)), rel=1e-6)


def test_encoding_uses_scale_factors_like_the_tf_box_coder() -> None:
    # ty = 10 * 0.1 moves the centre by 0.1 anchor heights; tw = 5 * ln 2 doubles the width.
    enc = [[1.0, 0.0, 0.0, 5 * np.log(2.0)], [0.0, 0.0, 0.0, 0.0]]
    d = decode_ssd(outputs(enc, [[0.0, BIG], [0.0, -BIG]]), PARAMS, CTX)
    yc, w = 0.5 + 0.1 * 0.2, 0.8
    expected = [(0.5 - w / 2) * 300, (yc - 0.1) * 200, (0.5 + w / 2) * 300, (yc + 0.1) * 200]
    np.testing.assert_allclose(d.xyxy[0], expected, atol=1e-3)


def test_corner_anchors_give_the_same_box_as_centre_anchors() -> None:
    corners = np.stack(
        [
            ANCHORS[:, 0] - ANCHORS[:, 2] / 2,
            ANCHORS[:, 1] - ANCHORS[:, 3] / 2,
            ANCHORS[:, 0] + ANCHORS[:, 2] / 2,
            ANCHORS[:, 1] + ANCHORS[:, 3] / 2,
        ],
        axis=1,
    )
    ctx = DecodeContext(300, 200, {"corners": corners})
    out = outputs(np.full((2, 4), 0.3), [[0.0, BIG], [0.0, BIG]])
    a = decode_ssd(out, PARAMS, CTX)
    b = decode_ssd(out, {**PARAMS, "anchors": "corners", "anchor_format": "yxyx"}, ctx)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)


def test_score_threshold_filters() -> None:
    # sigmoid(0.5) ~ 0.62, sigmoid(-0.5) ~ 0.38
    out = outputs(np.zeros((2, 4)), [[0.0, 0.5], [0.0, -0.5]])
    assert len(decode_ssd(out, {**PARAMS, "score_threshold": 0.5}, CTX)) == 1
    assert len(decode_ssd(out, {**PARAMS, "score_threshold": 0.3}, CTX)) == 2
    assert len(decode_ssd(out, {**PARAMS, "score_threshold": 0.7}, CTX)) == 0


def test_nms_removes_an_overlapping_duplicate_and_sorts_best_first() -> None:
    anchors = np.array([[0.5, 0.5, 0.4, 0.4], [0.5, 0.51, 0.4, 0.4], [0.2, 0.2, 0.1, 0.1]], np.float32)
    ctx = DecodeContext(300, 300, {"anchors": anchors})
    out = outputs(np.zeros((3, 4)), [[0.0, 2.0], [0.0, 3.0], [0.0, 1.0]])
    d = decode_ssd(out, PARAMS, ctx)
    assert len(d) == 2
    np.testing.assert_allclose(d.xyxy[0], [93.0, 90.0, 213.0, 210.0], atol=1e-3)  # the 3.0 one
    assert d.confidence.tolist() == sorted(d.confidence.tolist(), reverse=True)
    # With a threshold above their IoU (~0.95), both overlapping boxes stay.
    assert len(decode_ssd(out, {**PARAMS, "iou_threshold": 0.99}, ctx)) == 3


def test_nms_is_per_class() -> None:
    anchors = np.array([[0.5, 0.5, 0.4, 0.4], [0.5, 0.5, 0.4, 0.4]], np.float32)
    ctx = DecodeContext(300, 300, {"anchors": anchors})
    logits = [[0.0, BIG, -BIG], [0.0, -BIG, BIG]]
    d = decode_ssd(outputs(np.zeros((2, 4)), logits), {"score_threshold": 0.5}, ctx)
    assert sorted(d.class_id.tolist()) == [0, 1]


def test_class_logit_indices_map_to_label_indices() -> None:
    logits = [[0.0, -BIG, BIG], [0.0, -BIG, -BIG]]
    d = decode_ssd(outputs(np.zeros((2, 4)), logits), {"class_logit_indices": [2]}, CTX)
    assert d.class_id.tolist() == [0]
    d = decode_ssd(outputs(np.zeros((2, 4)), logits), {}, CTX)  # default: all but background
    assert d.class_id.tolist() == [1]


def test_softmax_includes_the_background_column() -> None:
    # Softmax over [2, 2] is 0.5 each; sigmoid(2) would be 0.88.
    out = outputs(np.zeros((2, 4)), [[2.0, 2.0], [0.0, -BIG]])
    d = decode_ssd(out, {**PARAMS, "score_function": "softmax", "score_threshold": 0.4}, CTX)
    assert d.confidence.tolist() == pytest.approx([0.5])


def test_max_detections_caps_and_keeps_the_best() -> None:
    anchors = np.array([[0.1 + 0.2 * i, 0.5, 0.1, 0.1] for i in range(4)], np.float32)
    ctx = DecodeContext(300, 300, {"anchors": anchors})
    logits = [[0.0, s] for s in (1.0, 4.0, 2.0, 3.0)]
    d = decode_ssd(outputs(np.zeros((4, 4)), logits), {**PARAMS, "max_detections": 2}, ctx)
    np.testing.assert_allclose(d.confidence, 1 / (1 + np.exp(-np.array([4.0, 3.0]))), rtol=1e-6)


def test_boxes_are_clipped_to_the_input_unless_clip_is_false() -> None:
    anchors = np.array([[0.05, 0.05, 0.2, 0.2]], np.float32)
    ctx = DecodeContext(300, 300, {"anchors": anchors})
    out = outputs(np.zeros((1, 4)), [[0.0, BIG]])
    np.testing.assert_allclose(decode_ssd(out, PARAMS, ctx).xyxy[0], [0, 0, 45, 45], atol=1e-3)
    unclipped = decode_ssd(out, {**PARAMS, "clip": False}, ctx).xyxy[0]
    np.testing.assert_allclose(unclipped, [-15, -15, 45, 45], atol=1e-3)


def test_a_4d_box_tensor_is_accepted() -> None:
    out = outputs(np.zeros((2, 4)), [[0.0, BIG], [0.0, -BIG]])
    out["boxes"] = out["boxes"].reshape(1, 2, 1, 4)
    assert len(decode_ssd(out, PARAMS, CTX)) == 1


def test_nothing_above_threshold_is_empty() -> None:
    d = decode_ssd(outputs(np.zeros((2, 4)), [[0.0, -BIG], [0.0, -BIG]]), PARAMS, CTX)
    assert len(d) == 0 and d.xyxy.shape == (0, 4)


def test_wrong_box_shape_names_the_expected_shape() -> None:
    out = outputs(np.zeros((3, 4)), [[0.0, 0.0]] * 2)
    with pytest.raises(ValueError, match=r"expected 'boxes' of shape \(1, 2, 4\).*got \(1, 3, 4\)"):
        decode_ssd(out, PARAMS, CTX)


def test_wrong_score_shape_names_the_expected_shape() -> None:
    out = outputs(np.zeros((2, 4)), [[0.0, 0.0]] * 3)
    with pytest.raises(ValueError, match=r"'scores' of shape \(1, 2, classes\).*got \(1, 3, 2\)"):
        decode_ssd(out, PARAMS, CTX)


def test_wrong_anchor_shape_is_reported() -> None:
    ctx = DecodeContext(300, 300, {"anchors": np.zeros((2, 3), np.float32)})
    with pytest.raises(ValueError, match=r"anchors of shape \(N, 4\), got \(2, 3\)"):
        decode_ssd(outputs(np.zeros((2, 4)), [[0.0, 0.0]] * 2), PARAMS, ctx)


def test_missing_role_and_missing_asset_are_reported() -> None:
    out = outputs(np.zeros((2, 4)), [[0.0, 0.0]] * 2)
    with pytest.raises(ValueError, match="roles 'boxes' and 'scores'"):
        decode_ssd({"boxes": out["boxes"]}, PARAMS, CTX)
    with pytest.raises(ValueError, match=r"asset 'priors'.*\['anchors'\]"):
        decode_ssd(out, {**PARAMS, "anchors": "priors"}, CTX)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"iou_threshold": "high"}, "iou_threshold"),
        ({"max_detections": -1}, "max_detections"),
        ({"max_detections": 2.5}, "max_detections"),
        ({"scale_factors": [10, 10, 5]}, "scale_factors"),
        ({"scale_factors": [10, 10, 0, 5]}, "scale_factors"),
        ({"score_function": "tanh"}, "score_function"),
        ({"anchor_format": "xyxy"}, "anchor_format"),
        ({"class_logit_indices": [2]}, r"class_logit_indices.*0\.\.1"),
        ({"class_logit_indices": []}, "class_logit_indices"),
        ({"clip": "yes"}, "clip"),
    ],
)
def test_bad_params_are_rejected(params: dict[str, Any], message: str) -> None:
    out = outputs(np.zeros((2, 4)), [[0.0, BIG], [0.0, BIG]])
    with pytest.raises(ValueError, match=message):
        decode_ssd(out, {**PARAMS, **params}, CTX)
