"""Detection and classification are real: the zoo models on real images and video.

The person boxes in tests/data/vtest_people.json were drawn by hand (see tests/data/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ivs.detections import box_iou
from tests.conftest import DATA, read_frames


def match(gt: np.ndarray, det: np.ndarray, iou_min: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching, highest IoU first (the usual detection-metric rule)."""
    if len(gt) == 0 or len(det) == 0:
        return []
    iou = box_iou(gt, det)
    pairs = []
    used_g, used_d = set(), set()
    for flat in np.argsort(-iou, axis=None):
        g, d = divmod(int(flat), iou.shape[1])
        if iou[g, d] < iou_min:
            break
        if g not in used_g and d not in used_d:
            pairs.append((g, d))
            used_g.add(g)
            used_d.add(d)
    return pairs


def evaluate(labels: dict, detections: dict[int, np.ndarray], iou_min: float = 0.5):
    """Recall over non-difficult people, and false positives per frame. A detection matched
    to a person marked difficult is neither a hit nor a false positive."""
    hits = total = 0
    fps: dict[int, int] = {}
    for frame in labels["frames"]:
        people = frame["people"]
        gt = np.array([p["box"] for p in people], np.float32).reshape(-1, 4)
        difficult = np.array([p["difficult"] for p in people], bool)
        det = detections[frame["index"]]
        pairs = match(gt, det, iou_min)
        matched_gt = {g for g, _ in pairs}
        matched_det = {d for _, d in pairs}
        hits += sum(1 for g in matched_gt if not difficult[g])
        total += int((~difficult).sum())
        fps[frame["index"]] = len(det) - len(matched_det)
    return hits / total, fps


@pytest.fixture(scope="module")
def labels() -> dict:
    return json.loads((DATA / "vtest_people.json").read_text())


HELD_OUT = {125, 385, 645}  # labelled after tiling and threshold were chosen on the others


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_person_detector_finds_the_walkers(runtime: str, vtest: Path, labels: dict):
    from ivs.model import load_model

    indices = {f["index"] for f in labels["frames"]}
    assert len(indices) >= 5 and indices >= HELD_OUT
    frames = read_frames(vtest, indices)
    model = load_model("person", runtime=runtime)
    detections = {}
    for i, pixels in frames.items():
        det = model(pixels)
        assert set(det.class_id.tolist()) <= {0}
        detections[i] = det.xyxy
    model.close()
    recall, fps = evaluate(labels, detections)
    held_out = {"frames": [f for f in labels["frames"] if f["index"] in HELD_OUT]}
    held_recall, _ = evaluate(held_out, detections)
    print(f"{runtime}: person recall {recall:.3f} (held-out {held_recall:.3f}), false positives per frame {fps}")
    assert recall >= 0.8
    assert held_recall >= 0.8
    assert max(fps.values()) <= 1


def test_evaluation_can_fail():
    # The metric itself: boxes shifted by half their width match nothing.
    labels = {
        "frames": [
            {
                "index": 0,
                "people": [
                    {"box": [0, 0, 10, 20], "difficult": False},
                    {"box": [50, 0, 60, 20], "difficult": True},
                ],
            }
        ]
    }
    recall, fps = evaluate(labels, {0: np.array([[5, 0, 15, 20], [50, 0, 60, 20]], np.float32)})
    assert recall == 0.0 and fps == {0: 1}
    recall, fps = evaluate(labels, {0: np.array([[1, 0, 10, 20]], np.float32)})
    assert recall == 1.0 and fps == {0: 0}


def test_classifier_cat_and_espresso(classifier_model):
    from skimage import data

    cat = classifier_model(np.ascontiguousarray(data.chelsea()))
    labels = classifier_model.labels
    assert labels[int(cat.class_id[0])] in {
        "tabby",
        "tiger cat",
        "Egyptian cat",
        "Persian cat",
        "Siamese cat",
    }
    coffee = classifier_model(np.ascontiguousarray(data.coffee()))
    assert labels[int(coffee.class_id[0])] == "espresso"
    assert coffee.confidence[0] > 0.5
    # The box of a classification is the region it saw: the centred square of the frame.
    h, w = data.coffee().shape[:2]
    assert coffee.xyxy[0].tolist() == [(w - h) / 2, 0.0, (w + h) / 2, float(h)]


STILLS = json.loads((DATA / "still_people.json").read_text())


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("image", STILLS["images"], ids=lambda im: im["file"])
def test_large_and_small_people_are_one_box_each(runtime: str, image: dict, media: Path):
    """Hand-labelled stills (test only, tests/data/README.md): messi5's player, larger than the
    tiles' overlap, is one box; both people in each basketball frame are found; nothing else."""
    import cv2

    from ivs.model import load_model

    pixels = cv2.cvtColor(cv2.imread(str(media / image["file"])), cv2.COLOR_BGR2RGB)
    model = load_model("person", runtime=runtime)
    try:
        assert model.isp.tiles == (2, 1) and model.isp.full_frame  # the shipped layout
        det = model(pixels)
    finally:
        model.close()
    recall, fps = evaluate({"frames": [{"index": 0, "people": image["people"]}]}, {0: det.xyxy})
    assert recall == 1.0 and fps == {0: 0}, (image["file"], det.xyxy.tolist())
