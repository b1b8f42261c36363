import numpy as np
import pytest

from ivs.detections import Detections, box_iou, nms


def make(n: int) -> Detections:
    xyxy = np.stack([np.arange(n) * 10, np.zeros(n), np.arange(n) * 10 + 5, np.full(n, 5)], axis=1)
    return Detections(xyxy=xyxy, confidence=np.linspace(0.1, 0.9, n), class_id=np.arange(n) % 2)


def test_boolean_mask_selects_rows_and_per_detection_data():
    d = make(4)
    d.data["extra"] = np.arange(4) * 100
    d.data["frame_level"] = "kept"
    sel = d[d.class_id == 1]
    assert len(sel) == 2
    assert sel.xyxy[:, 0].tolist() == [10.0, 30.0]
    assert sel.data["extra"].tolist() == [100, 300]
    assert sel.data["frame_level"] == "kept"
    assert sel.tracker_id.tolist() == [-1, -1]


def test_shape_mismatch_names_the_expected_shape():
    with pytest.raises(ValueError, match=r"confidence: expected shape \(2,\), got \(3,\)"):
        Detections(xyxy=np.zeros((2, 4)), confidence=np.zeros(3), class_id=np.zeros(2))
    with pytest.raises(ValueError, match=r"keypoints: expected shape \(2, K, 3\)"):
        Detections(xyxy=np.zeros((2, 4)), confidence=np.zeros(2), class_id=np.zeros(2), keypoints=np.zeros((2, 3)))


def test_empty_has_zero_rows():
    e = Detections.empty()
    assert len(e) == 0 and e.xyxy.shape == (0, 4) and e[e.confidence > 0].xyxy.shape == (0, 4)


def test_iou_and_nms():
    a = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 110]], np.float32)
    iou = box_iou(a, a)
    assert iou[0, 0] == pytest.approx(1.0)
    assert iou[0, 1] == pytest.approx(50 / 150)
    assert iou[0, 2] == 0.0
    keep = nms(a, np.array([0.9, 0.8, 0.7], np.float32), iou_threshold=0.3)
    assert keep.tolist() == [0, 2]
    keep = nms(a, np.array([0.9, 0.8, 0.7], np.float32), iou_threshold=0.4)
    assert keep.tolist() == [0, 1, 2]
