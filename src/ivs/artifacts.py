"""Pixel outputs for the non-default modes: `image`, `roi` and `tensor`.

Only constructed when the user asks for one of those modes; in `metadata` mode nothing in
this module runs, which is how "no pixel leaves" is kept by construction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from ivs.detections import Detections
from ivs.frame import Frame
from ivs.isp import IspOutput

Mode = Literal["metadata", "image", "roi", "tensor"]


class ArtifactWriter:
    def __init__(self, mode: Mode, folder: Path, labels: list[str]) -> None:
        if mode == "metadata":
            raise ValueError("metadata mode writes no artifacts")
        self.mode, self.folder, self.labels = mode, folder, labels
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, frame: Frame, inputs: list[IspOutput], det: Detections) -> str:
        """Write this frame's artifact; `inputs` are the model inputs (one per tile)."""
        name = f"{self.mode}_{frame.index:06d}"
        if self.mode == "image":
            path = self.folder / f"{name}.jpg"
            cv2.imwrite(str(path), draw(frame.pixels, det, self.labels)[..., ::-1])
        elif self.mode == "roi":
            path = self.folder / f"{name}.png"
            # The region the model saw; with tiling, the area all tiles cover.
            m = inputs[0].box_map
            x0, y0 = int(m.origin_x), int(m.origin_y)
            x1 = max(int(i.box_map.origin_x) + i.region.shape[1] for i in inputs)
            y1 = max(int(i.box_map.origin_y) + i.region.shape[0] for i in inputs)
            cv2.imwrite(str(path), np.ascontiguousarray(frame.pixels[y0:y1, x0:x1, ::-1]))
        else:
            path = self.folder / f"{name}.npy"
            np.save(path, np.concatenate([i.tensor for i in inputs]))  # tiles along the batch axis
        return str(path)


def draw(pixels: np.ndarray, det: Detections, labels: list[str]) -> np.ndarray:  # type: ignore[type-arg]
    """A copy of the frame (RGB) with boxes and labels drawn."""
    img = np.ascontiguousarray(pixels.copy())
    for i in range(len(det)):
        x1, y1, x2, y2 = (int(v) for v in det.xyxy[i])
        cid = int(det.class_id[i])
        label = labels[cid] if 0 <= cid < len(labels) else str(cid)
        cv2.rectangle(img, (x1, y1), (x2, y2), (0, 255, 0), 2)
        cv2.putText(
            img,
            f"{label} {det.confidence[i]:.2f}",
            (x1, max(12, y1 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 255, 0),
            1,
            cv2.LINE_AA,
        )
    return img
