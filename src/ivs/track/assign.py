"""Minimum-cost matching of tracks to detections with a cost limit (SciPy's linear_sum_assignment)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]  # no stubs in the venv

from ivs.track.appearance import F64


def _assign(cost: F64, limit: float) -> list[tuple[int, int]]:
    """Min-cost matching where leaving a row and a column unmatched costs `limit`.

    Plain Hungarian assignment matches as many pairs as it can, and would take two mediocre
    matches over one good one; padding the matrix with "unmatched" slots at limit / 2 each side
    (what lap.lapjv's cost_limit, used by ByteTrack, does) lets it leave pairs unmatched
    instead, and a pair costing more than `limit` is never worth taking.
    """
    n, m = cost.shape
    big = limit + 1.0
    ext = np.full((n + m, n + m), limit / 2.0)
    ext[:n, :m] = np.where(cost <= limit, cost, big)
    ext[n:, m:] = 0.0
    rows, cols = linear_sum_assignment(ext)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if r < n and c < m and cost[r, c] <= limit]
