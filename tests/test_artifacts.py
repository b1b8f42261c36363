"""The pixel output modes write what they say, checked by content, not by file name: `image` is
the frame with the record's boxes drawn on it, `roi` exactly the ROI's pixels, `tensor` exactly
the model input the ISP made of that frame. Each runs as a user runs it, `ivs run --mode`, on
the sample street video; the expected pixels come from decoding the video here with PyAV."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

from ivs.isp import Isp, Roi
from ivs.package.reader import read_package
from ivs.package.zoo import resolve

FRAMES = 6


def decoded(vtest: Path) -> list[npt.NDArray[np.uint8]]:
    with av.open(str(vtest)) as c:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(FRAMES), c.decode(video=0), strict=False)]


def run(tmp_path: Path, vtest: Path, mode: str, model: str, *extra: str) -> list[dict[str, Any]]:
    out, folder = tmp_path / f"{mode}.jsonl", tmp_path / mode
    args = ["--source", str(vtest), "--max-frames", str(FRAMES), "--fps", "0", "--model", model]
    args += ["--runtime", "onnxruntime", "--mode", mode, "--artifacts", str(folder), "--out", str(out), "-q"]
    done = subprocess.run([sys.executable, "-m", "ivs", "run", *args, *extra], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert all(Path(r["artifact"]).parent == folder for r in records)
    return records


def read_rgb(path: str) -> npt.NDArray[np.uint8]:
    return np.asarray(cv2.imread(path, cv2.IMREAD_COLOR)[..., ::-1], np.uint8)


def test_image_mode_draws_each_records_boxes_on_its_frame(tmp_path: Path, vtest: Path) -> None:
    frames = decoded(vtest)
    records = run(tmp_path, vtest, "image", "person")
    boxes = 0
    for record, frame in zip(records, frames, strict=True):
        image = read_rgb(record["artifact"])
        assert image.shape == frame.shape
        green = np.zeros(frame.shape[:2], bool)
        for det in record["detections"]:
            x1, y1, x2, y2 = (int(v) for v in det["box"])
            # The box's left and right edges (the label is written above its top edge): drawn in
            # green, 2 px wide, which the street behind them is not.
            for x in (x1, x2):
                edge = image[y1 + 2 : y2 - 1, x].astype(int)
                assert (edge[:, 1] > 180).mean() > 0.9 and (edge[:, 0] < 110).mean() > 0.9, (record["frame"], det)
                green[y1 : y2 + 1, max(0, x - 2) : x + 3] = True
            boxes += 1
        # Away from the boxes and their labels, the frame is itself (up to JPEG's loss).
        away = ~green
        for det in record["detections"]:
            x1, y1, x2, y2 = (int(v) for v in det["box"])
            away[max(0, y1 - 20) : y2 + 3, max(0, x1 - 3) : x2 + 120] = False
        assert np.abs(image[away].astype(int) - frame[away].astype(int)).mean() < 4.0
        original = frame[:, [int(d["box"][0]) for d in record["detections"]]].astype(int)
        assert original.size == 0 or not ((original[..., 1] > 180) & (original[..., 0] < 110)).mean() > 0.9
    assert boxes >= FRAMES, "people on every frame of the street video"


def test_roi_mode_writes_exactly_the_rois_pixels(tmp_path: Path, vtest: Path) -> None:
    frames = decoded(vtest)
    records = run(tmp_path, vtest, "roi", "person", "--roi", "100,50,320,240")
    for record, frame in zip(records, frames, strict=True):
        assert record["artifact"].endswith(".png")  # lossless: compared pixel for pixel
        assert np.array_equal(read_rgb(record["artifact"]), frame[50:290, 100:420])


def test_tensor_mode_writes_the_isp_output_of_each_frame(tmp_path: Path, vtest: Path) -> None:
    frames = decoded(vtest)
    records = run(tmp_path, vtest, "tensor", "classifier", "--roi", "40,16,700,540")
    spec = read_package(resolve("classifier")).manifest.input
    isp = Isp(spec, Roi(40, 16, 700, 540))
    for record, frame in zip(records, frames, strict=True):
        tensor = np.load(record["artifact"])
        assert tensor.dtype == np.float32 and tensor.shape == (1, 3, 224, 224)
        assert np.array_equal(tensor, isp.process(frame).tensor)
        # And by hand, without the ISP: the classifier crops the ROI's centred square (540x540
        # at x = 40 + 80), shrinks it to 224x224 by area averaging, then (x - 127.5) / 128, NCHW.
        square = frame[16:556, 120:660]
        by_hand = (cv2.resize(square, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) - 127.5) / 128
        assert np.abs(tensor[0].transpose(1, 2, 0) - by_hand).max() * 128 <= 1.0, "within a grey level"
    assert not np.array_equal(np.load(records[0]["artifact"]), np.load(records[-1]["artifact"])), "each its own frame"
