"""Runners: execute a network on a tensor. One small class per inference engine."""

from __future__ import annotations

import importlib.util
import logging
import time
from typing import Any, Literal

import numpy as np

from ivs.errors import ModelError
from ivs.runtime import choice
from ivs.runtime.base import Runner
from ivs.runtime.choice import Choice

log = logging.getLogger(__name__)

RuntimeName = Literal["auto", "onnxruntime", "openvino", "litert", "onnxruntime-cuda"]
_FORMATS = {
    "onnxruntime": {"onnx"},
    "openvino": {"onnx", "openvino", "tflite"},
    "litert": {"tflite"},
    "onnxruntime-cuda": {"onnx"},
}
_MODULES = {
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "litert": "ai_edge_litert",
    "onnxruntime-cuda": "onnxruntime",
}
_PROVIDERS = {"onnxruntime-cuda": "CUDAExecutionProvider"}
"""Runtimes that need an onnxruntime execution provider besides the CPU's: onnxruntime-gpu
installed (it replaces onnxruntime) on a machine with an NVIDIA GPU and its CUDA libraries."""
NAMES = ", ".join(_FORMATS)


def available(model_format: str) -> list[str]:
    """Runners installed here that can read this model format (a GPU runtime only where its
    execution provider is there: skipped, not failed, on a machine without one)."""
    return [
        name
        for name, formats in _FORMATS.items()
        if model_format in formats
        and importlib.util.find_spec(_MODULES[name]) is not None
        and (name not in _PROVIDERS or _PROVIDERS[name] in _ort_providers())
    ]


def _ort_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


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
    if name == "onnxruntime-cuda":
        from ivs.runtime.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(model, input_name, threads, provider=_PROVIDERS[name], name=name)
    if name == "openvino":
        from ivs.runtime.openvino import OpenVinoRunner

        return OpenVinoRunner(model, model_format, input_name, threads, weights)
    if name == "litert":
        from ivs.runtime.litert import LiteRtRunner

        return LiteRtRunner(model, input_name, threads)
    raise ModelError(f"unknown runtime {name!r}: expected auto or one of {NAMES}")


def choose(
    runtime: str,
    model: bytes,
    model_format: str,
    input_name: str,
    sample: np.ndarray[Any, Any],
    threads: int = 2,
    weights: bytes | None = None,
    *,
    retime: bool = False,
) -> tuple[str, Choice | None]:
    """The runtime to create, and for "auto" how it was chosen: remembered for this network on
    this machine (`ivs.runtime.choice`), or timed now (each installed runner briefly, the
    fastest kept and remembered; `retime` times again even when one is remembered)."""
    candidates = available(model_format)
    if runtime != "auto":
        if runtime not in _FORMATS:
            raise ModelError(f"unknown runtime {runtime!r}: expected auto or one of {NAMES}")
        if runtime not in candidates:
            if model_format not in _FORMATS[runtime]:
                why = f"it cannot read {model_format} models"
            elif runtime in _PROVIDERS and importlib.util.find_spec(_MODULES[runtime]) is not None:
                why = (
                    f"onnxruntime has no {_PROVIDERS[runtime]} here (it needs onnxruntime-gpu and an NVIDIA GPU "
                    "with its CUDA libraries)"
                )
            else:
                why = f"the {_MODULES[runtime]} package is not installed"
            raise ModelError(f"runtime {runtime!r} cannot run this model: {why}; expected one of {candidates}")
        return runtime, None
    if not candidates:
        raise ModelError(f"no installed runtime reads {model_format} models")
    if len(candidates) == 1:
        return candidates[0], None
    choice_key = choice.key(model, weights, model_format, threads, candidates)
    remembered = None if retime else choice.recall(choice_key)
    if remembered is not None and remembered.runtime in candidates:
        log.info("%s", remembered.describe())
        return remembered.runtime, remembered
    medians = _time_in_child(candidates, model, model_format, input_name, sample, threads, weights)
    if medians is None:  # no child process here: time them in this one (RSS keeps every runtime loaded)
        medians = time_runners(candidates, model, model_format, input_name, sample, threads, weights)
    fastest = min(medians, key=lambda n: medians[n])
    made = choice.remember(choice_key, fastest, medians)
    log.info("%s", made.describe())
    return fastest, made


def time_runners(
    names: list[str],
    model: bytes,
    model_format: str,
    input_name: str,
    sample: np.ndarray[Any, Any],
    threads: int,
    weights: bytes | None,
) -> dict[str, float]:
    """Median seconds of 7 runs of `sample` on each runner, after one warm-up run."""
    medians: dict[str, float] = {}
    for name in names:
        runner = create(name, model, model_format, input_name, threads, weights)
        try:
            runner.run(sample)  # warm-up: first runs allocate and pick kernels
            times = []
            for _ in range(7):
                t0 = time.perf_counter()
                runner.run(sample)
                times.append(time.perf_counter() - t0)
            medians[name] = float(np.median(times))
        finally:
            runner.close()
    return medians


def _time_in_child(
    names: list[str],
    model: bytes,
    model_format: str,
    input_name: str,
    sample: np.ndarray[Any, Any],
    threads: int,
    weights: bytes | None,
) -> dict[str, float] | None:
    """`time_runners` in a throw-away process (`python -m ivs.runtime.timing`). Why: loading a
    runtime maps its libraries for good (OpenVINO's plugins alone add ~70 MB of RSS); timing the
    losers in the sensor would keep them there for its whole life. None when the child fails."""
    import pickle
    import subprocess
    import sys

    job = pickle.dumps((names, model, model_format, input_name, sample, threads, weights))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ivs.runtime.timing"], input=job, capture_output=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("runtime auto: cannot time the runtimes in a child process (%s): timing them here", err)
        return None
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        log.warning("runtime auto: the timing process failed (%s): timing the runtimes here", why[0])
        return None
    medians: dict[str, float] = pickle.loads(done.stdout)  # our own child's answer
    return medians
