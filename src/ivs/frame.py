"""`Frame`: one captured image and when it was captured."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Frame:
    """One frame from a source.

    pixels: HxWx3 uint8, RGB. Never reaches a sink in metadata-only mode.
    index: position in the source, 0-based and continuous (decoder order for a video).
    t_capture_ns: monotonic clock (`time.monotonic_ns`) when the frame was read, the
        reference for every latency ivs reports.
    wall_time: seconds since the epoch at capture, for humans and the hub.
    source_id: which source produced it.
    pts: presentation time in seconds from the container, where the source has one.
    """

    pixels: npt.NDArray[np.uint8]
    index: int
    t_capture_ns: int = field(default_factory=time.monotonic_ns)
    wall_time: float = field(default_factory=time.time)
    source_id: str = ""
    pts: float | None = None

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


@dataclass(frozen=True)
class Kpi:
    """What a sensor that runs the network itself (the IMX500) reports about one frame's
    inference, in milliseconds."""

    dnn_ms: float
    dsp_ms: float
