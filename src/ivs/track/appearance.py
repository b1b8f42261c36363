"""What a box looks like, cheaply (no learned model): hue/saturation and grey histograms of its
upper and lower halves, and how much of a box other boxes cover."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ivs.detections import FloatArray, IntArray

F64 = npt.NDArray[np.float64]
UInt8Array = npt.NDArray[np.uint8]


_HUE_BINS, _SAT_BINS, _GREY_BINS = 8, 3, 4
_MIN_SAT, _MIN_VALUE = 0.2, 0.15
_PART_SIZE = _HUE_BINS * _SAT_BINS + _GREY_BINS
_FEATURE_SIZE = 2 * _PART_SIZE


def appearance_features(pixels: UInt8Array, xyxy: FloatArray) -> F64:
    """Colour descriptors of boxes in an RGB frame: (N, D) unit vectors, 0 for empty boxes.

    Each box's middle 60 % of width (less background) is split into an upper (10-50 % of the
    height: torso) and a lower half (50-95 %: legs), and each gets a colour histogram of 8 hues
    x 3 saturations plus 4 grey levels for unsaturated or dark pixels, on at most about 64 rows.
    The vector is the square roots of the two normalised histograms, so that 1 - a.b, the
    distance the tracker uses, is the squared Hellinger distance between the halves' colours
    (0 alike, 1 nothing in common). About 0.1 ms a box.
    """
    out = np.zeros((len(xyxy), _FEATURE_SIZE))
    height, width = pixels.shape[:2]
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(xyxy, np.float64)):
        w, h = x2 - x1, y2 - y1
        cx = (x1 + x2) / 2
        xa, xb = int(max(0, cx - 0.3 * w)), int(min(width, cx + 0.3 * w))
        ya, ym, yb = (int(min(max(0, y1 + f * h), height)) for f in (0.1, 0.5, 0.95))
        step = max(1, int(h // 64))
        parts = []
        for crop in (pixels[ya:ym:step, xa:xb:step], pixels[ym:yb:step, xa:xb:step]):
            hist = np.bincount(_colour_bins(crop), minlength=_PART_SIZE).astype(np.float64)
            parts.append(np.sqrt(hist / max(hist.sum(), 1.0)))
        f = np.concatenate(parts)
        n = np.linalg.norm(f)
        if n > 0:
            out[k] = f / n
    return out


def _colour_bins(rgb: UInt8Array) -> IntArray:
    x = rgb.reshape(-1, 3).astype(np.float32) / 255.0
    hi, lo = x.max(axis=1), x.min(axis=1)
    chroma = hi - lo
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    c = np.maximum(chroma, 1e-6)
    hue = np.where(hi == r, ((g - b) / c) % 6, np.where(hi == g, (b - r) / c + 2, (r - g) / c + 4)) / 6
    sat = chroma / np.maximum(hi, 1e-6)
    hb = np.minimum((hue * _HUE_BINS).astype(np.int64), _HUE_BINS - 1)
    sb = np.minimum(((sat - _MIN_SAT) / (1 - _MIN_SAT) * _SAT_BINS).astype(np.int64), _SAT_BINS - 1)
    vb = np.minimum((hi * _GREY_BINS).astype(np.int64), _GREY_BINS - 1)
    bins: IntArray = np.where((sat >= _MIN_SAT) & (hi >= _MIN_VALUE), hb * _SAT_BINS + sb, _HUE_BINS * _SAT_BINS + vb)
    return bins


def _cover(a: FloatArray | F64, b: FloatArray | F64) -> F64:
    """(N, M): the fraction of each box in `a` that each box in `b` covers."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    out: F64 = inter / np.maximum(area, 1e-9)[:, None]
    return out


def _max_cover(xyxy: FloatArray) -> F64:
    """For each box, the largest fraction of its area that one other box covers."""
    b = np.asarray(xyxy, np.float64)
    tl = np.maximum(b[:, None, :2], b[None, :, :2])
    br = np.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    np.fill_diagonal(inter, 0.0)
    area = np.prod(b[:, 2:] - b[:, :2], axis=1)
    out: F64 = inter.max(axis=1, initial=0.0) / np.maximum(area, 1e-9)
    return out
