"""The YOLO decoder on hand-built tensors (no model needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ivs.decode import DecodeContext, get
from ivs.decode.yolo import decode_yolo

# One head, stride 32 on a 128x64 input: a 4x2 grid (W=4, H=2), 2 anchors, 3 classes.
CTX = DecodeContext(input_width=128, input_height=64, assets={})
ANCHORS = [[20.0, 10.0], [40.0, 80.0]]
PARAMS: dict[str, Any] = {
    "heads": ["p"],
    "strides": [32],
    "anchors": [ANCHORS],
    "score_threshold": 0.25,
    "iou_threshold": 0.45,
    "clip": False,
}
A, C, H, W = 2, 3, 2, 4
BIG = 10.0  # sigmoid(10) ~ 0.99995


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def empty_head() -> np.ndarray:
    """(A, 5 + C, H, W) raw map where nothing scores: objectness and classes at -BIG."""
    raw = np.zeros((A, 5 + C, H, W), np.float32)
    raw[:, 4:] = -BIG
    return raw


def run(raw: np.ndarray, **override: Any) -> Any:
    return decode_yolo({"p": raw.reshape(1, A * (5 + C), H, W)}, {**PARAMS, **override}, CTX)


def test_registered_as_yolo() -> None:
    assert get("yolo") is decode_yolo


def test_one_cell_with_known_offsets_decodes_to_a_known_box() -> None:
    raw = empty_head()
    # Anchor 1 (40x80) at column 2, row 1: centre offset sigmoid(tx) = 0.25, sigmoid(ty) = 0.75,
    # width doubled (tw = ln 2), height halved (th = -ln 2); objectness 0.9, class 2 at 0.8.
    raw[1, :, 1, 2] = [
        logit(0.25),
        logit(0.75),
        np.log(2.0),
        -np.log(2.0),
        logit(0.9),
        -BIG,
        -BIG,
        logit(0.8),
    ]
    d = run(raw)
    assert len(d) == 1
    cx, cy, w, h = (2 + 0.25) * 32, (1 + 0.75) * 32, 80.0, 40.0
    np.testing.assert_allclose(d.xyxy[0], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-3)
    assert d.class_id.tolist() == [2]
    assert d.confidence[0] == pytest.approx(0.9 * 0.8, rel=1e-5)


def test_score_is_objectness_times_class_and_thresholded() -> None:
    raw = empty_head()
    raw[0, :, 0, 0] = [0, 0, 0, 0, logit(0.5), logit(0.6), -BIG, -BIG]  # 0.30 >= 0.25
    raw[0, :, 0, 3] = [0, 0, 0, 0, logit(0.5), logit(0.4), -BIG, -BIG]  # 0.20 < 0.25
    raw[1, :, 1, 0] = [0, 0, 0, 0, logit(0.2), BIG, -BIG, -BIG]  # objectness alone < 0.25
    d = run(raw)
    assert len(d) == 1
    assert d.confidence[0] == pytest.approx(0.3, rel=1e-5)
    assert len(run(raw, score_threshold=0.35)) == 0
    assert len(run(raw, score_threshold=0.15)) == 3


def test_every_class_above_the_threshold_is_reported() -> None:
    raw = empty_head()
    raw[0, :, 0, 0] = [0, 0, 0, 0, BIG, logit(0.9), logit(0.5), -BIG]
    d = run(raw)
    assert sorted(d.class_id.tolist()) == [0, 1]


def test_nms_is_class_wise() -> None:
    raw = empty_head()
    # Two identical boxes of class 0 (anchor 0 stretched to anchor 1's 40x80, same cell), and
    # a class-1 box overlapping them at IoU 0.67 > 0.45: only the class-0 duplicate goes.
    raw[0, :, 0, 1] = [0, 0, np.log(2.0), np.log(8.0), BIG, logit(0.9), -BIG, -BIG]  # 40x80
    raw[1, :, 0, 1] = [0, 0, 0, 0, BIG, logit(0.7), -BIG, -BIG]  # 40x80, same centre
    raw[1, :, 1, 1] = [0, -BIG, 0, 0, BIG, -BIG, logit(0.8), -BIG]  # centre y 32
    d = run(raw)
    assert d.class_id.tolist() == [0, 1]
    np.testing.assert_allclose(d.confidence, [0.9, 0.8], atol=1e-3)
    # Best first.
    assert d.confidence.tolist() == sorted(d.confidence.tolist(), reverse=True)
    assert len(run(raw, iou_threshold=1.0)) == 3


def test_max_detections_and_clip() -> None:
    raw = empty_head()
    raw[:, 4] = BIG
    raw[:, 5] = BIG
    raw[:, 2:4] = np.log(10.0)  # 10x the anchors: every box crosses the input border
    d = run(raw, clip=True, iou_threshold=1.0)
    assert len(d) == A * H * W
    assert d.xyxy.min() >= 0 and d.xyxy[:, 2].max() <= 128 and d.xyxy[:, 3].max() <= 64
    assert len(run(raw, max_detections=3, iou_threshold=1.0)) == 3
    assert len(run(raw, max_detections=0)) == 0


def test_two_heads_with_their_own_strides_and_anchors() -> None:
    coarse, fine = empty_head(), np.zeros((1, 5 + C, 4, 8), np.float32)
    fine[:, 4:] = -BIG
    fine[0, :, 3, 7] = [0, 0, 0, 0, BIG, BIG, -BIG, -BIG]  # centre (7.5 * 16, 3.5 * 16)
    params = {**PARAMS, "heads": ["p", "q"], "strides": [32, 16], "anchors": [ANCHORS, [[6.0, 4.0]]]}
    outputs = {"p": coarse.reshape(1, -1, H, W), "q": fine.reshape(1, -1, 4, 8)}
    d = decode_yolo(outputs, params, CTX)
    np.testing.assert_allclose(d.xyxy[0], [117.0, 54.0, 123.0, 58.0], atol=1e-3)


def test_nothing_above_threshold_is_empty() -> None:
    d = run(empty_head())
    assert len(d) == 0 and d.xyxy.shape == (0, 4)


@pytest.mark.parametrize(
    ("shape", "override"),
    [
        ((1, A * (5 + C), H + 1, W), {}),  # wrong grid for stride 32 on 128x64
        ((1, A * (5 + C) + 1, H, W), {}),  # channels not a multiple of the anchors
        ((A * (5 + C), H, W), {}),  # no batch axis
        ((1, A * (5 + C), H, W), {"num_classes": 80}),  # channels disagree with num_classes
    ],
)
def test_bad_shape_says_what_was_expected(shape: tuple[int, ...], override: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"expected head 'p' of shape \(1, 2 \* \(.*\), 2, 4\)"):
        decode_yolo({"p": np.zeros(shape, np.float32)}, {**PARAMS, **override}, CTX)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"heads": "p"}, "heads"),
        ({"strides": [32, 16]}, "strides"),
        ({"anchors": [[[20.0, -1.0]]]}, "anchors"),
        ({"anchors": [[1.0, 2.0, 3.0]]}, "anchors"),
        ({"score_threshold": 2.0}, "score_threshold"),
        ({"clip": "yes"}, "clip"),
    ],
)
def test_bad_params_are_rejected(override: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        run(empty_head(), **override)


def test_missing_role_is_rejected() -> None:
    with pytest.raises(ValueError, match="roles"):
        decode_yolo({"other": np.zeros((1, 16, 2, 4), np.float32)}, PARAMS, CTX)
