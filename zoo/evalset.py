"""The fixed evaluation inputs of the int8-vs-fp32 checks, shared by zoo/build.py (which
records the fp32 results beside each recipe) and tests/test_int8.py (which compares the
shipped int8 packages with them).

None of them is a calibration image (zoo/build.py calibration_folder(): vtest frames at
i = 3 mod 25, the four .cache/media stills and skimage astronaut/chelsea/coffee/rocket/
horse/camera). The classifier set was written down before any quantization tuning and keeps
every image of each source, hard ones included:

    18  skimage bundled images not among the calibration stills (and the left image of
        stereo_motorcycle)
    40  skimage.data.lfw_subset()[0:40] (25x25 grey faces)
    25  vtest.avi frames 10, 40, 70, ... 730 (i = 10 mod 30)
    25  Megamind.avi frames round(linspace(0, 269, 25))

The detector set is vtest.avi frames 10, 50, 90, ... 770 (i = 10 mod 40); the face set is
Megamind.avi frames 10, 23, 36, ... (i = 10 mod 13, 20 frames) and skimage's astronaut.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

MEDIA = Path(__file__).resolve().parent.parent / ".cache" / "media"

SKIMAGE = [
    "brick", "cell", "checkerboard", "clock", "coins", "colorwheel", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page",
    "retina", "text", "shepp_logan_phantom",
]  # fmt: skip
LFW = range(0, 40)
VTEST_CLASSIFIER = set(range(10, 10 + 30 * 25, 30))
MEGAMIND = {round(float(x)) for x in np.linspace(0, 269, 25)}
VTEST_DETECTOR = set(range(10, 795, 40))


def to_rgb(img: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    a = np.asarray(img)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = np.clip(np.round(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.dstack([a] * 3)
    return np.ascontiguousarray(a[..., :3])


def video_frames(path: Path, keep: set[int], tag: str) -> Iterator[tuple[str, npt.NDArray[np.uint8]]]:
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in keep:
                yield f"{tag}_{i:04d}", np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
            if i >= max(keep):
                break


def classifier_images() -> Iterator[tuple[str, npt.NDArray[np.uint8]]]:
    from skimage import data

    sk: Any = data
    for name in SKIMAGE:
        yield f"skimage_{name}", to_rgb(getattr(sk, name)())
    yield "skimage_motorcycle_left", to_rgb(sk.stereo_motorcycle()[0])
    faces = sk.lfw_subset()
    for i in LFW:
        yield f"lfw_{i:03d}", to_rgb(faces[i])
    yield from video_frames(MEDIA / "vtest.avi", VTEST_CLASSIFIER, "vtest")
    yield from video_frames(MEDIA / "Megamind.avi", MEGAMIND, "megamind")


def detector_frames() -> Iterator[tuple[str, npt.NDArray[np.uint8]]]:
    yield from video_frames(MEDIA / "vtest.avi", VTEST_DETECTOR, "vtest")


def face_frames() -> Iterator[tuple[str, npt.NDArray[np.uint8]]]:
    from skimage import data

    yield "skimage_astronaut", to_rgb(data.astronaut())
    yield from video_frames(MEDIA / "Megamind.avi", set(range(10, 10 + 13 * 20, 13)), "megamind")
