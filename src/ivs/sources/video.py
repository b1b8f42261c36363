"""Video files and network streams (RTSP, HTTP, TCP) through PyAV (FFmpeg).

Files: a packet FFmpeg cannot decode is skipped and counted (`frames_skipped`), and so are the
frames a damaged file lost in the middle (the header declares more than the demuxer found,
though the file ends cleanly); the source keeps going to the end. A file that ends part-way
through a packet (truncated) raises `SourceError` after the frames it could deliver.
`loop=True` starts a file again at its end, its clock continuing (for soak runs and demos).

Network streams are live and expected to stream for ever: when one fails, stalls for
`stall_s`, or ends, it is reopened with exponential backoff (`ivs.sources.reconnect`). Frame
indices and the presentation clock continue across the outage, and the gap (when, how long,
about how many frames lost) is recorded for the sensor to report as a `gap` event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.container
import numpy as np

from ivs.errors import SourceError
from ivs.frame import Frame
from ivs.sources.base import Source
from ivs.sources.reconnect import Gap, Outages, Reconnect, frames_lost, reopen

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")

MAX_BAD_PACKETS = 250
"""Consecutive packets that fail to decode before a file is given up as unreadable."""


@dataclass
class _Opened:
    container: av.container.InputContainer
    stream: av.VideoStream


class VideoSource(Source):
    """Decodes the first video stream of a file or URL to RGB frames.

    reconnect: how a network stream is reopened after it fails or ends (None: not at all; the
        failure raises `SourceError`). Files are never reopened (but see `loop`).
    stall_s: a network stream that delivers nothing for this long counts as failed.
    loop: play a file again from the start at its end, for ever.
    """

    outages: Outages
    compressed_bytes: int
    width: int
    height: int

    def __init__(
        self,
        url: str,
        *,
        source_id: str | None = None,
        reconnect: Reconnect | None = Reconnect(),  # noqa: B008 - frozen, so one shared default is safe
        stall_s: float = 10.0,
        loop: bool = False,
    ) -> None:
        self.url = url
        self.live = url.startswith(STREAM_SCHEMES)
        self.id = source_id or (url if self.live else Path(url).name)
        if not self.live and not Path(url).is_file():
            raise SourceError(
                f"video {url} not found: expected an existing video file, an RTSP URL, "
                "a camera index, an image folder or 'synthetic'"
            )
        self.reconnect = reconnect if self.live else None
        self.loop = loop and not self.live
        self.stall_s = stall_s
        self.outages = Outages()
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._opened = self._open()
        except (av.FFmpegError, OSError) as err:
            raise SourceError(
                f"{url}: not a readable video ({_reason(err)}): expected a video file or stream that FFmpeg can decode"
            ) from None
        if self._opened is None:
            raise SourceError(f"{url}: holds no video stream: expected a file with video")
        stream = self._opened.stream
        rate = stream.average_rate or stream.guessed_rate
        self.fps: float | None = float(rate) if rate else None
        self.expected_frames: int | None = int(stream.frames) or None
        self.width = int(stream.codec_context.width)
        self.height = int(stream.codec_context.height)
        self.compressed_bytes = 0
        """Bytes of compressed video read so far (for the bandwidth ledger)."""
        self.frames_skipped = 0
        """Frames of a file that could not be decoded and were skipped."""
        self.loops = 0

    def _open(self) -> _Opened | None:
        options = {"rtsp_transport": "tcp"} if self.url.startswith("rtsp") else {}
        container = av.open(self.url, options=options, timeout=(10.0, self.stall_s))
        if not container.streams.video:
            container.close()
            return None
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return _Opened(container, stream)

    def frames(self) -> Iterator[Frame]:
        index = 0
        pts_offset = 0.0  # added to the stream's pts: the clock continues across loops and outages
        last_pts: float | None = None
        last_wall: float | None = None
        gap_from: tuple[float, str, int, float] | None = None  # (start, reason, attempts) of an outage
        while True:
            opened = self._opened
            if opened is None:
                return
            decoded = skipped = 0
            bad_in_a_row = 0
            last_corrupt = False
            rebase = last_pts is not None
            failure: str | None = None
            try:
                for packet in opened.container.demux(opened.stream):
                    # The empty packet at the end flushes the decoder: with frame threading it
                    # still holds the last few frames, which are lost unless it is decoded too.
                    flush = packet.size == 0
                    if not flush:
                        self.compressed_bytes += packet.size
                        last_corrupt = bool(packet.is_corrupt)
                    try:
                        decoded_frames = packet.decode()
                    except av.FFmpegError as err:
                        if flush:
                            log.warning("%s: flushing the decoder failed (%s)", self.url, _reason(err))
                            break
                        bad_in_a_row += 1
                        skipped += 1
                        self.frames_skipped += 1
                        log.warning("%s: skipped an undecodable packet (%s)", self.url, _reason(err))
                        if bad_in_a_row < MAX_BAD_PACKETS:
                            continue
                        failure = f"{bad_in_a_row} packets in a row cannot be decoded"
                        if not self.live:
                            raise SourceError(
                                f"{self.url}: {failure} after frame {index - 1}: expected a decodable video"
                            ) from None
                        break
                    bad_in_a_row = 0
                    for vf in decoded_frames:
                        pixels = np.asarray(vf.to_ndarray(format="rgb24"), dtype=np.uint8)
                        wall = time.time()
                        pts = float(vf.time) if vf.time is not None else None
                        if pts is not None:
                            if rebase and last_pts is not None:
                                # First frame after a loop or an outage: continue the clock from the
                                # last frame, one frame period (or the outage's length) later.
                                step = (wall - last_wall) if gap_from is not None and last_wall else self._period()
                                pts_offset = last_pts + step - pts
                                rebase = False
                            pts += pts_offset
                            last_pts = pts
                        if gap_from is not None:
                            start, reason, attempts, _ = gap_from
                            self.outages.add(Gap(start, wall, frames_lost(start, wall, self.fps), attempts, reason))
                            gap_from = None
                        last_wall = wall
                        decoded += 1
                        yield Frame(pixels, index, time.monotonic_ns(), wall, self.id, pts)
                        index += 1
            except av.FFmpegError as err:
                # ExitError: the read timeout (stall_s) interrupted a read that got nothing; FFmpeg
                # words it "Immediate exit requested", which tells a user nothing.
                stalled = isinstance(err, av.ExitError) and self.live
                failure = f"stalled: nothing received for {self.stall_s:g} s" if stalled else _reason(err)
                if not self.live:
                    raise SourceError(
                        f"{self.url}: decoding failed after frame {index - 1} ({failure}): "
                        "the video is corrupt or truncated; expected a complete, decodable stream"
                    ) from None
            if not self.live:
                self._check_complete(decoded, skipped, last_corrupt)
                if not self.loop or decoded == 0:
                    return
                self._restart()
                self.loops += 1
                continue
            # A live stream ended or failed: reopen it with backoff, then report the gap.
            reason = failure or "end of stream"
            if self.reconnect is None:
                if failure is None:
                    return  # reconnecting is off: the end of the stream is the end
                raise SourceError(
                    f"{self.url}: stream failed after frame {index - 1} ({failure}): expected a live stream "
                    "(reconnecting is off)"
                )
            if gap_from is None:
                self.outages.disconnects += 1
                log.warning("%s: stream lost after frame %d (%s); reopening", self.url, index - 1, reason)
            else:
                reason = gap_from[1]
            # Failed again before a frame came: the same outage goes on (its start, its backoff).
            start = gap_from[0] if gap_from is not None else last_wall if last_wall is not None else time.time()
            tried, since = (gap_from[2], gap_from[3]) if gap_from is not None else (0, time.monotonic())
            self._close_container()
            got = reopen(self._open_live, self.reconnect, self.outages, self.url, attempts=tried, since=since)
            if got is None:
                if self.outages.interrupted.is_set():
                    return
                raise SourceError(
                    f"{self.url}: stream lost after frame {index - 1} ({reason}) and not back after "
                    f"{self.reconnect.give_up_s} s of reconnecting: expected the stream to return"
                )
            with self._lock:
                if self._closed:
                    got[0].container.close()
                    return
                self._opened = got[0]
            gap_from = (start, reason, got[1], since)

    def _open_live(self) -> _Opened | None:
        try:
            return self._open()
        except av.FFmpegError as err:
            log.debug("%s: reopen failed: %s", self.url, _reason(err))
            return None

    def _period(self) -> float:
        return 1.0 / self.fps if self.fps else 0.0

    def _check_complete(self, decoded: int, skipped: int, last_corrupt: bool) -> None:
        """At the end of a file: frames the header promised but the demuxer never found were
        lost in the middle (skipped and counted), unless the file ends inside a packet
        (truncated: an error)."""
        if not self.expected_frames:
            return
        missing = self.expected_frames - decoded - skipped
        if missing <= 0:
            return
        if last_corrupt:
            raise SourceError(
                f"{self.url}: incomplete: the header declares {self.expected_frames} frames, "
                f"only {decoded} could be decoded (the file is truncated or corrupt); "
                "expected a complete file"
            )
        self.frames_skipped += missing
        log.warning("%s: %d frames the header declares were lost to corruption and skipped", self.url, missing)

    def _restart(self) -> None:
        opened = self._opened
        assert opened is not None
        opened.container.seek(0, stream=opened.stream)

    def _close_container(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, None
        if opened is not None:
            try:
                opened.container.close()
            except (av.FFmpegError, OSError):
                log.debug("closing %s failed", self.url, exc_info=True)

    def close(self) -> None:
        self.interrupt()
        with self._lock:
            self._closed = True
        self._close_container()


def _reason(err: BaseException) -> str:
    return str(getattr(err, "strerror", None) or err).strip()
