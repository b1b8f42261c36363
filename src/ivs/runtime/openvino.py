"""OpenVINO: Intel's runtime; reads ONNX, IR and TFLite, fast on x86 with VNNI."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
import openvino as ov

from ivs.errors import ModelError

_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "openvino": ".xml"}


class OpenVinoRunner:
    name = "openvino"

    def __init__(self, model: bytes, model_format: str, input_name: str, threads: int) -> None:
        if model_format == "openvino":
            raise ModelError("OpenVINO IR packages need the .bin beside the .xml; not supported yet")
        core = ov.Core()
        # read_model wants a path for ONNX/TFLite; the file lives only while it is read.
        fd, path = tempfile.mkstemp(suffix=_SUFFIX[model_format])
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(model)
            network = core.read_model(path)
        except Exception as err:
            raise ModelError(f"OpenVINO cannot read the model: {err}") from None
        finally:
            os.unlink(path)
        names = [n for p in network.inputs for n in p.get_names()]
        if input_name not in names:
            raise ModelError(f"model input {input_name!r} not found: the network has inputs {names}")
        self._compiled = core.compile_model(
            network,
            "CPU",
            {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"},
        )
        self._request = self._compiled.create_infer_request()
        self._input = input_name
        self._outputs = [(o, o.get_any_name()) for o in self._compiled.outputs]

    def run(self, tensor: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        result = self._request.infer({self._input: tensor})
        return {name: np.asarray(result[port]) for port, name in self._outputs}

    def close(self) -> None:
        self.__dict__.pop("_request", None)
        self.__dict__.pop("_compiled", None)
