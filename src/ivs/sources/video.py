"""Video files and network streams (RTSP, HTTP) through PyAV (FFmpeg)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from ivs.errors import SourceError
from ivs.frame import Frame

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class VideoSource:
    """Decodes the first video stream of a file or URL to RGB frames.

    A file that ends before the frame count its header declares, or that FFmpeg cannot
    decode part-way, raises `SourceError` after the frames it could deliver.
    """

    def __init__(self, url: str, *, source_id: str | None = None) -> None:
        self.url = url
        self.live = url.startswith(STREAM_SCHEMES)
        self.id = source_id or (url if self.live else Path(url).name)
        if not self.live and not Path(url).is_file():
            raise SourceError(
                f"video {url} not found: expected an existing video file, an RTSP URL, "
                "a camera index, an image folder or 'synthetic'"
            )
        options = {"rtsp_transport": "tcp", "stimeout": "5000000"} if url.startswith("rtsp") else {}
        try:
            self._container = av.open(url, options=options, timeout=10.0)
        except (av.FFmpegError, OSError) as err:
            raise SourceError(
                f"{url}: not a readable video ({_reason(err)}): expected a video file or stream that FFmpeg can decode"
            ) from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{url}: holds no video stream: expected a file with video")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps: float | None = float(rate) if rate else None
        self.expected_frames: int | None = int(self._stream.frames) or None
        self.width = int(self._stream.codec_context.width)
        self.height = int(self._stream.codec_context.height)
        self.compressed_bytes = 0
        """Bytes of compressed video read so far (for the bandwidth ledger)."""

    def frames(self) -> Iterator[Frame]:
        index = 0
        try:
            for packet in self._container.demux(self._stream):
                self.compressed_bytes += packet.size
                for vf in packet.decode():
                    pixels = np.asarray(vf.to_ndarray(format="rgb24"), dtype=np.uint8)
                    pts = float(vf.time) if vf.time is not None else None
                    yield Frame(pixels, index, time.monotonic_ns(), time.time(), self.id, pts)
                    index += 1
        except av.FFmpegError as err:
            raise SourceError(
                f"{self.url}: decoding failed after frame {index - 1} ({_reason(err)}): "
                "the video is corrupt or truncated; expected a complete, decodable stream"
            ) from None
        if not self.live and self.expected_frames and index < self.expected_frames:
            raise SourceError(
                f"{self.url}: incomplete: the header declares {self.expected_frames} frames, "
                f"only {index} could be decoded (the file is truncated or corrupt); "
                "expected a complete file"
            )

    def close(self) -> None:
        self._container.close()


def _reason(err: BaseException) -> str:
    return str(getattr(err, "strerror", None) or err).strip()
