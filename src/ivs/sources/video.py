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
class _Run:
    """Where a source's frames are, across loops and outages."""

    index: int = 0
    pts_offset: float = 0.0
    """Added to the stream's pts: the clock continues across loops and outages."""
    last_pts: float | None = None
    last_wall: float | None = None
    gap_from: tuple[float, str, int, float] | None = None
    """(start, reason, attempts, since) of the outage in progress."""


@dataclass
class _Pass:
    """One pass over an open container."""

    rebase: bool
    decoded: int = 0
    skipped: int = 0
    last_corrupt: bool = False
    failure: str | None = None


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
        run = _Run()
        while (opened := self._opened) is not None:
            result = _Pass(rebase=run.last_pts is not None)
            try:
                yield from self._decode(opened, run, result)
            except av.FFmpegError as err:
                # ExitError: the read timeout (stall_s) interrupted a read that got nothing; FFmpeg
                # words it "Immediate exit requested", which tells a user nothing.
                stalled = isinstance(err, av.ExitError) and self.live
                result.failure = f"stalled: nothing received for {self.stall_s:g} s" if stalled else _reason(err)
                if not self.live:
                    raise SourceError(
                        f"{self.url}: decoding failed after frame {run.index - 1} ({result.failure}): "
                        "the video is corrupt or truncated; expected a complete, decodable stream"
                    ) from None
            if not self.live:
                self._check_complete(result.decoded, result.skipped, result.last_corrupt)
                if not self.loop or result.decoded == 0:
                    return
                self._restart()
                self.loops += 1
            elif not self._reopen(run, result.failure):
                return

    def _decode(self, opened: _Opened, run: _Run, result: _Pass) -> Iterator[Frame]:
        """One pass over the open container: its frames, counting what could not be decoded."""
        bad_in_a_row = 0
        for packet in opened.container.demux(opened.stream):
            # The empty packet at the end flushes the decoder: with frame threading it still
            # holds the last few frames, which are lost unless it is decoded too.
            flush = packet.size == 0
            if not flush:
                self.compressed_bytes += packet.size
                result.last_corrupt = bool(packet.is_corrupt)
            try:
                decoded_frames = packet.decode()
            except av.FFmpegError as err:
                if flush:
                    log.warning("%s: flushing the decoder failed (%s)", self.url, _reason(err))
                    return
                bad_in_a_row += 1
                result.skipped += 1
                self.frames_skipped += 1
                log.warning("%s: skipped an undecodable packet (%s)", self.url, _reason(err))
                if bad_in_a_row < MAX_BAD_PACKETS:
                    continue
                result.failure = f"{bad_in_a_row} packets in a row cannot be decoded"
                if not self.live:
                    raise SourceError(
                        f"{self.url}: {result.failure} after frame {run.index - 1}: expected a decodable video"
                    ) from None
                return
            bad_in_a_row = 0
            for vf in decoded_frames:
                yield self._frame(vf, run, result)

    def _frame(self, vf: av.VideoFrame, run: _Run, result: _Pass) -> Frame:
        pixels = np.asarray(vf.to_ndarray(format="rgb24"), dtype=np.uint8)
        wall = time.time()
        pts = float(vf.time) if vf.time is not None else None
        if pts is not None:
            if result.rebase and run.last_pts is not None:
                # First frame after a loop or an outage: continue the clock from the last
                # frame, one frame period (or the outage's length) later.
                step = (wall - run.last_wall) if run.gap_from is not None and run.last_wall else self._period()
                run.pts_offset = run.last_pts + step - pts
                result.rebase = False
            pts += run.pts_offset
            run.last_pts = pts
        if run.gap_from is not None:
            start, reason, attempts, _ = run.gap_from
            self.outages.add(Gap(start, wall, frames_lost(start, wall, self.fps), attempts, reason))
            run.gap_from = None
        run.last_wall = wall
        result.decoded += 1
        frame = Frame(pixels, run.index, time.monotonic_ns(), wall, self.id, pts)
        run.index += 1
        return frame

    def _reopen(self, run: _Run, failure: str | None) -> bool:
        """A live stream ended or failed: reopen it with backoff (the gap is reported with the
        next frame). False: the stream is over (reconnecting off, or the sensor stopping)."""
        reason = failure or "end of stream"
        if self.reconnect is None:
            if failure is None:
                return False  # reconnecting is off: the end of the stream is the end
            raise SourceError(
                f"{self.url}: stream failed after frame {run.index - 1} ({failure}): expected a live stream "
                "(reconnecting is off)"
            )
        gap = run.gap_from
        if gap is None:
            self.outages.disconnects += 1
            log.warning("%s: stream lost after frame %d (%s); reopening", self.url, run.index - 1, reason)
        else:
            reason = gap[1]
        # Failed again before a frame came: the same outage goes on (its start, its backoff).
        start = gap[0] if gap is not None else run.last_wall if run.last_wall is not None else time.time()
        tried, since = (gap[2], gap[3]) if gap is not None else (0, time.monotonic())
        self._close_container()
        got = reopen(self._open_live, self.reconnect, self.outages, self.url, attempts=tried, since=since)
        if got is None:
            if self.outages.interrupted.is_set():
                return False
            raise SourceError(
                f"{self.url}: stream lost after frame {run.index - 1} ({reason}) and not back after "
                f"{self.reconnect.give_up_s} s of reconnecting: expected the stream to return"
            )
        with self._lock:
            if self._closed:
                got[0].container.close()
                return False
            self._opened = got[0]
        run.gap_from = (start, reason, got[1], since)
        return True

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
