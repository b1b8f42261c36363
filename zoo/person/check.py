"""Check a built `person` model with the ivs SSD decoder, fp32 and int8.

Runs in the main venv (ivs, onnxruntime, onnx, scikit-image):

    .venv/bin/python zoo/person/check.py --model zoo/build/person

1. fp32 ONNX + `ivs.decode.ssd` on the check images must reproduce the full TF graph's own
   detections (reference.json, written by build.py): same count, IoU >= 0.9, |score diff| < 0.01.
2. Quantize with onnxruntime quantize_static (QDQ, int8 weights per channel, uint8
   activations, MinMax) on --calib frames of vtest.avi, then measure the recall of the fp32
   detections by the int8 ones at IoU 0.5 on --eval other frames.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from ivs.decode import DecodeContext, get  # noqa: E402
from ivs.detections import Detections, box_iou  # noqa: E402


class Model:
    def __init__(self, path: Path, spec: dict[str, Any], anchors: np.ndarray) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.spec = spec
        inp = spec["input"]
        self.size = (inp["width"], inp["height"])
        self.mean = np.asarray(inp["mean"], np.float32)
        self.std = np.asarray(inp["std"], np.float32)
        self.ctx = DecodeContext(inp["width"], inp["height"], {"anchors": anchors})
        self.decode = get(spec["decoder"]["name"])

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        small = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        return ((small.astype(np.float32) - self.mean) / self.std)[None]

    def __call__(self, rgb: np.ndarray, **override: Any) -> Detections:
        roles = self.spec["outputs"]
        names = list(roles.values())
        raw = self.sess.run(names, {self.spec["input"]["name"]: self.preprocess(rgb)})
        outputs = dict(zip(roles.keys(), raw, strict=True))
        params = {**self.spec["decoder"]["params"], **override}
        return self.decode(outputs, params, self.ctx)


def vtest_frames(indices: list[int]) -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(ROOT / ".cache/media/vtest.avi"))
    want, out, i = set(indices), {}, 0
    while want - out.keys():
        ok, bgr = cap.read()
        if not ok:
            break
        if i in want:
            out[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        i += 1
    return out


def show(name: str, d: Detections) -> None:
    print(f"  {name}: {len(d)} detections")
    for b, s in zip(d.xyxy, d.confidence, strict=True):
        print(f"    xyxy=[{b[0]:.1f}, {b[1]:.1f}, {b[2]:.1f}, {b[3]:.1f}] score={s:.3f}")


def check_reference(model: Model, out: Path) -> None:
    from skimage.data import astronaut

    ref = json.loads((out / "reference.json").read_text())
    images = {"astronaut": astronaut(), "vtest_100": vtest_frames([100])[100]}
    for name, rgb in images.items():
        if name not in ref:
            continue
        tf_dets = ref[name]["tf_detections"]
        d = model(rgb, score_threshold=0.3)
        show(f"{name} fp32 (threshold 0.3)", d)
        assert len(d) == len(tf_dets), (name, len(d), len(tf_dets))
        tf_boxes = np.array([t["xyxy"] for t in tf_dets], np.float32).reshape(-1, 4)
        tf_scores = np.array([t["score"] for t in tf_dets], np.float32)
        iou = box_iou(d.xyxy, tf_boxes)
        match = iou.argmax(axis=1)
        assert (iou.max(axis=1) >= 0.9).all(), iou
        assert np.abs(d.confidence - tf_scores[match]).max() < 0.01
        print(f"  {name}: matches the TF graph's own {len(tf_dets)} detections (min IoU {iou.max(axis=1).min():.4f})")


class Frames(CalibrationDataReader):
    def __init__(self, model: Model, frames: list[np.ndarray]) -> None:
        self.it: Iterator[dict[str, np.ndarray]] = iter(
            [{model.spec["input"]["name"]: model.preprocess(f)} for f in frames]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.it, None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=ROOT / "zoo/build/person")
    ap.add_argument("--calib", type=int, default=50)
    ap.add_argument("--eval", type=int, default=20)
    ap.add_argument("--score", type=float, default=0.5)
    args = ap.parse_args()
    out: Path = args.model
    spec = json.loads((out / "spec.json").read_text())
    anchors = np.load(out / spec["assets"]["anchors"])
    fp32 = Model(out / "model.fp32.onnx", spec, anchors)
    print("fp32 vs TF graph:")
    check_reference(fp32, out)

    # Calibration: every 16th frame from 0; evaluation: every 40th from 8 (disjoint).
    calib_idx = [16 * i for i in range(args.calib)]
    eval_idx = [8 + 40 * i for i in range(args.eval)]
    frames = vtest_frames(calib_idx + eval_idx)
    q = spec["quantize"]
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        int8_path = Path(tmp) / "model.int8.onnx"
        quant_pre_process(str(out / "model.fp32.onnx"), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(int8_path),
            Frames(fp32, [frames[i] for i in calib_idx]),
            quant_format=QuantFormat.QDQ,
            per_channel=q["per_channel"],
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=q["nodes_to_exclude"],
        )
        int8 = Model(int8_path, spec, anchors)
        hit = total = extra = 0
        score_diffs: list[float] = []
        for i in eval_idx:
            a = fp32(frames[i], score_threshold=args.score)
            b = int8(frames[i], score_threshold=args.score)
            total += len(a)
            if len(a) and len(b):
                iou = box_iou(a.xyxy, b.xyxy)
                hit += int((iou.max(axis=1) >= 0.5).sum())
                extra += int((iou.max(axis=0) < 0.5).sum())
                j = iou.argmax(axis=1)
                ok = iou.max(axis=1) >= 0.5
                score_diffs += np.abs(a.confidence[ok] - b.confidence[j[ok]]).tolist()
            else:
                extra += len(b)
        recall = hit / max(total, 1)
        print(
            f"int8 (QDQ, per_channel={q['per_channel']}, U8 act/S8 weights, MinMax, "
            f"{len(calib_idx)} calib frames): recall of fp32 detections at IoU 0.5 over "
            f"{len(eval_idx)} frames = {hit}/{total} = {recall:.3f}; int8-only detections "
            f"{extra}; mean |score diff| {np.mean(score_diffs):.3f}"
        )
        print("int8 on astronaut / vtest 100:")
        from skimage.data import astronaut

        show("astronaut int8", int8(astronaut()))
        show("vtest_100 int8", int8(vtest_frames([100])[100]))
    if recall < 0.95:
        sys.exit(f"int8 recall {recall:.3f} < 0.95")


if __name__ == "__main__":
    main()
