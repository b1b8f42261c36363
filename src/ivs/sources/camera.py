"""Local cameras (V4L2 on Linux, the OS's default backend elsewhere) through OpenCV."""

from __future__ import annotations

import time
from collections.abc import Iterator

import cv2
import numpy as np

from ivs.errors import SourceError
from ivs.frame import Frame


class CameraSource:
    live = True

    def __init__(self, index: int) -> None:
        self.index = index
        self.id = f"camera{index}"
        self._cap = cv2.VideoCapture(index)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(
                f"camera {index} cannot be opened: expected a connected camera at "
                f"/dev/video{index} that this user may read and no other program holds"
            )
        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        self.fps: float | None = fps if fps > 0 else None

    def frames(self) -> Iterator[Frame]:
        index = 0
        while True:
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                raise SourceError(
                    f"camera {self.index} stopped delivering frames after frame {index - 1}: "
                    "expected a steady stream (was it unplugged?)"
                )
            pixels = np.ascontiguousarray(bgr[..., ::-1], dtype=np.uint8)
            yield Frame(pixels, index, time.monotonic_ns(), time.time(), self.id)
            index += 1

    def close(self) -> None:
        self._cap.release()
