"""A generated scene of moving figures, for tests and offline demos.

Deterministic for a given seed, with the true box of every figure at every frame
(`boxes_at`), so a test knows exactly what is where and when.

Spec strings: `synthetic`, `synthetic:640x480`, `synthetic:640x480@30`,
`synthetic:640x480@30:200` (frames; endless without).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from ivs.errors import SourceError
from ivs.frame import Frame
from ivs.sources.base import Source

_SPEC = re.compile(r"^synthetic(?::(\d+)x(\d+))?(?:@(\d+(?:\.\d+)?))?(?::(\d+))?$")


@dataclass(frozen=True)
class Figure:
    """A figure moving in a straight line, bouncing off the frame edges."""

    x: float
    y: float
    vx: float
    vy: float
    w: int
    h: int
    color: tuple[int, int, int]
    first_frame: int = 0
    last_frame: int | None = None
    sprite: npt.NDArray[np.uint8] | None = None
    """An RGB image drawn (resized to w x h) instead of the flat silhouette, e.g. a real
    person cut from a photo, so that a real detector sees a real object."""


class SyntheticSource(Source):
    live = False

    width: int
    height: int

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        frames: int | None = None,
        figures: list[Figure] | None = None,
        seed: int = 0,
    ) -> None:
        if width < 64 or height < 64:
            raise SourceError(f"synthetic scene {width}x{height} too small: expected at least 64x64")
        self.width, self.height, self.frame_count = width, height, frames
        self.fps: float | None = fps
        self.id = "synthetic"
        rng = np.random.default_rng(seed)
        if figures is None:
            figures = []
            for _ in range(4):
                h = int(rng.integers(height // 6, height // 3))
                figures.append(
                    Figure(
                        x=float(rng.uniform(0, width - h // 2)),
                        y=float(rng.uniform(0, height - h)),
                        vx=float(rng.uniform(-4, 4)),
                        vy=float(rng.uniform(-1, 1)),
                        w=h // 2,
                        h=h,
                        color=tuple(int(c) for c in rng.integers(40, 220, 3)),  # type: ignore[arg-type]
                    )
                )
        self.figures = figures
        # Fixed textured background so a frame is never trivially compressible.
        yy, xx = np.mgrid[0:height, 0:width]
        base = (80 + 60 * np.sin(xx / 37.0) * np.cos(yy / 23.0)).astype(np.int16)
        noise = rng.integers(-12, 12, (height, width), dtype=np.int16)
        grey = np.clip(base + noise, 0, 255).astype(np.uint8)
        self._background = np.dstack([grey, grey, (grey * 0.8).astype(np.uint8)])

    @classmethod
    def from_spec(cls, spec: str) -> SyntheticSource:
        m = _SPEC.match(spec)
        if m is None:
            raise SourceError(
                f"malformed synthetic source {spec!r}: expected synthetic[:WxH][@FPS][:FRAMES], "
                "e.g. synthetic:640x480@30:300"
            )
        w, h, fps, n = m.groups()
        return cls(
            width=int(w or 640),
            height=int(h or 480),
            fps=float(fps or 30.0),
            frames=int(n) if n else None,
        )

    def boxes_at(self, index: int) -> npt.NDArray[np.float32]:
        """True xyxy boxes of the figures visible at a frame, in figure order."""
        boxes = []
        for f in self.figures:
            if index < f.first_frame or (f.last_frame is not None and index > f.last_frame):
                continue
            t = index - f.first_frame
            x = _bounce(f.x + f.vx * t, self.width - f.w)
            y = _bounce(f.y + f.vy * t, self.height - f.h)
            boxes.append([x, y, x + f.w, y + f.h])
        return np.asarray(boxes, np.float32).reshape(-1, 4)

    def render(self, index: int) -> npt.NDArray[np.uint8]:
        img = self._background.copy()
        visible = [
            f for f in self.figures if index >= f.first_frame and (f.last_frame is None or index <= f.last_frame)
        ]
        for f, (x1, y1, x2, y2) in zip(visible, self.boxes_at(index), strict=True):
            if f.sprite is not None:
                x, y = round(float(x1)), round(float(y1))
                img[y : y + f.h, x : x + f.w] = cv2.resize(f.sprite, (f.w, f.h), interpolation=cv2.INTER_LINEAR)
                continue
            cx, w, h = int((x1 + x2) / 2), int(x2 - x1), int(y2 - y1)
            head = max(2, w // 3)
            cv2.circle(img, (cx, int(y1) + head), head, f.color, -1)
            cv2.ellipse(img, (cx, int(y1 + h * 0.6)), (w // 2, int(h * 0.4)), 0, 0, 360, f.color, -1)
        return img

    def frames(self) -> Iterator[Frame]:
        index = 0
        while self.frame_count is None or index < self.frame_count:
            yield Frame(self.render(index), index, time.monotonic_ns(), time.time(), self.id)
            index += 1

    def close(self) -> None:
        pass


def _bounce(pos: float, limit: float) -> float:
    """Position reflected into [0, limit], like a ball between two walls."""
    if limit <= 0:
        return 0.0
    period = 2 * limit
    p = pos % period
    return p if p <= limit else period - p
