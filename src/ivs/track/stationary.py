"""Stationary objects: tracks that have barely moved for a while (a parked car, a person
standing at a counter, a pallet left in an aisle).

A track is stationary once its box centre stayed within `max_px` of where it is now over the
last `seconds` (on the source's clock: the same answer offline as live), and stays so until its
centre moves more than `max_px` from where it settled. The sensor marks such detections
(`data["stationary"]`, and `stationary: true` in the frame record); zones may ignore them,
count only them, and hold a stationary member through a detection that flickers.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ivs.detections import Detections


@dataclass
class Stationary:
    max_px: float = 10.0
    seconds: float = 10.0
    forget_s: float = 60.0
    """A track unseen this long is forgotten."""
    _history: dict[int, deque[tuple[float, float, float]]] = field(default_factory=dict)
    _settled: dict[int, tuple[float, float]] = field(default_factory=dict)
    _last: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.max_px > 0 or not self.seconds > 0:
            raise ValueError(f"stationary: max_px {self.max_px}, seconds {self.seconds}: expected both > 0")

    def update(self, det: Detections, t: float) -> Detections:
        """`det` with `data["stationary"]` (bool per row; untracked rows are False)."""
        flags = np.zeros(len(det), bool)
        centres = (det.xyxy[:, :2] + det.xyxy[:, 2:]) * 0.5
        for i, tid in enumerate(det.tracker_id.tolist()):
            if tid < 0:
                continue
            x, y = float(centres[i, 0]), float(centres[i, 1])
            self._last[tid] = t
            settled = self._settled.get(tid)
            if settled is not None:
                if math.hypot(x - settled[0], y - settled[1]) <= self.max_px:
                    flags[i] = True
                    continue
                del self._settled[tid]  # it moved off: watch it afresh
                self._history[tid] = deque()
            history = self._history.setdefault(tid, deque())
            history.append((t, x, y))
            while len(history) > 1 and history[1][0] <= t - self.seconds:
                history.popleft()  # keep one sample at or before the window's start
            if history[0][0] <= t - self.seconds and all(
                math.hypot(x - hx, y - hy) <= self.max_px for _, hx, hy in history
            ):
                self._settled[tid] = (x, y)
                flags[i] = True
        for tid in [k for k, seen in self._last.items() if seen < t - self.forget_s]:
            self._last.pop(tid)
            self._history.pop(tid, None)
            self._settled.pop(tid, None)
        det.data["stationary"] = flags
        return det
