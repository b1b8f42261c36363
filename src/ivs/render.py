"""Pictures made from metadata (never from the sensor's frames): the heatmap of a run."""

from __future__ import annotations

from pathlib import Path

import cv2
import msgspec
import numpy as np

from ivs.errors import ConfigError
from ivs.events import Heatmap, decode_event


def sum_heatmaps(events: Path, app: str | None = None) -> tuple[np.ndarray, Heatmap, int]:  # type: ignore[type-arg]
    """Sum of the `heatmap` events of a JSON-lines file: the grid, the last event, how many."""
    total: np.ndarray | None = None  # type: ignore[type-arg]
    last: Heatmap | None = None
    count = 0
    try:
        lines = events.read_bytes().splitlines()
    except OSError as err:
        raise ConfigError(f"{events}: cannot read ({err.strerror}): expected a JSON-lines file of events") from None
    for number, line in enumerate(lines, 1):
        if b'"kind":"heatmap"' not in line:
            continue
        try:
            event = decode_event(line)
        except msgspec.DecodeError as err:  # ValidationError is a DecodeError too
            raise ConfigError(f"{events}:{number}: a malformed heatmap event ({err})") from None
        if not isinstance(event, Heatmap) or (app is not None and event.app != app):
            continue
        if event.rows < 1 or event.cols < 1 or len(event.counts) != event.rows * event.cols:
            raise ConfigError(
                f"{events}:{number}: a heatmap event with {len(event.counts)} counts for a"
                f" {event.rows}x{event.cols} grid: expected rows x cols counts"
            )
        grid = np.asarray(event.counts, np.int64).reshape(event.rows, event.cols)
        if total is not None and total.shape != grid.shape:
            raise ConfigError(f"{events}: heatmap grids of different sizes: use --app to pick one app")
        total = grid if total is None else total + grid
        last = event
        count += 1
    if total is None or last is None:
        raise ConfigError(f"{events}: no heatmap events: expected a run with a heatmap app")
    return total, last, count


def render_heatmap(events: Path, output: Path, background: Path | None = None, app: str | None = None) -> int:
    grid, last, count = sum_heatmaps(events, app)
    norm = (255 * grid / max(int(grid.max()), 1)).astype(np.uint8)
    big = cv2.resize(norm, (last.width, last.height), interpolation=cv2.INTER_NEAREST)
    colour = cv2.applyColorMap(big, cv2.COLORMAP_JET)
    if background is not None:
        scene = cv2.imread(str(background), cv2.IMREAD_COLOR)
        if scene is None:
            raise ConfigError(f"{background}: cannot be read: expected an image of the scene")
        scene = cv2.resize(scene, (last.width, last.height))
        alpha = (big.astype(np.float32) / 255.0 * 0.6)[..., None]
        colour = (scene * (1 - alpha) + colour * alpha).astype(np.uint8)
    output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(output), colour)
    return count
