"""What every source is: `Source`, with the capabilities the sensor reads declared here (and a
default for the sources that lack them), never probed for."""

from __future__ import annotations

from collections.abc import Iterator

from ivs.frame import Frame
from ivs.sources.reconnect import Outages


class Source:
    """Delivers frames in order. Raises `SourceError` when it cannot deliver what it promised.

    A subclass sets what it knows and overrides `frames` (and `close`, `interrupt` where it
    holds something or waits).
    """

    id: str = "source"
    fps: float | None = None
    """The native rate (None where there is none, e.g. an image folder)."""
    live: bool = False
    """True when the source paces itself (a camera, RTSP); a file is paced by the sensor to
    behave like a camera."""
    width: int | None = None
    height: int | None = None
    """The frame size, where the source knows it before the first frame (None: it does not)."""
    expected_frames: int | None = None
    """The count the container declares, if any (to detect truncation)."""
    frames_skipped: int = 0
    """Frames of a damaged file that could not be decoded and were skipped."""
    compressed_bytes: int | None = None
    """Bytes of compressed video read so far (None: the source reads no compressed video)."""
    outages: Outages | None = None
    """A live source that reopens itself records its outages here (None: it never does)."""

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Cut a wait short (the sensor is stopping): a reconnect backoff, a camera read."""
        if self.outages is not None:
            self.outages.interrupted.set()

    def close(self) -> None:
        """Release what the source holds."""
