"""Check a built `face` model with the ivs `blazeface` decoder, fp32 and int8.

Runs in the main venv (ivs, onnxruntime, scikit-image, av):

    .venv/bin/python zoo/face/check.py --model zoo/build/face

1. fp32 ONNX + ivs's Isp (letterbox) + `ivs.decode.blazeface` must reproduce the TFLite
   model's own detections decoded the MediaPipe way (reference.json, written by build.py):
   same count, IoU >= 0.99, |score diff| < 1e-3.
2. Quantize with ivs's own `quantize_onnx` (the spec's "quantize" options) on two calibration
   sets: `.cache/calib` alone (what zoo/build.py packs with) and `.cache/calib` plus face
   images (lfw_subset faces upscaled, Megamind frames not used for evaluation). Then compare
   int8 with fp32 on astronaut, messi5, chelsea and 20 Megamind frames: recall of the fp32
   faces at IoU 0.5, and the keypoint error in fp32 box widths.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import av
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
EVAL_FRAMES = [10 + 13 * k for k in range(20)]  # Megamind.avi, 270 frames
CALIB_FRAMES = [i for i in range(4, 270, 27) if i not in EVAL_FRAMES]


class Model:
    def __init__(self, onnx_bytes: bytes, spec: dict[str, Any], anchors: np.ndarray) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        self.sess = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
        self.spec = spec
        self.input = InputSpec(**spec["input"])
        self.isp = Isp(self.input)
        self.ctx = DecodeContext(self.input.width, self.input.height, {"anchors": anchors})
        self.decode = get(spec["decoder"]["name"])

    def __call__(self, rgb: np.ndarray, *, frame_space: bool = True) -> Detections:
        out = self.isp.process(rgb)
        roles = self.spec["outputs"]
        tensors = self.sess.run(list(roles.values()), {self.input.name: out.tensor})
        d = self.decode(dict(zip(roles, tensors, strict=True)), self.spec["decoder"]["params"], self.ctx)
        if not frame_space:
            return d
        kp = None if d.keypoints is None else out.box_map.points_to_frame(d.keypoints)
        return d.with_boxes(out.box_map.to_frame(d.xyxy), kp)


def megamind_frames(indices: list[int]) -> dict[int, np.ndarray]:
    want, frames = set(indices), {}
    with av.open(str(MEDIA / "Megamind.avi")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in want:
                frames[i] = frame.to_ndarray(format="rgb24")
    return frames


def eval_images() -> dict[str, np.ndarray]:
    from skimage import data

    images = {
        "astronaut": data.astronaut(),
        "messi5": cv2.cvtColor(cv2.imread(str(MEDIA / "messi5.jpg")), cv2.COLOR_BGR2RGB),
        "chelsea": data.chelsea(),
    }
    images["messi5_crop"] = np.ascontiguousarray(images["messi5"][0:200, 150:400])
    for i, rgb in megamind_frames(EVAL_FRAMES).items():
        images[f"megamind_{i:03d}"] = rgb
    return images


def face_calibration(folder: Path) -> None:
    """lfw_subset faces (25x25 grey, the first 100 are faces) upscaled to 112x112, and
    Megamind frames that are not evaluated."""
    from skimage import data

    faces = data.lfw_subset()[:100:5]
    for k, face in enumerate(faces):
        grey = cv2.resize((face * 255).astype(np.uint8), (112, 112), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"lfw_{k:02d}.png"), np.dstack([grey] * 3))
    for i, rgb in megamind_frames(CALIB_FRAMES).items():
        cv2.imwrite(str(folder / f"megamind_{i:03d}.png"), rgb[..., ::-1])


def show(name: str, d: Detections) -> str:
    return f"{name}: " + (
        ", ".join(f"{s:.3f}@[{', '.join(f'{v:.0f}' for v in b)}]" for b, s in zip(d.xyxy, d.confidence, strict=True))
        or "none"
    )


def check_reference(model: Model, images: dict[str, np.ndarray], reference: dict[str, Any]) -> None:
    for name, ref in reference.items():
        d = model(images[name], frame_space=False)
        want = ref["tflite_detections"]
        assert len(d) == len(want), (name, len(d), len(want))
        for k, w in enumerate(want):
            iou = float(box_iou(d.xyxy[k : k + 1], np.asarray([w["xyxy"]], np.float32))[0, 0])
            assert iou >= 0.99 and abs(float(d.confidence[k]) - w["score"]) < 1e-3, (name, iou, w)
            assert d.keypoints is not None
            kd = np.abs(d.keypoints[k, :, :2] - np.asarray(w["keypoints"], np.float32)).max()
            assert kd < 0.1, (name, kd)
        print(f"reference {name}: {len(d)} face(s) match TFLite + MediaPipe decode")


def compare(fp: dict[str, Detections], q: dict[str, Detections]) -> dict[str, float]:
    total = found = extra = 0
    kp_err: list[float] = []
    for name, a in fp.items():
        b = q[name]
        total += len(a)
        if len(a) and len(b):
            iou = box_iou(a.xyxy, b.xyxy)
            best = iou.argmax(axis=1)
            hit = iou.max(axis=1) >= 0.5
            found += int(hit.sum())
            assert a.keypoints is not None and b.keypoints is not None
            for i in np.flatnonzero(hit):
                width = float(a.xyxy[i, 2] - a.xyxy[i, 0])
                err = np.linalg.norm(a.keypoints[i, :, :2] - b.keypoints[best[i], :, :2], axis=1)
                kp_err.append(float(err.mean()) / width)
            extra += int((box_iou(b.xyxy, a.xyxy).max(axis=1) < 0.5).sum()) if len(a) else len(b)
        else:
            extra += len(b)
    return {
        "fp32_faces": total,
        "recall": found / max(total, 1),
        "int8_extra": extra,
        "kp_err_mean": float(np.mean(kp_err)) if kp_err else 0.0,
        "kp_err_max": float(np.max(kp_err)) if kp_err else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "zoo" / "build" / "face")
    ap.add_argument("--calib", type=Path, default=ROOT / ".cache" / "calib")
    ap.add_argument("--save-int8", type=Path, help="write the int8 model (calib + faces) here")
    args = ap.parse_args()

    spec = json.loads((args.model / "spec.json").read_text())
    anchors = np.load(args.model / spec["assets"]["anchors"])
    fp32_bytes = (args.model / "model.fp32.onnx").read_bytes()
    fp32 = Model(fp32_bytes, spec, anchors)
    images = eval_images()
    check_reference(fp32, images, json.loads((args.model / "reference.json").read_text()))

    fp = {name: fp32(rgb) for name, rgb in images.items()}
    for name in ("astronaut", "messi5", "messi5_crop", "chelsea"):
        print("fp32", show(name, fp[name]))
    mm = [len(fp[n]) for n in fp if n.startswith("megamind")]
    print(f"fp32 megamind: {sum(mm)} faces in {len(mm)} frames, per frame {mm}")

    base = calibration_images(args.calib)
    q_opts = spec.get("quantize", {})
    with tempfile.TemporaryDirectory() as tmp:
        both = Path(tmp)
        for p in base:
            shutil.copy(p, both / p.name)
        face_calibration(both)
        sets = {"calib": base, "calib+faces": calibration_images(both)}
        for label, paths in sets.items():
            int8_bytes = quantize_onnx(
                fp32_bytes,
                fp32.input,
                paths,
                per_channel=q_opts.get("per_channel", True),
                nodes_to_exclude=q_opts.get("nodes_to_exclude", []),
                calibrate_method=q_opts.get("calibrate_method", "minmax"),
            )
            if label == "calib+faces" and args.save_int8:
                args.save_int8.write_bytes(int8_bytes)
            int8 = Model(int8_bytes, spec, anchors)
            q = {name: int8(rgb) for name, rgb in images.items()}
            print(f"--- int8, calibrated on {label} ({len(paths)} images)")
            for name in ("astronaut", "messi5", "messi5_crop", "chelsea"):
                print("int8", show(name, q[name]))
            mm_q = [len(q[n]) for n in q if n.startswith("megamind")]
            print(f"int8 megamind: {sum(mm_q)} faces, per frame {mm_q}")
            stats = compare(fp, q)
            print(
                f"int8 vs fp32: recall {stats['recall']:.3f} of {stats['fp32_faces']} fp32 faces at IoU 0.5, "
                f"{stats['int8_extra']} extra int8 faces, keypoint error mean {stats['kp_err_mean']:.3f} "
                f"max {stats['kp_err_max']:.3f} of the face width"
            )
            score_diff = [
                abs(float(fp[n].confidence[0]) - float(q[n].confidence[0])) for n in images if len(fp[n]) and len(q[n])
            ]
            print(f"top score |fp32 - int8|: mean {np.mean(score_diff):.3f} max {np.max(score_diff):.3f}")
            assert not len(q["chelsea"]), "int8 finds a face on chelsea (a cat)"


if __name__ == "__main__":
    main()
