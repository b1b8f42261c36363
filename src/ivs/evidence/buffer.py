"""The pre-event buffer: the last seconds of frames, JPEG-encoded, within a memory cap.

Each processed frame is kept as JPEG bytes (quality `quality`) with its capture times and its
detections' boxes (for redaction when it is used). Frames older than `keep_s` (the longest
look-back any evidence needs) are dropped, and so are the oldest when the bytes would pass
`memory_mib`. Nothing here leaves the process: frames are redacted only when a clip or a
snapshot is made from them (`ivs.evidence.recorder`).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Buffered:
    index: int
    t_source: float
    wall_time: float
    jpeg: bytes
    boxes: npt.NDArray[np.float32]
    classes: npt.NDArray[np.int64]

    def image(self) -> npt.NDArray[np.uint8]:
        """The frame as RGB pixels."""
        bgr = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:  # our own encoding: never, but say so if it happens
            raise ValueError(f"frame {self.index}: its buffered JPEG does not decode")
        return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


class FrameBuffer:
    def __init__(self, keep_s: float, memory_mib: float, quality: int = 85) -> None:
        if keep_s <= 0 or memory_mib <= 0:
            raise ValueError(f"keep_s {keep_s}, memory_mib {memory_mib}: expected both > 0")
        self.keep_s, self.cap_bytes, self.quality = keep_s, int(memory_mib * 2**20), quality
        self._frames: deque[Buffered] = deque()
        self.bytes = 0
        self.evicted_for_memory = 0
        """Frames dropped before `keep_s` because of the cap: raise `memory_mib` if this grows."""
        self._lock = threading.Lock()

    def add(self, index: int, t_source: float, wall_time: float, pixels: npt.NDArray[np.uint8],
            boxes: npt.NDArray[np.float32], classes: npt.NDArray[np.int64]) -> None:  # fmt: skip
        ok, data = cv2.imencode(
            ".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.quality]
        )
        if not ok:
            return
        item = Buffered(index, t_source, wall_time, data.tobytes(), boxes.copy(), classes.copy())
        with self._lock:
            self._frames.append(item)
            self.bytes += len(item.jpeg)
            while self._frames and self._frames[0].t_source < t_source - self.keep_s:
                self.bytes -= len(self._frames.popleft().jpeg)
            while self.bytes > self.cap_bytes and len(self._frames) > 1:
                self.bytes -= len(self._frames.popleft().jpeg)
                self.evicted_for_memory += 1

    def between(self, start: float, end: float, *, clock: str = "source") -> list[Buffered]:
        """The frames with `start <= t <= end` on the source clock (or "wall": wall-clock time)."""
        with self._lock:
            frames = list(self._frames)
        if clock == "wall":
            return [f for f in frames if start <= f.wall_time <= end]
        return [f for f in frames if start <= f.t_source <= end]

    def latest(self) -> Buffered | None:
        with self._lock:
            return self._frames[-1] if self._frames else None

    def __len__(self) -> int:
        return len(self._frames)
