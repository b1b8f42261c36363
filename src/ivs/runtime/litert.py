"""LiteRT (TFLite) with XNNPACK: runs .tflite packages."""

from __future__ import annotations

from typing import Any

import numpy as np

from ivs.errors import ModelError


class LiteRtRunner:
    name = "litert"

    def __init__(self, model: bytes, input_name: str, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interp = Interpreter(model_content=model, num_threads=threads)
            self._interp.allocate_tensors()
        except Exception as err:
            raise ModelError(f"LiteRT cannot load the model: {err}") from None
        inputs = {d["name"]: d["index"] for d in self._interp.get_input_details()}
        if input_name not in inputs:
            raise ModelError(f"model input {input_name!r} not found: the network has inputs {list(inputs)}")
        self._input = inputs[input_name]
        self._outputs = [(d["name"], d["index"]) for d in self._interp.get_output_details()]

    def run(self, tensor: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        self._interp.set_tensor(self._input, tensor)
        self._interp.invoke()
        return {name: self._interp.get_tensor(index) for name, index in self._outputs}

    def cancel(self) -> bool:
        return False  # the interpreter has no way to interrupt an invoke

    def close(self) -> None:
        self.__dict__.pop("_interp", None)
