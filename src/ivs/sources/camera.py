"""Local cameras (V4L2 on Linux, the OS's default backend elsewhere) through OpenCV.

A camera that stops delivering (unplugged, its driver reset) is reopened with exponential
backoff (`ivs.sources.reconnect`), frame indices continuing; the outage is recorded for the
sensor to report as a `gap` event once frames flow again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np

from ivs.errors import SourceError
from ivs.frame import Frame
from ivs.sources.base import Source
from ivs.sources.reconnect import Gap, Outages, Reconnect, frames_lost, reopen

log = logging.getLogger(__name__)


class CameraSource(Source):
    """Frames from a camera device.

    index: the camera number (/dev/video<index>).
    device: what OpenCV opens instead of the index (a device path or a capture URL), e.g.
        "/dev/video2"; the tests use a video file, which "unplugs" at its end.
    reconnect: how the camera is reopened after it stops delivering (None: it is not; the
        failure raises `SourceError`).
    """

    live = True

    outages: Outages

    def __init__(
        self,
        index: int,
        *,
        device: str | None = None,
        reconnect: Reconnect | None = Reconnect(),  # noqa: B008 - frozen, so one shared default is safe
    ) -> None:
        self.index = index
        self._device: int | str = device if device is not None else index
        self.id = f"camera{index}"
        self.reconnect = reconnect
        self.outages = Outages()
        self._lock = threading.Lock()
        self._closed = False
        cap = self._open()
        if cap is None:
            raise SourceError(
                f"camera {index} cannot be opened: expected a connected camera at "
                f"{device or f'/dev/video{index}'} that this user may read and no other program holds"
            )
        self._cap: cv2.VideoCapture | None = cap
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        self.fps: float | None = fps if fps > 0 else None

    def _open(self) -> cv2.VideoCapture | None:
        cap = cv2.VideoCapture(self._device)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def frames(self) -> Iterator[Frame]:
        index = 0
        last_wall: float | None = None
        gap_from: tuple[float, str, int, float] | None = None
        while True:
            cap = self._cap
            if cap is None:
                return
            ok, bgr = cap.read()
            if ok and bgr is not None:
                wall = time.time()
                if gap_from is not None:
                    start, reason, attempts, _ = gap_from
                    self.outages.add(Gap(start, wall, frames_lost(start, wall, self.fps), attempts, reason))
                    gap_from = None
                last_wall = wall
                pixels = np.ascontiguousarray(bgr[..., ::-1], dtype=np.uint8)
                yield Frame(pixels, index, time.monotonic_ns(), wall, self.id)
                index += 1
                continue
            reason = "the camera stopped delivering frames (unplugged?)"
            if self.reconnect is None:
                raise SourceError(
                    f"camera {self.index} stopped delivering frames after frame {index - 1}: "
                    "expected a steady stream (was it unplugged?)"
                )
            if gap_from is None:
                self.outages.disconnects += 1
                log.warning("camera %d: no frame after frame %d; reopening", self.index, index - 1)
            # Failed again before a frame came: the same outage goes on (its start, its backoff).
            start = gap_from[0] if gap_from is not None else last_wall if last_wall is not None else time.time()
            tried, since = (gap_from[2], gap_from[3]) if gap_from is not None else (0, time.monotonic())
            self._release()
            got = reopen(self._open, self.reconnect, self.outages, f"camera {self.index}", attempts=tried, since=since)
            if got is None:
                if self.outages.interrupted.is_set():
                    return
                raise SourceError(
                    f"camera {self.index} stopped delivering frames after frame {index - 1} and was not back "
                    f"after {self.reconnect.give_up_s} s of reconnecting: expected it to return"
                )
            with self._lock:
                if self._closed:
                    got[0].release()
                    return
                self._cap = got[0]
            gap_from = (start, reason, got[1], since)

    def _release(self) -> None:
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def close(self) -> None:
        self.interrupt()
        with self._lock:
            self._closed = True
        self._release()
