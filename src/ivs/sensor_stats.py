"""What a sensor measures about itself: stage timings (bounded samples, percentiles), the
processing rate, the counters of a run, and the summary the CLI prints."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STAGES = ("read", "queue", "isp", "infer", "decode", "classify", "apps", "total")
SENSOR_STAGES = ("sensor_dnn", "sensor_dsp")
"""Timings an IMX500 reports itself for each frame; present only on that path."""


class RateMeter:
    def __init__(self) -> None:
        self._t: deque[float] = deque(maxlen=300)

    def tick(self) -> None:
        self._t.append(time.monotonic())

    def last(self) -> float | None:
        """Monotonic time of the last tick (None: none yet)."""
        return self._t[-1] if self._t else None

    def rate(self, window: int) -> float:
        t = list(self._t)[-window:]
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0


class Samples:
    """The last `capacity` values of one stage timing, in a preallocated float32 ring.

    Why not a deque of floats: at 32 bytes a value, 100k values for each of ten stages grow the
    sensor's RSS by ~25 MiB over the first hours of a run, which a soak run reads as a leak.
    This ring takes its 400 KB once, at start, and never grows."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._values = np.full(capacity, np.nan, dtype=np.float32)  # touched now: RSS is flat later
        self._next = 0
        self._count = 0

    def append(self, value: float) -> None:
        self._values[self._next] = value
        self._next = (self._next + 1) % len(self._values)
        self._count = min(self._count + 1, len(self._values))

    def array(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        """The values, oldest first, as float64."""
        if self._count < len(self._values):
            return self._values[: self._count].astype(np.float64)
        return np.roll(self._values, -self._next).astype(np.float64)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[float]:
        return iter(self.array().tolist())

    def __getitem__(self, index: int) -> float:
        """The value at `index`, 0 the oldest kept, -1 the newest."""
        if not -self._count <= index < self._count:
            raise IndexError(f"sample {index} of {self._count}")
        if index < 0:
            index += self._count
        return float(self._values[(self._next - self._count + index) % len(self._values)])


@dataclass
class SensorStats:
    """What the sensor has done so far; read by the live status line and the summary."""

    frames_read: int = 0
    frames_processed: int = 0
    dropped: int = 0
    detections: int = 0
    skipped: int = 0
    """Frames of a damaged video that could not be decoded (the source's `frames_skipped`)."""
    late: int = 0
    """Paced frames captured a whole frame period or more after their time: the sensor fell
    behind its source's clock (a camera would have lost them), so it did not run at its rate
    even where it dropped nothing."""
    gaps: int = 0
    """Outages of a live source that it came back from (each sent as a `gap` event)."""
    frames_lost: int = 0
    """Frames those outages cost, estimated at the source's rate."""
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    rate_meter: RateMeter = field(default_factory=lambda: RateMeter())
    timings: dict[str, Samples] = field(default_factory=lambda: {s: Samples() for s in STAGES})

    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def fps(self) -> float:
        e = self.elapsed()
        return self.frames_processed / e if e > 0 else 0.0

    def recent_fps(self, window: int = 30) -> float:
        """Processing rate over the last `window` processed frames."""
        return self.rate_meter.rate(window)

    def percentile(self, stage: str, q: float) -> float:
        values = self.timings[stage]
        return float(np.percentile(values.array(), q)) if values else 0.0


def summarize(stats: SensorStats) -> dict[str, Any]:
    """A plain summary of a run (what the CLI prints at the end)."""
    return {
        "frames_read": stats.frames_read,
        "frames_processed": stats.frames_processed,
        "dropped": stats.dropped,
        "skipped": stats.skipped,
        "late": stats.late,
        "gaps": stats.gaps,
        "frames_lost": stats.frames_lost,
        "detections": stats.detections,
        "seconds": round(stats.elapsed(), 3),
        "fps": round(stats.fps(), 2),
        "timings_ms": {
            s: {"p50": round(stats.percentile(s, 50), 3), "p99": round(stats.percentile(s, 99), 3)}
            for s in (*STAGES, *(x for x in SENSOR_STAGES if stats.timings.get(x)))
        },
    }
