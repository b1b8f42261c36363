"""Evidence files: a JPEG snapshot (OpenCV) and an H.264 clip in MP4 (PyAV)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction

import av
import cv2
import numpy as np
import numpy.typing as npt


def jpeg(image: npt.NDArray[np.uint8], quality: int = 85) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def mp4(images: Sequence[npt.NDArray[np.uint8]], times: Sequence[float], crf: int = 26) -> bytes:
    """H.264 (libx264, yuv420p) in MP4, each frame at its own time (seconds from the first):
    a clip of a paced camera keeps its real timing, drops and all."""
    if not images:
        raise ValueError("no frames for a clip")
    h, w = images[0].shape[:2]
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height = w - w % 2, h - h % 2  # yuv420p wants even sides
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        t0 = times[0]
        last = -1
        for image, t in zip(images, times, strict=True):
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(image[: stream.height, : stream.width]), format="rgb24"
            )
            pts = max(last + 1, round((t - t0) * 1000))
            frame.pts, frame.time_base, last = pts, Fraction(1, 1000), pts
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()
