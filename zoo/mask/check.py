"""Check the `mask` model, fp32 and int8, on face crops (run in ivs's main venv).

    .venv/bin/python zoo/mask/check.py --model zoo/build/mask

1. Builds face-crop calibration images in .cache/calib-mask/: lfw_subset faces 0-59 (25x25
   grey, upscaled to 224), faces found in Megamind.avi (OpenCV's Haar cascade, every 3rd
   frame, 20% margin), and surgical masks drawn (tests/data/make_mask_images.py's
   draw_surgical_mask, other colours) on half of each. None of the three test images is used.
2. Quantizes model.fp32.onnx with ivs's own quantize_onnx on those, and also on the generic
   zoo calibration folder (.cache/calib: vtest frames and stills) that zoo/build.py uses.
3. Runs fp32 and both int8 models, with ivs's ISP for preprocessing, on the test images
   (tests/data/astronaut_face.png, messi_face.png, astronaut_face_masked.png) and on held-out
   face crops: lfw_subset faces 60-99 as they are and with masks drawn on (80 crops).
Writes check.json next to the model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests" / "data"))

from make_mask_images import (  # noqa: E402
    MASK_EAR_LOOPS,
    MASK_NOSE_WIRE,
    MASK_OUTLINE,
    MASK_PLEATS,
    draw_surgical_mask,
)

from ivs.isp import InputSpec, Isp  # noqa: E402
from ivs.package.quantize import quantize_onnx  # noqa: E402

TEST_DATA = ROOT / "tests" / "data"
TESTS = {"astronaut_face.png": "no_mask", "messi_face.png": "no_mask", "astronaut_face_masked.png": "mask"}
CALIB = ROOT / ".cache" / "calib-mask"
# The astronaut geometry the MASK_* coordinates were drawn for (astronaut_face.png pixels):
# face sides at x = 13 and 115, eyes at y = 68.
REF_LEFT, REF_RIGHT, REF_EYES = 13, 115, 68
COLOURS = [  # (mask, pleats) RGB: light blue, white, pale green, pink, black
    ((160, 205, 235), (120, 165, 200)),
    ((238, 240, 242), (190, 195, 200)),
    ((175, 215, 190), (130, 170, 145)),
    ((235, 200, 210), (190, 150, 165)),
    ((40, 40, 45), (20, 20, 25)),
]


def mask_on(rgb: np.ndarray, left: float, right: float, eyes: float, colour: int) -> np.ndarray:
    """Draw the astronaut's mask, scaled to a face whose sides are at `left`/`right` and eyes at `eyes`."""
    s = (right - left) / (REF_RIGHT - REF_LEFT)
    fill, pleat = COLOURS[colour % len(COLOURS)]
    return draw_surgical_mask(
        rgb,
        MASK_OUTLINE,
        MASK_PLEATS,
        MASK_NOSE_WIRE,
        MASK_EAR_LOOPS,
        color=fill,
        pleat_color=pleat,
        scale=s,
        offset=(left - REF_LEFT * s, eyes - REF_EYES * s),
    )


def lfw_faces(indices: range) -> list[np.ndarray]:
    from skimage.data import lfw_subset

    faces = lfw_subset()[:100]  # the first 100 are faces, the rest non-faces
    out = []
    for i in indices:
        grey = (faces[i] * 255).round().astype(np.uint8)
        big = cv2.resize(grey, (224, 224), interpolation=cv2.INTER_CUBIC)
        out.append(np.ascontiguousarray(np.dstack([big] * 3)))
    return out


# lfw_subset faces are tight, aligned crops: in the 224x224 upscale the cheeks are at about
# x = 20 and 204 and the eyes at y = 80 (checked by eye on the drawn masks).
LFW_GEOMETRY = (20, 204, 80)


def megamind_faces() -> list[tuple[np.ndarray, tuple[float, float, float]]]:
    """Face crops (20% margin) from Megamind.avi and the face geometry inside each crop."""
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))
    out = []
    with av.open(str(ROOT / ".cache" / "media" / "Megamind.avi")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 3:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            for x, y, w, h in cascade.detectMultiScale(grey, 1.1, 6, minSize=(60, 60)):
                m = 0.2
                x1, y1 = max(0, int(x - m * w)), max(0, int(y - m * h))
                x2, y2 = min(rgb.shape[1], int(x + w * (1 + m))), min(rgb.shape[0], int(y + h * (1 + m)))
                crop = np.ascontiguousarray(rgb[y1:y2, x1:x2])
                # Haar boxes span brow to mouth, cheek to cheek: eyes at ~40% of the height.
                out.append((crop, (x - x1 + 0.05 * w, x - x1 + 0.95 * w, y - y1 + 0.4 * h)))
    return out


def build_calibration() -> list[Path]:
    CALIB.mkdir(parents=True, exist_ok=True)
    for old in CALIB.glob("*.png"):
        old.unlink()
    items: list[tuple[str, np.ndarray]] = []
    for i, face in enumerate(lfw_faces(range(0, 60))):
        items.append((f"lfw_{i:03d}.png", face))
        if i % 2:
            items.append((f"lfw_{i:03d}_mask.png", mask_on(face, *LFW_GEOMETRY, colour=i // 2)))
    mm = megamind_faces()
    step = max(1, len(mm) // 30)
    for k, (crop, geo) in enumerate(mm[::step][:30]):
        items.append((f"megamind_{k:02d}.png", crop))
        if k % 2:
            items.append((f"megamind_{k:02d}_mask.png", mask_on(crop, *geo, colour=k // 2)))
    for name, rgb in items:
        cv2.imwrite(str(CALIB / name), rgb[..., ::-1])
    print(f"calibration: {len(items)} face crops in {CALIB} ({len(mm)} Megamind faces found)")
    return sorted(CALIB.glob("*.png"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "zoo" / "build" / "mask")
    args = ap.parse_args()
    spec = json.loads((args.model / "spec.json").read_text())
    labels = spec["labels"]
    input_spec = InputSpec(**spec["input"])
    isp = Isp(input_spec)
    fp32 = (args.model / "model.fp32.onnx").read_bytes()
    q = spec["quantize"]

    models = {"fp32": fp32}
    models["int8_faces"] = quantize_onnx(
        fp32,
        input_spec,
        build_calibration(),
        per_channel=q["per_channel"],
        nodes_to_exclude=q["nodes_to_exclude"],
    )
    # The folder zoo/build.py packs every recipe with (vtest frames and stills, no face crops).
    zoo_build = importlib.util.spec_from_file_location("zoo_build", ROOT / "zoo" / "build.py")
    assert zoo_build is not None and zoo_build.loader is not None
    module = importlib.util.module_from_spec(zoo_build)
    zoo_build.loader.exec_module(module)
    images = sorted(p for p in module.calibration_folder().iterdir() if p.suffix in {".jpg", ".png"})
    models["int8_generic"] = quantize_onnx(
        fp32, input_spec, images, per_channel=q["per_channel"], nodes_to_exclude=q["nodes_to_exclude"]
    )
    (args.model / "model.int8_faces.onnx").write_bytes(models["int8_faces"])
    sessions = {k: ort.InferenceSession(v, providers=["CPUExecutionProvider"]) for k, v in models.items()}

    def probs(rgb: np.ndarray) -> dict[str, np.ndarray]:
        x = isp.process(rgb).tensor
        return {k: s.run(None, {input_spec.name: x})[0][0] for k, s in sessions.items()}

    report: dict[str, object] = {"tests": {}, "held_out": {}}
    print("\ntest images (p(mask), p(no_mask)):")
    ok = True
    for name, want in TESTS.items():
        rgb = np.ascontiguousarray(cv2.imread(str(TEST_DATA / name))[..., ::-1])
        p = probs(rgb)
        row = {k: {"label": labels[int(v.argmax())], "probs": [round(float(a), 4) for a in v]} for k, v in p.items()}
        report["tests"][name] = row  # type: ignore[index]
        for k, r in row.items():
            ok &= r["label"] == want
            print(f"  {name:28s} {k:13s} {r['label']:8s} {r['probs']}  (want {want})")

    held = [(f"lfw_{i:03d}", f) for i, f in zip(range(60, 100), lfw_faces(range(60, 100)), strict=True)]
    held += [(n + "_mask", mask_on(f, *LFW_GEOMETRY, colour=j)) for j, (n, f) in enumerate(held)]
    results = {k: [] for k in sessions}
    for _, rgb in held:
        for k, v in probs(rgb).items():
            results[k].append(v)
    arr = {k: np.array(v) for k, v in results.items()}
    truth = np.array([0 if n.endswith("_mask") else 1 for n, _ in held])
    print(f"\nheld-out face crops: {len(held)} (lfw_subset faces 60-99, plain and masked)")
    for k, a in arr.items():
        acc = float((a.argmax(1) == truth).mean())
        entry: dict[str, float] = {"accuracy": round(acc, 4)}
        line = f"  {k:13s} accuracy {acc:.3f}"
        if k != "fp32":
            agree = float((a.argmax(1) == arr["fp32"].argmax(1)).mean())
            dp = np.abs(a[:, 0] - arr["fp32"][:, 0])
            entry.update(
                agreement=round(agree, 4),
                mean_abs_dp=round(float(dp.mean()), 4),
                max_abs_dp=round(float(dp.max()), 4),
            )
            line += f"  top-1 agreement with fp32 {agree:.3f}  |dp(mask)| mean {dp.mean():.4f} max {dp.max():.4f}"
            for part, sel in (("plain", truth == 1), ("masked", truth == 0)):
                entry[f"agreement_{part}"] = round(float((a.argmax(1)[sel] == arr["fp32"].argmax(1)[sel]).mean()), 4)
        for part, sel in (("plain", truth == 1), ("masked", truth == 0)):
            entry[f"accuracy_{part}"] = round(float((a.argmax(1)[sel] == truth[sel]).mean()), 4)
        report["held_out"][k] = entry  # type: ignore[index]
        print(line, {kk: v for kk, v in entry.items() if kk.endswith(("plain", "masked"))})
    (args.model / "check.json").write_text(json.dumps(report, indent=1) + "\n")
    print("\nall test images as expected" if ok else "\nSOME TEST IMAGES WRONG")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
