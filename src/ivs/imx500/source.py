"""Frames of the IMX500: its metadata, no pixels (metadata-only: the image stream is never read).

- `CameraSource` (`imx500:NETWORK.rpk`): the Raspberry Pi AI Camera through picamera2, which is
  imported only here, only when such a source is opened.
- `ReplaySource` (`imx500-replay:FILE.npz`): a recording of that metadata (`recording.py`).

Both yield `SensorFrame`s: a `Frame` whose `pixels` are empty, whose `width` and `height` are
those of the picture the boxes refer to, and whose `metadata` is what picamera2's
`capture_metadata()` returns (`CnnOutputTensor`, `CnnOutputTensorInfo`, `CnnKpiInfo`, ...).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ivs.errors import SourceError
from ivs.frame import Frame
from ivs.imx500.recording import read_recording
from ivs.sources.base import Source

log = logging.getLogger(__name__)

NO_PICAMERA2 = "picamera2 not found: the imx500 source runs on a Raspberry Pi with the AI Camera; see docs/imx500.md"
# The IMX500's full pixel array; picamera2 takes the inference ROI in these coordinates.
SENSOR_WIDTH, SENSOR_HEIGHT = 4056, 3040
_NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


@dataclass(frozen=True)
class SensorFrame(Frame):
    """A frame that is only the sensor's metadata; `size` is (width, height) of the picture."""

    metadata: Mapping[str, Any] = field(default_factory=dict)
    size: tuple[int, int] = (0, 0)

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]


class ReplaySource(Source):
    """Recorded IMX500 metadata, one frame per recorded frame, paced at the recording's rate."""

    live = False

    width: int
    height: int

    def __init__(self, path: Path) -> None:
        self.recording = read_recording(path)
        self.id = f"imx500-replay:{path}"
        fps = self.recording.header.get("fps")
        self.fps: float | None = float(fps) if isinstance(fps, int | float) and fps > 0 else None
        self.width, self.height = self.recording.width, self.recording.height
        self.expected_frames = len(self.recording)

    def frames(self) -> Iterator[Frame]:
        rec = self.recording
        for i in range(len(rec)):
            yield SensorFrame(
                _NO_PIXELS,
                int(rec.indices[i]),
                t_capture_ns=time.monotonic_ns(),
                wall_time=time.time(),
                source_id=self.id,
                pts=rec.frame_pts(i),
                metadata=rec.metadata(i),
                size=(self.width, self.height),
            )

    def close(self) -> None:
        pass


class CameraSource(Source):
    """The AI Camera: loads the network `.rpk` onto the sensor and yields each frame's metadata.

    Frames are in full-sensor pixels (4056x3040): boxes, ROIs, lines and zones use those
    coordinates. Frames whose metadata holds no output tensor (the network still running, or
    while the firmware loads) are skipped and counted in `frames_without_output`.
    """

    live = True

    width: int
    height: int

    def __init__(self, network: Path, fps: float | None = None) -> None:
        if not network.is_file():
            raise SourceError(f"imx500 network {network} not found: expected the .rpk made by imx500-package")
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]  # only on a Raspberry Pi
            from picamera2.devices.imx500 import IMX500  # type: ignore[import-not-found]
        except ImportError:
            raise SourceError(NO_PICAMERA2) from None
        try:
            # Must come before Picamera2 is opened: it uploads the network firmware to the sensor.
            self._imx500 = IMX500(str(network))
            self._camera = Picamera2(self._imx500.camera_num)
        except (RuntimeError, OSError, StopIteration) as err:
            raise SourceError(f"imx500: cannot open the AI Camera with {network}: {err}") from None
        self.id = f"imx500:{network}"
        self.fps: float | None = fps or 30.0
        self.width, self.height = SENSOR_WIDTH, SENSOR_HEIGHT
        self.frames_without_output = 0
        self._started = False

    def set_inference_region(self, x: int, y: int, w: int, h: int) -> None:
        """Feed the network this part of the picture (frame = sensor pixels)."""
        self._imx500.set_inference_roi_abs((x, y, w, h))

    def frames(self) -> Iterator[Frame]:
        config = self._camera.create_preview_configuration(controls={"FrameRate": self.fps}, buffer_count=12)
        self._camera.start(config)
        self._started = True
        index = 0
        while True:
            t = time.monotonic_ns()
            md = self._camera.capture_metadata()  # metadata only: no image buffer is read
            if not md.get("CnnOutputTensor"):
                self.frames_without_output += 1
                continue
            yield SensorFrame(
                _NO_PIXELS,
                index,
                t_capture_ns=t,
                wall_time=time.time(),
                source_id=self.id,
                metadata=md,
                size=(self.width, self.height),
            )
            index += 1

    def close(self) -> None:
        if self._started:
            self._camera.stop()
            self._started = False
        self._camera.close()


def open_sensor_source(spec: str) -> CameraSource | ReplaySource:
    """`imx500:NETWORK.rpk` or `imx500-replay:RECORDING.npz`."""
    kind, _, rest = spec.partition(":")
    if not rest:
        raise SourceError(f"source {spec!r}: expected imx500:NETWORK.rpk or imx500-replay:RECORDING.npz")
    if kind == "imx500-replay":
        return ReplaySource(Path(rest))
    return CameraSource(Path(rest))
