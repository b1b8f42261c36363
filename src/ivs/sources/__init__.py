"""Sources: where frames come from. `open_source` picks one from a spec string."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from ivs.errors import SourceError
from ivs.sources.base import Source
from ivs.sources.reconnect import Reconnect

PLUGINS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("imx500:", "imx500-replay:"), "ivs.imx500.source:open_sensor_source"),
)
"""Sources of a higher layer, by spec prefix: (prefixes, "module:function"). Named, not
imported: the IMX500 path builds on `ivs.sources`, which must not depend on it."""


def open_source(
    spec: str,
    *,
    reconnect: Reconnect | None = Reconnect(),  # noqa: B008 - frozen, so one shared default is safe
    stall_s: float = 10.0,
) -> Source:
    """Open a source from what a user types.

    A camera index ("0"), "synthetic[:WxH][@FPS][:FRAMES]", an RTSP/HTTP URL, a folder of
    images, a video file, or the IMX500: "imx500:NETWORK.rpk", "imx500-replay:RECORDING.npz".
    reconnect: how a camera or network stream that went away is reopened (None: not at all);
    stall_s: a network stream silent this long counts as gone. Other sources ignore both.
    """
    for prefixes, where in PLUGINS:
        if spec.startswith(prefixes):
            module, _, name = where.partition(":")
            opener: Callable[[str], Source] = getattr(importlib.import_module(module), name)
            return opener(spec)
    if spec.isdigit():
        from ivs.sources.camera import CameraSource

        return CameraSource(int(spec), reconnect=reconnect)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        from ivs.sources.synthetic import SyntheticSource

        return SyntheticSource.from_spec(spec)
    from ivs.sources.video import STREAM_SCHEMES, VideoSource

    if spec.startswith(STREAM_SCHEMES):
        return VideoSource(spec, reconnect=reconnect, stall_s=stall_s)
    path = Path(spec)
    if path.is_dir():
        from ivs.sources.images import ImageFolderSource

        return ImageFolderSource(path)
    if not path.exists():
        raise SourceError(
            f"source {spec!r} not found: expected a video file, an RTSP URL, a camera index, "
            "an image folder or 'synthetic'"
        )
    return VideoSource(spec)


__all__ = ["Source", "SourceError", "open_source"]
