"""Does batching across streams pay? Each zoo network at batch 1, 2, 4 and 8, per runtime.

A node could stack the inputs of several streams into one run. That pays only where the
runtime finishes a batch of N in less than N runs of one. Every zoo network is exported with a
fixed batch of 1, so each is first made batch-N: onnxruntime with the input's batch dimension
made symbolic (the shapes inside re-inferred), OpenVINO with `reshape`. A network whose graph
hard-codes its batch (a Reshape to [1, ...]) cannot be batched either way; the table says so.

    python -m ivs.bench.batching [--threads 1]      # a markdown table on stdout
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

BATCHES = (1, 2, 4, 8)


def _per_item_ms(run: Callable[[np.ndarray[Any, Any]], Any], sample: np.ndarray[Any, Any], n: int) -> float:
    batch = np.repeat(sample, n, axis=0)
    run(batch)  # warm-up
    times = []
    for _ in range(max(3, 24 // n)):
        t0 = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3 / n


def _onnxruntime(model: bytes, input_name: str, threads: int) -> Callable[[np.ndarray[Any, Any]], Any]:
    import onnx
    import onnxruntime as ort

    graph = onnx.load_from_string(model)
    for value in graph.graph.input:
        if value.name == input_name:
            value.type.tensor_type.shape.dim[0].dim_param = "N"
    for value in graph.graph.output:
        if value.type.tensor_type.shape.dim:
            value.type.tensor_type.shape.dim[0].dim_param = "N"
    del graph.graph.value_info[:]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 4
    session = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {input_name: x})


def _openvino(model: bytes, fmt: str, input_name: str, threads: int, n: int) -> Callable[[np.ndarray[Any, Any]], Any]:
    import openvino as ov

    from ivs.runtime.openvino import _SUFFIX, _read_file

    core = ov.Core()
    network = _read_file(core, model, _SUFFIX[fmt])
    shape = list(network.input(input_name).get_partial_shape().to_shape())
    network.reshape({input_name: [n, *shape[1:]]})
    compiled = core.compile_model(network, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                   "INFERENCE_PRECISION_HINT": "f32"})  # fmt: skip
    request = compiled.create_infer_request()
    return lambda x: request.infer({input_name: x})


def measure(name: str, threads: int) -> list[tuple[str, str, list[str]]]:
    """(model, runtime, per-item ms at each batch or why not) for one zoo network."""
    from ivs.isp import Isp
    from ivs.package.reader import read_package
    from ivs.package.zoo import resolve

    package = read_package(resolve(name))
    m = package.manifest
    if m.model.format != "onnx":
        return [(name, "-", [f"{m.model.format} model: not measured"] * len(BATCHES))]
    sample = Isp(m.input).process(np.zeros((m.input.height, m.input.width, 3), np.uint8)).tensor
    rows = []
    for runtime in ("onnxruntime", "openvino"):
        cells = []
        for n in BATCHES:
            try:
                if runtime == "onnxruntime":
                    run = _onnxruntime(package.model_bytes, m.input.name, threads)
                else:
                    run = _openvino(package.model_bytes, "onnx", m.input.name, threads, n)
                cells.append(f"{_per_item_ms(run, sample, n):.2f}")
            except Exception:  # a graph that hard-codes batch 1 (a Reshape to [1, ...]): say so, go on
                cells.append("fixed at batch 1")
        rows.append((name, runtime, cells))
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m ivs.bench.batching [--threads T]`: per-item ms at batch 1, 2, 4, 8 as markdown."""
    import argparse

    from ivs.package.zoo import names

    parser = argparse.ArgumentParser(prog="python -m ivs.bench.batching", description=main.__doc__)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    out = ["| model | runtime | " + " | ".join(f"batch {n}: ms per input" for n in BATCHES) + " |",
           "| --- | --- |" + " ---: |" * len(BATCHES)]  # fmt: skip
    for name in names():
        for model, runtime, cells in measure(name, args.threads):
            out.append(f"| {model} | {runtime} | " + " | ".join(cells) + " |")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
