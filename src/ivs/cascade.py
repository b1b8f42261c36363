"""Second stage: a classifier run on the crop of each detection (e.g. mask / no mask per face).

The first model finds objects; the second looks only at each object's pixels and answers a
question about it. The answer goes into the detection's `data` as per-detection arrays
`<name>.class_id` and `<name>.confidence`, so it follows the detection through filtering,
tracking and the metadata record (`attributes`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ivs.detections import Detections
from ivs.model import Model


def crop_box(
    xyxy: npt.NDArray[np.float32], width: int, height: int, margin: float, square: bool
) -> tuple[int, int, int, int]:
    """The crop around one box: grown by `margin` of its size on each side, optionally made
    square around its centre (classifiers of faces are trained on square crops), clipped to
    the frame. Returns x1, y1, x2, y2 in pixels."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if square:
        w = h = max(w, h)
    w, h = w * (1 + 2 * margin), h * (1 + 2 * margin)
    return (
        max(0, round(cx - w / 2)),
        max(0, round(cy - h / 2)),
        min(width, round(cx + w / 2)),
        min(height, round(cy + h / 2)),
    )


def classify_detections(
    classifier: Model,
    pixels: npt.NDArray[np.uint8],
    det: Detections,
    *,
    margin: float = 0.15,
    square: bool = True,
    min_size: int = 8,
) -> Detections:
    """Run `classifier` on each detection's crop and attach its top-1 to `det.data`.

    margin: fraction of the box size added on each side before cropping.
    square: crop a square around the box centre.
    min_size: boxes smaller than this (pixels, either side) get class_id -1, confidence 0.
    """
    name = classifier.manifest.name
    class_ids = np.full(len(det), -1, np.int64)
    scores = np.zeros(len(det), np.float32)
    h, w = pixels.shape[:2]
    for i in range(len(det)):
        x1, y1, x2, y2 = crop_box(det.xyxy[i], w, h, margin, square)
        if x2 - x1 < min_size or y2 - y1 < min_size:
            continue
        result = classifier(np.ascontiguousarray(pixels[y1:y2, x1:x2]))
        if len(result):
            class_ids[i] = int(result.class_id[0])
            scores[i] = float(result.confidence[0])
    out = det.with_boxes(det.xyxy)
    out.data[f"{name}.class_id"] = class_ids
    out.data[f"{name}.confidence"] = scores
    return out
