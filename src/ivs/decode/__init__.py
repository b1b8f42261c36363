"""Decoders: pure functions from a model's raw output tensors to `Detections`.

One module per model family. A decoder never sees the frame: it gets the output tensors by
name, its parameters from the package manifest, the model input size, and the package's
array assets (for example SSD anchors). Boxes come back in model-input pixels; the sensor
maps them to full-frame pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ivs.detections import Detections


@dataclass(frozen=True)
class DecodeContext:
    """What a decoder may know besides the tensors: input size and the package's assets."""

    input_width: int
    input_height: int
    assets: Mapping[str, np.ndarray[Any, Any]]


Decoder = Callable[[Mapping[str, np.ndarray[Any, Any]], Mapping[str, Any], DecodeContext], Detections]

_REGISTRY: dict[str, Decoder] = {}


def register(name: str) -> Callable[[Decoder], Decoder]:
    def wrap(fn: Decoder) -> Decoder:
        _REGISTRY[name] = fn
        return fn

    return wrap


def names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get(name: str) -> Decoder:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown decoder {name!r}: expected one of {', '.join(sorted(_REGISTRY))}") from None


def _load_builtin() -> None:
    # Every module of this package registers its decoder when imported; found by name, so
    # `ivs.decode` imports none of them and there is no import cycle.
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
