"""The BlazeFace decoder on hand-built tensors (no model needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ivs.decode import DecodeContext, get
from ivs.decode.blazeface import decode_blazeface, weighted_nms

# Anchors (x_center, y_center, w, h), normalized; the second is MediaPipe-style (w = h = 1).
ANCHORS = np.array([[0.5, 0.25, 0.5, 0.25], [0.75, 0.75, 1.0, 1.0]], np.float32)
W, H = 128, 64
CTX = DecodeContext(input_width=W, input_height=H, assets={"anchors": ANCHORS})
PARAMS: dict[str, Any] = {"score_threshold": 0.5, "num_keypoints": 2}
BIG = 10.0  # sigmoid(10) ~ 0.99995


def outputs(regressors: Any, logits: Any) -> dict[str, np.ndarray[Any, Any]]:
    return {
        "regressors": np.asarray(regressors, np.float32)[None],
        "scores": np.asarray(logits, np.float32).reshape(1, -1, 1),
    }


def test_registered_as_blazeface() -> None:
    assert get("blazeface") is decode_blazeface


def test_anchor_sized_regressors_decode_to_the_anchor_box_in_input_pixels() -> None:
    # dx = dy = 0, w = x_scale, h = y_scale (default: the input size) -> the anchor itself.
    reg = np.zeros((2, 8), np.float32)
    reg[0, 2:4] = [W, H]
    d = decode_blazeface(outputs(reg, [BIG, -BIG]), PARAMS, CTX)
    assert len(d) == 1
    # x 0.5 +- 0.25 of 128, y 0.25 +- 0.125 of 64
    np.testing.assert_allclose(d.xyxy[0], [32.0, 8.0, 96.0, 24.0], atol=1e-4)
    assert d.class_id.tolist() == [0]
    assert d.confidence[0] == pytest.approx(1 / (1 + np.exp(-BIG)), rel=1e-6)


def test_zero_regressors_give_a_point_box_at_the_anchor_centre() -> None:
    # No exponential on the size (MediaPipe's apply_exponential_on_box_size is false).
    d = decode_blazeface(outputs(np.zeros((2, 8)), [-BIG, BIG]), PARAMS, CTX)
    np.testing.assert_allclose(d.xyxy[0], [96.0, 48.0, 96.0, 48.0], atol=1e-4)
    assert d.keypoints is not None
    np.testing.assert_allclose(d.keypoints[0, :, :2], [[96.0, 48.0], [96.0, 48.0]], atol=1e-4)


def test_offsets_and_keypoints_are_input_pixels_scaled_by_the_anchor() -> None:
    # Anchor 1 has w = h = 1: offsets are plain input pixels.
    reg = np.zeros((2, 8), np.float32)
    reg[1] = [10, -4, 20, 16, -8, 2, 6, -6]
    d = decode_blazeface(outputs(reg, [-BIG, BIG]), PARAMS, CTX)
    xc, yc = 96 + 10, 48 - 4
    np.testing.assert_allclose(d.xyxy[0], [xc - 10, yc - 8, xc + 10, yc + 8], atol=1e-4)
    assert d.keypoints is not None and d.keypoints.shape == (1, 2, 3)
    np.testing.assert_allclose(d.keypoints[0, :, :2], [[88, 50], [102, 42]], atol=1e-4)
    # The keypoint score column is the face's score.
    np.testing.assert_allclose(d.keypoints[0, :, 2], [d.confidence[0]] * 2)
    # Anchor 0 (w 0.5, h 0.25): offsets shrink with the anchor.
    reg[0] = [W, H, 0, 0, W, 0, 0, 0]
    d0 = decode_blazeface(outputs(reg, [BIG, -BIG]), PARAMS, CTX)
    # xc = 1 * 0.5 + 0.5 = 1.0 -> 128, yc = 1 * 0.25 + 0.25 = 0.5 -> 32
    np.testing.assert_allclose(d0.xyxy[0], [128.0, 32.0, 128.0, 32.0], atol=1e-4)
    assert d0.keypoints is not None
    np.testing.assert_allclose(d0.keypoints[0, 0, :2], [128.0, 16.0], atol=1e-4)


def test_score_threshold_and_logit_clipping() -> None:
    reg = np.zeros((2, 8), np.float32)
    reg[:, 2:4] = 8
    logits = [0.4, 1e30]  # sigmoid(0.4) ~ 0.599; 1e30 is clipped to 100 first
    assert len(decode_blazeface(outputs(reg, logits), {**PARAMS, "score_threshold": 0.6}, CTX)) == 1
    d = decode_blazeface(outputs(reg, logits), {**PARAMS, "score_threshold": 0.59}, CTX)
    assert len(d) == 2 and np.all(np.isfinite(d.confidence))
    assert d.confidence.tolist() == sorted(d.confidence.tolist(), reverse=True)
    empty = decode_blazeface(outputs(reg, [-1e30, -BIG]), PARAMS, CTX)
    assert len(empty) == 0
    assert empty.keypoints is not None and empty.keypoints.shape == (0, 2, 3)


def test_weighted_nms_averages_overlapping_faces_by_score() -> None:
    boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.6, 0.9, 0.7], np.float32)
    kps = boxes[:, None, :2].copy()
    b, s, k = weighted_nms(boxes, scores, kps, 0.3)
    assert s.tolist() == pytest.approx([0.9, 0.7])  # the best score, not the mean
    np.testing.assert_allclose(b[0], [(0.6 * 0 + 0.9 * 2) / 1.5, 0, (0.6 * 10 + 0.9 * 12) / 1.5, 10], rtol=1e-6)
    np.testing.assert_allclose(k[0, 0], [1.2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(b[1], boxes[2])


def test_plain_and_weighted_nms_keep_one_face_of_two_overlapping_anchors() -> None:
    anchors = np.array([[0.5, 0.5, 1, 1], [0.52, 0.5, 1, 1]], np.float32)
    ctx = DecodeContext(100, 100, {"anchors": anchors})
    reg = np.zeros((2, 8), np.float32)
    reg[:, 2:4] = 40
    out = outputs(reg, [BIG, BIG - 1])
    plain = decode_blazeface(out, {**PARAMS, "nms": "plain"}, ctx)
    weighted = decode_blazeface(out, {**PARAMS, "nms": "weighted"}, ctx)
    assert len(plain) == len(weighted) == 1
    np.testing.assert_allclose(plain.xyxy[0], [30, 30, 70, 70], atol=1e-4)
    assert 30 < weighted.xyxy[0, 0] < 32  # pulled towards the second anchor's box


def test_keypoint_names_are_reported() -> None:
    reg = np.zeros((2, 8), np.float32)
    d = decode_blazeface(outputs(reg, [BIG, -BIG]), {**PARAMS, "keypoint_names": ["a", "b"]}, CTX)
    assert d.data["keypoint_names"] == ["a", "b"]


@pytest.mark.parametrize(
    ("reg_shape", "logit_shape", "match"),
    [
        ((1, 2, 6), (1, 2, 1), r"expected 'regressors' of shape \(1, 2, 8\)"),
        ((1, 3, 8), (1, 2, 1), r"expected 'regressors' of shape \(1, 2, 8\)"),
        ((1, 2, 8), (1, 2, 2), r"expected 'scores' of shape \(1, 2, 1\)"),
    ],
)
def test_bad_shapes_say_what_was_expected(reg_shape: tuple[int, ...], logit_shape: tuple[int, ...], match: str) -> None:
    out = {"regressors": np.zeros(reg_shape, np.float32), "scores": np.zeros(logit_shape, np.float32)}
    with pytest.raises(ValueError, match=match):
        decode_blazeface(out, PARAMS, CTX)


def test_bad_anchors_params_and_roles_are_refused() -> None:
    out = outputs(np.zeros((2, 8)), [0, 0])
    with pytest.raises(ValueError, match=r"expected anchors of shape \(N, 4\)"):
        decode_blazeface(out, PARAMS, DecodeContext(W, H, {"anchors": np.zeros((2, 3), np.float32)}))
    with pytest.raises(ValueError, match="expected an asset 'anchors'"):
        decode_blazeface(out, PARAMS, DecodeContext(W, H, {}))
    with pytest.raises(ValueError, match="roles 'regressors' and 'scores'"):
        decode_blazeface({"scores": out["scores"]}, PARAMS, CTX)
    with pytest.raises(ValueError, match="'nms' must be one of"):
        decode_blazeface(out, {**PARAMS, "nms": "soft"}, CTX)
    with pytest.raises(ValueError, match="'keypoint_names' must be a list of 2 strings"):
        decode_blazeface(out, {**PARAMS, "keypoint_names": ["a"]}, CTX)
    with pytest.raises(ValueError, match="'score_threshold' must be in"):
        decode_blazeface(out, {**PARAMS, "score_threshold": 2}, CTX)
