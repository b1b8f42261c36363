"""Two-stage mask check on real faces: the face detector finds faces, the mask classifier
answers mask / no mask on each face's crop. Test images: tests/data/README.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ivs.cascade import classify_detections
from ivs.model import load_model
from tests.conftest import DATA

ASTRONAUT_BOX = (161, 34, 290, 201)  # where tests/data/make_mask_images.py cut the face
MESSI_BOX = (221, 85, 263, 140)


def rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path))[..., ::-1])


def astronaut(masked: bool) -> np.ndarray:
    from skimage import data

    img = np.ascontiguousarray(data.astronaut()).copy()
    if masked:  # the masked face crop put back where it was cut from
        x, y = ASTRONAUT_BOX[:2]
        crop = rgb(DATA / "astronaut_face_masked.png")
        img[y : y + crop.shape[0], x : x + crop.shape[1]] = crop
    return img


@pytest.fixture(scope="module")
def stages():
    face, mask = load_model("face", runtime="onnxruntime"), load_model("mask", runtime="onnxruntime")
    yield face, mask
    face.close()
    mask.close()


def answer(mask_model, det, i: int) -> str:
    return mask_model.labels[int(det.data["mask.class_id"][i])]


def inside(det, i: int, box) -> bool:
    cx, cy = (det.xyxy[i, 0] + det.xyxy[i, 2]) / 2, (det.xyxy[i, 1] + det.xyxy[i, 3]) / 2
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3]


@pytest.mark.parametrize(("masked", "expected"), [(False, "no_mask"), (True, "mask")])
def test_astronaut(stages, masked, expected):
    face, mask = stages
    img = astronaut(masked)
    det = classify_detections(mask, img, face(img))
    assert len(det) == 1 and inside(det, 0, ASTRONAUT_BOX)
    assert answer(mask, det, 0) == expected
    assert det.data["mask.confidence"][0] > 0.9


def test_messi_is_no_mask(stages, media):
    face, mask = stages
    img = rgb(media / "messi5.jpg")
    # His face is ~35 px in a 548x342 frame: below what the short-range detector sees in one
    # 128x128 input, so the frame is cut in 3x2 tiles.
    face.isp.tiles = (3, 2)
    try:
        det = classify_detections(mask, img, face(img))
    finally:
        face.isp.tiles = (1, 1)
    best = int(np.argmax(det.confidence))
    assert inside(det, best, MESSI_BOX) and det.confidence[best] > 0.8
    assert answer(mask, det, best) == "no_mask"


def test_classify_with_mask_in_the_sensor(tmp_path: Path):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), astronaut(False)[..., ::-1])
    cv2.imwrite(str(folder / "b.png"), astronaut(True)[..., ::-1])
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ivs",
            "run",
            "--source",
            str(folder),
            "--model",
            "face",
            "--classify-with",
            "mask",
            "--fps",
            "0",
            "--out",
            str(tmp_path / "m.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    records = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    answers = [[d["attributes"]["mask"]["label"] for d in rec["detections"]] for rec in records]
    assert answers == [["no_mask"], ["mask"]]
    assert all(rec["timings_ms"]["classify"] > 0 for rec in records)
    # The console's event lines say it too.
    assert "1 face (1 mask: no_mask)" in r.stderr and "1 face (1 mask: mask)" in r.stderr
