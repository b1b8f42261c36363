"""Points, lines and polygons in frame pixels, vectorised over detections."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

Anchor = Literal["bottom_center", "center", "top_center"]
FloatArray = npt.NDArray[np.float32]


def anchors(xyxy: FloatArray, anchor: Anchor) -> FloatArray:
    """(N, 2) anchor points of boxes. bottom_center is where a standing person touches the
    ground: what a floor-plan line or zone should be judged by."""
    x = (xyxy[:, 0] + xyxy[:, 2]) * 0.5
    if anchor == "bottom_center":
        y = xyxy[:, 3]
    elif anchor == "top_center":
        y = xyxy[:, 1]
    else:
        y = (xyxy[:, 1] + xyxy[:, 3]) * 0.5
    out: FloatArray = np.stack([x, y], axis=1).astype(np.float32)
    return out


def signed_distance(points: FloatArray, p1: tuple[float, float], p2: tuple[float, float]) -> FloatArray:
    """Signed distance in pixels from the infinite line p1->p2; positive on the side the
    vector p1->p2 turned 90 degrees clockwise on screen (y down) points to."""
    d = np.asarray(p2, np.float32) - np.asarray(p1, np.float32)
    rel = points - np.asarray(p1, np.float32)
    # On screen (y down), cross(d, rel) > 0 for points clockwise of d.
    cross = d[0] * rel[:, 1] - d[1] * rel[:, 0]
    out: FloatArray = (cross / max(float(np.hypot(*d)), 1e-9)).astype(np.float32)
    return out


def along(points: FloatArray, p1: tuple[float, float], p2: tuple[float, float]) -> FloatArray:
    """Position of each point's projection along the segment: 0 at p1, 1 at p2."""
    d = np.asarray(p2, np.float32) - np.asarray(p1, np.float32)
    rel = points - np.asarray(p1, np.float32)
    out: FloatArray = ((rel @ d) / max(float(d @ d), 1e-9)).astype(np.float32)
    return out


def inside_polygon(points: FloatArray, polygon: FloatArray) -> npt.NDArray[np.bool_]:
    """Whether each point is inside (or on the edge of) a polygon, by ray casting."""
    x, y = points[:, 0][:, None], points[:, 1][:, None]
    px, py = polygon[:, 0][None, :], polygon[:, 1][None, :]
    qx, qy = np.roll(polygon[:, 0], -1)[None, :], np.roll(polygon[:, 1], -1)[None, :]
    crosses = (py > y) != (qy > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xin = (qx - px) * (y - py) / (qy - py) + px
    hits = crosses & (x < xin)
    return np.asarray(hits.sum(axis=1) % 2 == 1)
