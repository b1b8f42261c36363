"""A folder of images, in name order, as frames."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ivs.errors import SourceError
from ivs.frame import Frame
from ivs.sources.base import Source

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class ImageFolderSource(Source):
    live = False
    fps: float | None = None

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.id = folder.name
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
        if not self.paths:
            raise SourceError(
                f"image folder {folder} holds no images: expected files ending in {', '.join(sorted(SUFFIXES))}"
            )

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SourceError(f"{path}: cannot be decoded: expected a readable image file")
            yield Frame(
                np.ascontiguousarray(bgr[..., ::-1]),
                index,
                time.monotonic_ns(),
                time.time(),
                self.id,
            )

    def close(self) -> None:
        pass
