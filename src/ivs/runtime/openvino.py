"""OpenVINO: Intel's runtime; reads ONNX, IR and TFLite, fast on x86 with VNNI."""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any

import numpy as np
import openvino as ov

from ivs.errors import ModelError

_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "openvino": ".xml"}

_bridge_lock = threading.Lock()
_bridge_ready = False
"""Whether this process has made its first inference (see `_first_inference`)."""


class OpenVinoRunner:
    name = "openvino"

    def __init__(
        self, model: bytes, model_format: str, input_name: str, threads: int, weights: bytes | None = None
    ) -> None:
        core = ov.Core()
        try:
            if model_format == "openvino":
                if weights is None:
                    raise ModelError("OpenVINO IR needs its weights (.bin) beside the .xml")
                network = core.read_model(model.decode(), ov.Tensor(np.frombuffer(weights, np.uint8)))
            else:
                network = _read_file(core, model, _SUFFIX[model_format])
        except ModelError:
            raise
        except Exception as err:
            raise ModelError(f"OpenVINO cannot read the model: {err}") from None
        names = [n for p in network.inputs for n in p.get_names()]
        if input_name not in names:
            raise ModelError(f"model input {input_name!r} not found: the network has inputs {names}")
        self._compiled = core.compile_model(
            network,
            "CPU",
            # f32, not the CPU's default bf16 where it has AVX512-BF16: the layers an int8
            # model keeps in float must compute what they computed when it was measured.
            {
                "INFERENCE_NUM_THREADS": threads,
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "f32",
            },
        )
        self._request = self._compiled.create_infer_request()
        self._input = input_name
        _first_inference(self._request, self._compiled.input(input_name))
        # A tensor may carry several names (a frozen graph's "logits:0" is also "Identity:0"):
        # answer to each of them.
        self._outputs = [(o, sorted(o.get_names())) for o in self._compiled.outputs]

    def run(self, tensor: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        result = self._request.infer({self._input: tensor})
        return {name: np.asarray(result[port]) for port, names in self._outputs for name in names}

    def cancel(self) -> bool:
        request = self.__dict__.get("_request")
        if request is not None:
            request.cancel()  # a run in progress raises; with none, this does nothing
        return True

    def close(self) -> None:
        self.__dict__.pop("_request", None)
        self.__dict__.pop("_compiled", None)


def _first_inference(request: ov.InferRequest, port: ov.ConstOutput) -> None:
    """The process's first inference, on zeros, made by one thread while others wait.

    Why: OpenVINO's Python module builds pybind11's numpy bridge (function-local statics) on
    first use, and two threads that first use it at the same moment can deadlock: one holds the
    static's guard and waits for the GIL, the other holds the GIL and waits for the guard
    (pybind11 #4877; seen here as a node whose two inference workers sat forever inside
    `InferRequest.infer`, at 0% CPU). Once built, the bridge is safe to share, so one inference
    through the same path (numpy in, numpy out) before any worker starts is enough.
    """
    global _bridge_ready
    with _bridge_lock:
        if _bridge_ready:
            return
        shape = port.get_partial_shape()
        dims = [d.get_length() if d.is_static else 1 for d in shape]
        zeros = np.zeros(dims, dtype=port.get_element_type().to_dtype())
        try:
            result = request.infer({port: zeros})
            for value in result.values():
                np.asarray(value)
        except RuntimeError:  # a shape the network refuses: build the bridge through a bare tensor
            np.asarray(ov.Tensor(zeros).data)
        _bridge_ready = True


def _read_file(core: ov.Core, model: bytes, suffix: str) -> ov.Model:
    # read_model wants a path for ONNX/TFLite; the file lives only while it is read.
    fd, path = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model)
        return core.read_model(path)
    finally:
        os.unlink(path)
