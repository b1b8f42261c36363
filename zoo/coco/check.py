"""Check a built `coco` model with the ivs YOLO decoder and ISP, fp32 and int8.

Runs in the main venv (ivs, onnxruntime, opencv, scikit-image):

    .venv/bin/python zoo/coco/check.py --model zoo/build/coco

1. fp32 ONNX through `ivs.isp.Isp` + `ivs.decode.yolo` on the check images must reproduce
   OpenCV's Darknet importer's detections (reference.json, written by build.py): same count,
   IoU >= 0.9, |score diff| < 0.02.
2. Quantize with ivs's own packer quantization (`ivs.package.quantize.quantize_onnx`:
   onnxruntime quantize_static, QDQ, int8 per-channel weights, uint8 activations, MinMax)
   calibrated on --calib (default .cache/calib, what zoo/build.py packs with: vtest frames
   at index 3 mod 25 plus stills), then measure the recall of the fp32 detections by the int8
   ones (same class, IoU >= 0.5) on vtest frames 0, 40, 80, ... (never 3 mod 25).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from ivs.decode import DecodeContext, get  # noqa: E402
from ivs.detections import Detections, box_iou  # noqa: E402
from ivs.isp import InputSpec, Isp  # noqa: E402
from ivs.package.quantize import calibration_images, quantize_onnx  # noqa: E402

MEDIA = ROOT / ".cache" / "media"


class Model:
    def __init__(self, model: bytes, spec: dict[str, Any], input_spec: InputSpec) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        self.sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        self.spec = spec
        self.isp = Isp(input_spec)
        self.ctx = DecodeContext(input_spec.width, input_spec.height, {})
        self.decode = get(spec["decoder"]["name"])

    def __call__(self, rgb: np.ndarray) -> Detections:
        roles = self.spec["outputs"]
        x = self.isp.process(rgb)
        raw = self.sess.run(list(roles.values()), {self.spec["input"]["name"]: x.tensor})
        det = self.decode(dict(zip(roles, raw, strict=True)), self.spec["decoder"]["params"], self.ctx)
        return det.with_boxes(x.box_map.to_frame(det.xyxy))


def recall(ref: Detections, got: Detections, iou: float = 0.5) -> tuple[int, int]:
    """(matched, total) of ref detections found in got (same class, greedy, best first)."""
    if len(ref) == 0:
        return 0, 0
    if len(got) == 0:
        return 0, len(ref)
    ious = box_iou(ref.xyxy, got.xyxy)
    ious[ref.class_id[:, None] != got.class_id[None, :]] = 0
    used: set[int] = set()
    n = 0
    for i in np.argsort(-ref.confidence):
        for j in np.argsort(-ious[i]):
            if ious[i, j] < iou:
                break
            if int(j) not in used:
                used.add(int(j))
                n += 1
                break
    return n, len(ref)


def vtest_frames(indices: list[int]) -> dict[int, np.ndarray]:
    frames: dict[int, np.ndarray] = {}
    cap = cv2.VideoCapture(str(MEDIA / "vtest.avi"))
    for i in indices:
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, bgr = cap.read()
        assert ok, i
        frames[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "zoo" / "build" / "coco")
    ap.add_argument("--calib", type=Path, default=ROOT / ".cache" / "calib")
    ap.add_argument("--eval", type=int, default=20, help="number of vtest frames to evaluate")
    ap.add_argument("--exclude", nargs="*", default=[], help="node names kept in fp32")
    args = ap.parse_args()
    spec = json.loads((args.model / "spec.json").read_text())
    input_spec = InputSpec(**spec["input"])
    fp32_bytes = (args.model / "model.fp32.onnx").read_bytes()
    fp32 = Model(fp32_bytes, spec, input_spec)
    labels = spec["labels"]

    # 1. fp32 + ivs ISP/decoder vs OpenCV's Darknet importer (reference.json).
    reference = json.loads((args.model / "reference.json").read_text())
    from skimage.data import astronaut

    stills = {"astronaut": astronaut(), "basketball1": cv2.imread(str(MEDIA / "basketball1.png"))[..., ::-1]}
    stills.update({f"vtest_{i}": f for i, f in vtest_frames([0, 100, 400]).items()})
    size = spec["input"]["width"]
    for name, rgb in stills.items():
        x = fp32.isp.process(np.ascontiguousarray(rgb))
        raw = fp32.sess.run(list(spec["outputs"].values()), {spec["input"]["name"]: x.tensor})
        d = fp32.decode(dict(zip(spec["outputs"], raw, strict=True)), spec["decoder"]["params"], fp32.ctx)
        ref = reference[name]["cv2_detections"]
        assert len(d) == len(ref), (name, len(d), len(ref))
        if ref:
            rb = np.asarray([r["xyxy"] for r in ref], np.float32)
            ious = box_iou(d.xyxy, rb)
            j = ious.argmax(1)
            mi = float(ious.max(1).min())
            ds = float(np.abs(d.confidence - np.asarray([ref[k]["score"] for k in j])).max())
            same = bool((d.class_id == np.asarray([ref[k]["class"] for k in j])).all())
        else:
            mi, ds, same = 1.0, 0.0, True
        print(f"{name}: ivs fp32 {len(d)} detections vs cv2 {len(ref)}: min IoU {mi:.4f}, max |dscore| {ds:.4f}")
        assert same and mi >= 0.9 and ds < 0.02, (name, mi, ds)
    del size

    # 2. int8.
    calib = calibration_images(args.calib)
    print(f"quantizing on {len(calib)} images from {args.calib} ...")
    int8 = Model(
        quantize_onnx(fp32_bytes, input_spec, calib, per_channel=True, nodes_to_exclude=args.exclude),
        spec,
        input_spec,
    )
    indices = [40 * k for k in range(args.eval)]
    assert not [i for i in indices if i % 25 == 3]
    m_all = n_all = extra = 0
    per_class: dict[str, list[int]] = {}
    for i, rgb in vtest_frames(indices).items():
        a, b = fp32(rgb), int8(rgb)
        m, n = recall(a, b)
        m_all, n_all = m_all + m, n_all + n
        extra += len(b) - recall(b, a)[0]
        for c in np.unique(a.class_id):
            mc, nc = recall(a[a.class_id == c], b[b.class_id == c])
            acc = per_class.setdefault(labels[int(c)], [0, 0])
            acc[0] += mc
            acc[1] += nc
        print(f"vtest {i:4d}: fp32 {len(a)} int8 {len(b)} recall {m}/{n}")
    print(f"int8 recall of fp32 detections (IoU 0.5, same class): {m_all}/{n_all} = {m_all / max(n_all, 1):.3f}")
    print(f"int8 detections with no fp32 match: {extra}")
    print("per class:", {k: f"{v[0]}/{v[1]}" for k, v in per_class.items()})


if __name__ == "__main__":
    main()
