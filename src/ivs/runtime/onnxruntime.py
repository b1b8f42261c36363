"""onnxruntime: the portable default (x86 and ARM), CPU execution provider."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import onnxruntime as ort

from ivs.errors import ModelError


class OnnxRuntimeRunner:
    """onnxruntime on the CPU, or on a GPU's execution provider (`provider`, with the CPU's for
    the nodes it cannot run)."""

    def __init__(
        self, model: bytes, input_name: str, threads: int, provider: str | None = None, name: str = "onnxruntime"
    ) -> None:
        self.name = name
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            providers = [provider, "CPUExecutionProvider"] if provider else ["CPUExecutionProvider"]
            self._session = ort.InferenceSession(model, opts, providers=providers)
        except Exception as err:
            raise ModelError(f"onnxruntime cannot load the model: {err}") from None
        inputs = [i.name for i in self._session.get_inputs()]
        if input_name not in inputs:
            raise ModelError(f"model input {input_name!r} not found: the network has inputs {inputs}")
        self._input = input_name
        self._outputs = [o.name for o in self._session.get_outputs()]
        self._running: ort.RunOptions | None = None
        self._lock = threading.Lock()

    def run(self, tensor: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        options = ort.RunOptions()  # one per run: its terminate flag is how `cancel` stops this run
        with self._lock:
            self._running = options
        try:
            values = self._session.run(self._outputs, {self._input: tensor}, options)
        except Exception:
            if options.terminate:
                raise ModelError("onnxruntime: the run was cancelled") from None
            raise
        finally:
            with self._lock:
                self._running = None
        return dict(zip(self._outputs, values, strict=True))

    def cancel(self) -> bool:
        with self._lock:
            if self._running is not None:
                self._running.terminate = True
        return True

    def close(self) -> None:
        self.__dict__.pop("_session", None)
