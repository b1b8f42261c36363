"""Runners: execute a network on a tensor. One small class per inference engine."""

from __future__ import annotations

import importlib.util
import logging
import time
from typing import Any, Literal

import numpy as np

from ivs.errors import ModelError
from ivs.runtime.base import Runner

log = logging.getLogger(__name__)

RuntimeName = Literal["auto", "onnxruntime", "openvino", "litert"]
_FORMATS = {
    "onnxruntime": {"onnx"},
    "openvino": {"onnx", "openvino", "tflite"},
    "litert": {"tflite"},
}
_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "litert": "ai_edge_litert"}


def available(model_format: str) -> list[str]:
    """Runners installed here that can read this model format."""
    return [
        name
        for name, formats in _FORMATS.items()
        if model_format in formats and importlib.util.find_spec(_MODULES[name]) is not None
    ]


def create(
    name: str,
    model: bytes,
    model_format: str,
    input_name: str,
    threads: int,
    weights: bytes | None = None,
) -> Runner:
    if name == "onnxruntime":
        from ivs.runtime.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(model, input_name, threads)
    if name == "openvino":
        from ivs.runtime.openvino import OpenVinoRunner

        return OpenVinoRunner(model, model_format, input_name, threads, weights)
    if name == "litert":
        from ivs.runtime.litert import LiteRtRunner

        return LiteRtRunner(model, input_name, threads)
    raise ModelError(f"unknown runtime {name!r}: expected auto, onnxruntime, openvino or litert")


def load_runner(
    runtime: str,
    model: bytes,
    model_format: str,
    input_name: str,
    sample: np.ndarray[Any, Any],
    threads: int = 2,
    weights: bytes | None = None,
) -> Runner:
    """Create the asked runner; for "auto", time each available one briefly and keep the fastest."""
    candidates = available(model_format)
    if runtime != "auto":
        if runtime not in _FORMATS:
            raise ModelError(f"unknown runtime {runtime!r}: expected auto, onnxruntime, openvino or litert")
        if runtime not in candidates:
            why = (
                f"it cannot read {model_format} models"
                if model_format not in _FORMATS[runtime]
                else f"the {_MODULES[runtime]} package is not installed"
            )
            raise ModelError(f"runtime {runtime!r} cannot run this model: {why}; expected one of {candidates}")
        return create(runtime, model, model_format, input_name, threads, weights)
    if not candidates:
        raise ModelError(f"no installed runtime reads {model_format} models")
    if len(candidates) == 1:
        return create(candidates[0], model, model_format, input_name, threads, weights)
    best: tuple[float, Runner] | None = None
    for name in candidates:
        runner = create(name, model, model_format, input_name, threads, weights)
        runner.run(sample)  # warm-up: first runs allocate and pick kernels
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            runner.run(sample)
            times.append(time.perf_counter() - t0)
        median = float(np.median(times))
        log.info("runtime auto: %s %.2f ms", name, median * 1e3)
        if best is None or median < best[0]:
            if best is not None:
                best[1].close()
            best = (median, runner)
        else:
            runner.close()
    assert best is not None
    return best[1]
