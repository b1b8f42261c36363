"""Redaction, on the sensor, before evidence is encoded: what may leave.

`none` is not a redaction: with policy `none` nothing is kept at all (`ivs.evidence`). With
`redacted`, every person box is pixelated (blocks of `block` pixels: faces, clothes and gait
unreadable, the scene's layout kept), or, with `faces`, each face the face detector finds is
blurred instead (people stay visible: for checking a mask or a count, not for identifying
anyone). `full` keeps the pixels. Region masks black out fixed areas (a window onto the street,
a screen) under every policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

UInt8Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Redaction:
    policy: str = "redacted"
    """"redacted" or "full"."""
    target: str = "persons"
    """With "redacted": "persons" (every box of `classes` pixelated) or "faces" (blurred)."""
    classes: frozenset[int] = frozenset({0})
    block: int = 12
    """Pixelation block size, pixels."""
    masks: Sequence[npt.NDArray[np.int32]] = field(default_factory=tuple)
    """Polygons (frame pixels) blacked out always."""

    def apply(self, image: UInt8Image, boxes: npt.NDArray[np.float32], classes: npt.NDArray[np.int64],
              faces: npt.NDArray[np.float32] | None = None) -> UInt8Image:  # fmt: skip
        """A redacted copy of `image` (RGB): `boxes`/`classes` are its detections, `faces` the
        face detector's boxes (with target "faces")."""
        out = image.copy()
        if self.policy == "redacted":
            if self.target == "faces":
                for box in faces if faces is not None else np.zeros((0, 4), np.float32):
                    _blur(out, box)
            else:
                for box, cls in zip(boxes, classes, strict=True):
                    if int(cls) in self.classes:
                        _pixelate(out, box, self.block)
        for polygon in self.masks:
            cv2.fillPoly(out, [polygon], (0, 0, 0))
        return out


def _clip(image: UInt8Image, box: npt.NDArray[np.float32], pad: float = 0.0) -> tuple[int, int, int, int] | None:
    h, w = image.shape[:2]
    bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
    x1 = max(0, int(np.floor(box[0] - pad * bw)))
    y1 = max(0, int(np.floor(box[1] - pad * bh)))
    x2 = min(w, int(np.ceil(box[2] + pad * bw)))
    y2 = min(h, int(np.ceil(box[3] + pad * bh)))
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def _pixelate(image: UInt8Image, box: npt.NDArray[np.float32], block: int) -> None:
    """Average over `block`-pixel cells inside the box (a little beyond it: a box is tight)."""
    r = _clip(image, box, pad=0.05)
    if r is None:
        return
    x1, y1, x2, y2 = r
    region = image[y1:y2, x1:x2]
    small = cv2.resize(region, (max(1, (x2 - x1) // block), max(1, (y2 - y1) // block)), interpolation=cv2.INTER_AREA)
    image[y1:y2, x1:x2] = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)


def _blur(image: UInt8Image, box: npt.NDArray[np.float32]) -> None:
    r = _clip(image, box, pad=0.15)
    if r is None:
        return
    x1, y1, x2, y2 = r
    k = max(3, ((max(x2 - x1, y2 - y1) // 3) | 1))
    image[y1:y2, x1:x2] = cv2.GaussianBlur(image[y1:y2, x1:x2], (k, k), 0)


def high_frequency(image: UInt8Image, box: npt.NDArray[np.float32] | Sequence[float]) -> float:
    """Fine detail inside a box: the median absolute Laplacian of its grey levels. A pixelated
    block is flat inside (Laplacian 0), only its edges on a coarse grid are not: the median
    looks past them, where a variance would count them."""
    r = _clip(image, np.asarray(box, np.float32))
    if r is None:
        return 0.0
    x1, y1, x2, y2 = r
    grey = cv2.cvtColor(np.ascontiguousarray(image[y1:y2, x1:x2]), cv2.COLOR_RGB2GRAY)
    return float(np.median(np.abs(cv2.Laplacian(grey, cv2.CV_64F))))
