"""What every decoder needs: checked parameters and a sigmoid that never overflows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt


def param_float(decoder: str, params: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    """params[key] (or `default`) as a float in [lo, hi]; ValueError naming the decoder otherwise."""
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{decoder}: param {key!r} must be a number in [{lo}, {hi}], got {value!r}")
    if not lo <= float(value) <= hi:
        raise ValueError(f"{decoder}: param {key!r} must be in [{lo}, {hi}], got {value!r}")
    return float(value)


def param_int(decoder: str, params: Mapping[str, Any], key: str, default: int, lo: int) -> int:
    """params[key] (or `default`) as an integer >= lo; ValueError naming the decoder otherwise."""
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{decoder}: param {key!r} must be an integer >= {lo}, got {value!r}")
    if value < lo:
        raise ValueError(f"{decoder}: param {key!r} must be >= {lo}, got {value!r}")
    return value


def sigmoid(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Elementwise logistic function, split by sign so that exp() never overflows."""
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out
