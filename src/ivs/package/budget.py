"""Budget report: weight bytes, peak activation bytes and the heaviest layers of an ONNX model
(or a TFLite model, `ivs.package.tflite.budget_report`).

The IMX500 holds a whole network in about 8 MiB of on-chip memory; a package states what it
needs so that a model that would not fit is refused at pack time, not discovered on a device.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper, shape_inference

from ivs.package.manifest import BudgetReport

DEFAULT_BUDGET = 8 * 1024 * 1024

_ELEM_BYTES: dict[int, int] = {
    onnx.TensorProto.FLOAT: 4,
    onnx.TensorProto.UINT8: 1,
    onnx.TensorProto.INT8: 1,
    onnx.TensorProto.INT32: 4,
    onnx.TensorProto.INT64: 8,
    onnx.TensorProto.FLOAT16: 2,
    onnx.TensorProto.BOOL: 1,
    onnx.TensorProto.DOUBLE: 8,
}


# Elementwise activations an int8 accelerator runs in place (fused into the op before them):
# when the activation is the only reader of its input, output and input share one buffer.
_IN_PLACE = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu"}

# Sub-byte element types, stored packed (two int4 per byte).
_ELEM_BITS: dict[int, int] = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}


def _init_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes of a weight as stored: int4 packs two per byte (numpy unpacks them to one each)."""
    bits = _ELEM_BITS.get(int(tensor.data_type))
    if bits is None:
        return int(numpy_helper.to_array(tensor).nbytes)
    n = 1
    for d in tensor.dims:
        n *= d
    return (n * bits + 7) // 8


def _tensor_bytes(vi: onnx.ValueInfoProto, element_bytes: int | None = None) -> int:
    t = vi.type.tensor_type
    n = 1
    for d in t.shape.dim:
        n *= d.dim_value if d.dim_value > 0 else 1
    return int(n * (element_bytes or _ELEM_BYTES.get(int(t.elem_type), 4)))


_WIDE = {onnx.TensorProto.UINT16, onnx.TensorProto.INT16}


def _count_16bit_activations(graph: onnx.GraphProto, values: list[onnx.ValueInfoProto], sizes: dict[str, int]) -> None:
    """Two bytes per element for the activations a QuantizeLinear stores in 16 bits (W8A16,
    quantize `int16_activations`), and for the tensors in-place activations in front of it
    overwrite (the saturating Clip the packer puts before each)."""
    inits = {i.name: i for i in graph.initializer}
    info = {vi.name: vi for vi in values}
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits or len(node.input) < 3:
            continue
        zero = inits.get(node.input[2])
        if zero is None or zero.data_type not in _WIDE:
            continue
        name = node.input[0]
        while name in info:
            sizes[name] = _tensor_bytes(info[name], 2)
            before = producer.get(name)
            if before is None or before.op_type not in _IN_PLACE or readers.get(before.input[0]) != 1:
                break
            name = before.input[0]


def budget_report(model_bytes: bytes, budget_bytes: int = DEFAULT_BUDGET, top: int = 5) -> BudgetReport:
    if model_bytes[4:8] == b"TFL3":  # a TFLite flatbuffer: the same rules, in ivs.package.tflite
        from ivs.package.tflite import budget_report as tflite_budget_report

        return tflite_budget_report(model_bytes, budget_bytes, top)
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    # Weight bytes as stored (int8 weights count 1 byte each, int4 half a byte, their scales 4).
    weights = [(init.name, _init_bytes(init)) for init in graph.initializer]
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.t is not None and attr.t.dims is not None and attr.name == "value":
                    weights.append((node.output[0], _init_bytes(attr.t)))
    weight_bytes = sum(b for _, b in weights)
    init_names = {i.name for i in graph.initializer}

    # Peak activations: walk the nodes in graph (topological) order and keep each tensor
    # alive from the node that makes it to the last node that reads it. In a QDQ model the
    # Quantize/Dequantize pairs only mark where tensors are int8: they are looked through,
    # and every activation counts one byte per element, as an int8 accelerator stores it
    # (two for those quantized to 16 bits).
    inferred = shape_inference.infer_shapes(model).graph
    values = [*inferred.value_info, *inferred.input, *inferred.output]
    quantized = any(n.op_type == "QuantizeLinear" for n in graph.node)
    sizes = {vi.name: _tensor_bytes(vi, 1 if quantized else None) for vi in values}
    if quantized:
        _count_16bit_activations(graph, values, sizes)
    alias: dict[str, str] = {}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[0] not in init_names:
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
    # Dequantized weights are weights (counted above), not activations.
    weight_views = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in init_names}
    compute = [
        n for n in graph.node if n.op_type != "Constant" and n.output and n.output[0] not in alias.keys() | weight_views
    ]
    last_use: dict[str, int] = {}
    for step, node in enumerate(compute):
        for name in node.input:
            if name not in weight_views:
                last_use[alias.get(name, name)] = step
    for out in graph.output:
        last_use[alias.get(out.name, out.name)] = len(compute)
    live: dict[str, int] = {i.name: sizes.get(i.name, 0) for i in graph.input if i.name not in init_names}
    peak = sum(live.values())
    readers: dict[str, int] = {}
    for node in compute:
        for name in {alias.get(i, i) for i in node.input if i not in weight_views}:
            readers[name] = readers.get(name, 0) + 1
    for step, node in enumerate(compute):
        if node.op_type in _IN_PLACE and node.input:
            src = alias.get(node.input[0], node.input[0])
            if readers.get(src) == 1 and src in live and last_use.get(src) == step:
                del live[src]  # the activation overwrites its input
        for name in node.output:
            live[name] = sizes.get(name, 0)
        peak = max(peak, sum(live.values()))
        for name in list(live):
            if last_use.get(name, -1) <= step:
                del live[name]

    # Group per layer: a QDQ model splits a conv's weight into the int8 tensor and its scales.
    by_layer: dict[str, int] = {}
    for name, nbytes in weights:
        layer = name.removesuffix("_quantized").removesuffix("_scale").removesuffix("_zero_point")
        by_layer[layer] = by_layer.get(layer, 0) + nbytes
    return BudgetReport.of(budget_bytes, weight_bytes, peak, by_layer.items(), top)


def describe_overflow(report: BudgetReport) -> str:
    need = report.weight_bytes + report.peak_activation_bytes
    over = need - report.budget_bytes
    heavy = ", ".join(f"{layer.name} ({layer.bytes / 1024:.0f} KiB)" for layer in report.largest_layers[:3])
    return (
        f"needs {need / 2**20:.2f} MiB (weights {report.weight_bytes / 2**20:.2f} MiB + peak "
        f"activations {report.peak_activation_bytes / 2**20:.2f} MiB), {over / 2**20:.2f} MiB over "
        f"the {report.budget_bytes / 2**20:.2f} MiB budget; heaviest layers: {heavy}"
    )
