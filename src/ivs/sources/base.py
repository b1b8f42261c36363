"""The source protocol."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from ivs.frame import Frame


class Source(Protocol):
    """Delivers frames in order. Raises `SourceError` when it cannot deliver what it promised.

    fps: the native rate (None where there is none, e.g. an image folder).
    live: True when the source paces itself (a camera, RTSP); file sources are paced by the
        sensor to behave like a camera.
    expected_frames: the count the container declares, if any (to detect truncation).
    """

    id: str
    fps: float | None
    live: bool

    def frames(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...
