"""Top-1 agreement of the int8 `classifier` with its fp32 model on 108 real images.

Run in the main venv:

    .venv/bin/python zoo/classifier/check_int8.py                  # the packed zoo model
    .venv/bin/python zoo/classifier/check_int8.py --int8 x.onnx     # any int8 ONNX model

Requirement: top-1 agreement int8 vs fp32 >= 95 % on at least 100 real images, none of them
calibration images. The set is fixed (written down before any tuning) and holds every image
of each source, hard ones included:

    18  skimage bundled images not among the calibration stills: brick, cell, checkerboard,
        clock, coins, colorwheel, grass, gravel, hubble_deep_field, immunohistochemistry,
        logo, microaneurysms, moon, page, retina, text, shepp_logan_phantom,
        stereo_motorcycle (left)
    40  skimage.data.lfw_subset()[0:40] (25x25 grey faces)
    25  vtest.avi frames 10, 40, 70, ... 730 (i = 10 mod 30; calibration uses i = 3 mod 25)
    25  Megamind.avi frames round(linspace(0, 269, 25))

The calibration images (zoo/build.py calibration_folder(): vtest i = 3 mod 25, the four
.cache/media stills and skimage astronaut/chelsea/coffee/rocket/horse/camera) are not in it.
Every image goes through the ivs ISP of spec.json (centred crop, INTER_AREA, (x-mean)/std).

Prints the agreement and exits 1 below 0.95 (2 when the set has fewer than 100 images).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from skimage import data

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ivs.isp import InputSpec, Isp  # noqa: E402
from ivs.package.pack import load_spec  # noqa: E402

MEDIA = ROOT / ".cache" / "media"
BUILD = ROOT / "zoo" / "build" / "classifier"
PACKAGE = ROOT / "src" / "ivs" / "zoo" / "classifier.ivsm"
THRESHOLD = 0.95
MIN_IMAGES = 100

SKIMAGE = [
    "brick",
    "cell",
    "checkerboard",
    "clock",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "text",
    "shepp_logan_phantom",
]
LFW = range(0, 40)
VTEST = set(range(10, 10 + 30 * 25, 30))  # 10, 40, ... 730
MEGAMIND = {int(round(x)) for x in np.linspace(0, 269, 25)}


def to_rgb(img: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    a = np.asarray(img)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = np.clip(np.round(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.dstack([a] * 3)
    return np.ascontiguousarray(a[..., :3])


def frames(path: Path, keep: set[int], tag: str) -> Iterator[tuple[str, npt.NDArray[np.uint8]]]:
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in keep:
                yield f"{tag}_{i:04d}", frame.to_ndarray(format="rgb24")
            if i >= max(keep):
                break


def evaluation_set() -> Iterator[tuple[str, npt.NDArray[np.uint8]]]:
    for name in SKIMAGE:
        yield f"skimage_{name}", to_rgb(getattr(data, name)())
    yield "skimage_motorcycle_left", to_rgb(data.stereo_motorcycle()[0])
    faces = data.lfw_subset()
    for i in LFW:
        yield f"lfw_{i:03d}", to_rgb(faces[i])
    yield from frames(MEDIA / "vtest.avi", VTEST, "vtest")
    yield from frames(MEDIA / "Megamind.avi", MEGAMIND, "megamind")


def session(model: bytes, threads: int = 2) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def packed_model(package: Path) -> bytes:
    with zipfile.ZipFile(io.BytesIO(package.read_bytes())) as z:
        return z.read("model.onnx")


def softmax(z: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    e = np.exp(z.astype(np.float64) - z.max())
    return e / e.sum()  # type: ignore[no-any-return]


def latency_ms(sess: ort.InferenceSession, name: str, x: npt.NDArray[np.float32], runs: int) -> float:
    for _ in range(5):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--int8", type=Path, help="int8 ONNX model (default: model.onnx of the package)")
    ap.add_argument("--package", type=Path, default=PACKAGE)
    ap.add_argument("--fp32", type=Path, default=BUILD / "model.fp32.onnx")
    ap.add_argument("--spec", type=Path, default=BUILD / "spec.json")
    ap.add_argument("--latency", type=int, default=0, metavar="N", help="also time N int8 runs")
    ap.add_argument("-v", "--verbose", action="store_true", help="list the disagreements")
    args = ap.parse_args(argv)

    spec = load_spec(args.spec)
    labels: list[str] = spec["labels"]
    isp = Isp(InputSpec.model_validate(spec["input"]))
    name = spec["input"]["name"]
    int8 = args.int8.read_bytes() if args.int8 else packed_model(args.package)
    s32, s8 = session(args.fp32.read_bytes()), session(int8)

    n = agree = sure = sure_agree = 0
    x = None
    for tag, rgb in evaluation_set():
        x = isp.process(rgb).tensor
        p32 = softmax(s32.run(None, {name: x})[0][0])
        p8 = softmax(s8.run(None, {name: x})[0][0])
        a, b = int(p32.argmax()), int(p8.argmax())
        n += 1
        agree += a == b
        if p32[a] >= 0.5:
            sure += 1
            sure_agree += a == b
        if a != b and args.verbose:
            print(f"  {tag:28s} fp32 {labels[a]} {p32[a]:.2f} | int8 {labels[b]} {p8[b]:.2f}")

    rate = agree / n
    print(f"top-1 agreement int8 vs fp32: {agree}/{n} = {rate:.3f} (fp32 p>=0.5: {sure_agree}/{sure})")
    if args.latency and x is not None:
        print(f"int8 latency (2 threads, median of {args.latency}): {latency_ms(s8, name, x, args.latency):.2f} ms")
    if n < MIN_IMAGES:
        print(f"only {n} images: the requirement needs {MIN_IMAGES} or more")
        return 2
    return 0 if rate >= THRESHOLD else 1


if __name__ == "__main__":
    sys.exit(main())
