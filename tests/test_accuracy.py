"""Detection and classification are real: the zoo models on real images and video.

The person boxes in tests/data/vtest_people.json were drawn by hand (see tests/data/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ivs.bench.layouts import HELD_OUT, evaluate
from tests.conftest import DATA, read_frames


@pytest.fixture(scope="module")
def labels() -> dict:
    return json.loads((DATA / "vtest_people.json").read_text())


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
    recall, fps = evaluate(labels["frames"], detections)
    held_recall, _ = evaluate([f for f in labels["frames"] if f["index"] in HELD_OUT], detections)
    print(f"{runtime}: person recall {recall:.3f} (held-out {held_recall:.3f}), false positives per frame {fps}")
    assert recall >= 0.8
    assert held_recall >= 0.8
    assert max(fps.values()) <= 1


def test_evaluation_can_fail():
    # The metric itself: boxes shifted by half their width match nothing.
    frames = [
        {
            "index": 0,
            "people": [
                {"box": [0, 0, 10, 20], "difficult": False},
                {"box": [50, 0, 60, 20], "difficult": True},
            ],
        }
    ]
    recall, fps = evaluate(frames, {0: np.array([[5, 0, 15, 20], [50, 0, 60, 20]], np.float32)})
    assert recall == 0.0 and fps == {0: 1}
    recall, fps = evaluate(frames, {0: np.array([[1, 0, 10, 20]], np.float32)})
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
    recall, fps = evaluate([{"index": 0, "people": image["people"]}], {0: det.xyxy})
    assert recall == 1.0 and fps == {0: 0}, (image["file"], det.xyxy.tolist())


def test_layout_table_reports_every_layout_on_both_label_sets(media: Path):
    """`python -m ivs.bench.layouts`: the shipped layout holds on tuning, held-out and still
    labels; tiles alone break messi5's player into pieces, which the whole-frame pass mends."""
    from ivs.bench.layouts import LAYOUTS, bench_layouts, markdown

    rows = bench_layouts(media, DATA, ("onnxruntime",))
    assert [(r.tiles, r.full_frame) for r in rows] == list(LAYOUTS)
    shipped = next(r for r in rows if r.tiles == (2, 1) and r.full_frame)
    assert shipped.tuning_recall >= 0.8 and shipped.held_out_recall >= 0.8 and shipped.tuning_worst_fp <= 1
    assert (shipped.stills_recall, shipped.stills_fp, shipped.messi_boxes) == (1.0, 0, 1)
    tiles_alone = next(r for r in rows if r.tiles == (2, 1) and not r.full_frame)
    assert tiles_alone.messi_boxes > 1
    assert "| onnxruntime | 2x1 + whole frame |" in markdown(rows)
