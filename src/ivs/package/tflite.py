"""TFLite models for LiteRT: int8 static quantization with Google's AI Edge Quantizer, and the
budget report of a .tflite file.

`pack --target litert` keeps a TFLite source in TFLite: `quantize` gives it int8 weights
(per output channel) and int8 activations (AI Edge Quantizer's `static_wi8_ai8` recipe, MinMax
ranges) calibrated on the calibration images through the sensor's own ISP, so the package runs on
LiteRT (and OpenVINO, which reads .tflite). The model's input and outputs stay float32 (a
QUANTIZE op after the input, DEQUANTIZE ops before the outputs), so the runners feed it the ISP's
tensor as they feed the float model.

Needs `pip install 'ivs[pack]'` (ai-edge-quantizer; it imports no TensorFlow).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ivs.errors import PackageError
from ivs.isp import InputSpec
from ivs.package.manifest import BudgetReport

SIGNATURE = "serving_default"

# Elementwise activations an int8 accelerator fuses into the op before them (budget.py's rule).
_IN_PLACE = {"RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU", "LOGISTIC", "TANH", "HARD_SWISH", "ELU"}


def is_tflite(data: bytes) -> bool:
    """A TFLite flatbuffer carries the file identifier "TFL3" at bytes 4..8."""
    return data[4:8] == b"TFL3"


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _read(data: bytes) -> Any:
    """The model as the flatbuffer object API's ModelT (mutable lists, buffers resolved)."""
    from ai_edge_litert.tools import flatbuffer_utils

    if not is_tflite(data):
        raise PackageError("not a TFLite model (no TFL3 file identifier)")
    try:
        return flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    except Exception as err:
        raise PackageError(f"cannot read the TFLite model: {err}") from None


def _write(model: Any) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _name(tensor: Any) -> str:
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name or "")


def _op_name(model: Any, op: Any) -> str:
    from ai_edge_litert.tools import flatbuffer_utils

    return str(flatbuffer_utils.opcode_to_name(model, op.opcodeIndex))


def io_names(data: bytes) -> tuple[list[str], list[str]]:
    """Names of the main subgraph's inputs and outputs."""
    sg = _read(data).subgraphs[0]
    return [_name(sg.tensors[i]) for i in sg.inputs], [_name(sg.tensors[i]) for i in sg.outputs]


def float_model(data: bytes) -> bytes:
    """The model with fp32 constants, and a signature, as AI Edge Quantizer needs it.

    Converters often store weights as float16 constants read through DEQUANTIZE ops
    (MediaPipe's models do); the quantizer takes those DEQUANTIZE outputs for activations. Each
    is folded into a float32 constant (exact: fp16 -> fp32 loses nothing), the unused fp16
    tensors are dropped, and a `serving_default` signature naming the subgraph's inputs and
    outputs is added when the model has none (the quantizer calibrates through signatures).
    """
    schema = _schema()
    model = _read(data)
    if len(model.subgraphs) != 1:
        raise PackageError(f"the TFLite model has {len(model.subgraphs)} subgraphs: expected 1")
    sg = model.subgraphs[0]
    # Files from before schema 3a keep the op code only in `deprecatedBuiltinCode` (`builtinCode`
    # reads 0, ADD); the quantizer reads `builtinCode`, and would take every op for an ADD.
    for code in model.operatorCodes:
        code.builtinCode = max(code.builtinCode, code.deprecatedBuiltinCode)
    kept = []
    for op in sg.operators:
        src = sg.tensors[op.inputs[0]] if op.inputs else None
        if (
            _op_name(model, op) == "DEQUANTIZE"
            and src is not None
            and src.type == schema.TensorType.FLOAT16
            and model.buffers[src.buffer].data is not None
            and len(model.buffers[src.buffer].data) > 0
        ):
            weights = np.frombuffer(bytes(model.buffers[src.buffer].data), np.float16).astype(np.float32)
            model.buffers[src.buffer] = schema.BufferT()
            model.buffers.append(schema.BufferT(data=np.frombuffer(weights.tobytes(), np.uint8)))
            folded = sg.tensors[op.outputs[0]]
            folded.buffer = len(model.buffers) - 1
            folded.name = src.name  # "conv2d/Kernel", not "conv2d/Kernel_dequantize"
            src.buffer = 0
            continue
        kept.append(op)
    kept = _fuse_relu(model, kept, sg)
    if len(kept) < len(sg.operators):
        sg.operators = kept
        used = sorted({i for op in kept for i in [*op.inputs, *op.outputs] if i >= 0} | {*sg.inputs, *sg.outputs})
        index = {old: new for new, old in enumerate(used)}
        sg.tensors = [sg.tensors[i] for i in used]
        for op in kept:
            op.inputs = [index[i] if i >= 0 else i for i in op.inputs]
            op.outputs = [index[i] for i in op.outputs]
        sg.inputs = [index[i] for i in sg.inputs]
        sg.outputs = [index[i] for i in sg.outputs]
        for sig in model.signatureDefs or []:
            for tm in [*(sig.inputs or []), *(sig.outputs or [])]:
                tm.tensorIndex = index[tm.tensorIndex]
    if not model.signatureDefs:

        def tensor_map(i: int) -> Any:
            return schema.TensorMapT(name=_name(sg.tensors[i]), tensorIndex=i)

        model.signatureDefs = [
            schema.SignatureDefT(
                inputs=[tensor_map(i) for i in sg.inputs],
                outputs=[tensor_map(i) for i in sg.outputs],
                signatureKey=SIGNATURE,
                subgraphIndex=0,
            )
        ]
    return _write(model)


# Ops whose options carry a fused activation, as the TFLite converter writes them.
_FUSABLE = {"ADD", "CONV_2D", "DEPTHWISE_CONV_2D"}


def _fuse_relu(model: Any, ops: list[Any], sg: Any) -> list[Any]:
    """Fold each RELU into the ADD / CONV_2D / DEPTHWISE_CONV_2D that is its input's only
    writer and whose output only it reads (`fused_activation_function: RELU`, what the TFLite
    converter does). Same float results; in int8 it matters: LiteRT's XNNPACK delegate takes
    no standalone int8 RELU, and each one would cut the graph out of the delegate (BlazeFace's
    17 RELUs after ADDs: 18 delegate partitions, int8 4x slower than float)."""
    schema = _schema()
    readers: dict[int, int] = {}
    for op in ops:
        for i in op.inputs:
            readers[i] = readers.get(i, 0) + 1
    writer = {out: op for op in ops for out in op.outputs}
    fused: set[int] = set()
    for k, op in enumerate(ops):
        if _op_name(model, op) != "RELU" or not op.inputs:
            continue
        src = op.inputs[0]
        producer = writer.get(src)
        if (
            producer is None
            or _op_name(model, producer) not in _FUSABLE
            or readers.get(src) != 1
            or src in sg.outputs
            or producer.builtinOptions is None
            or producer.builtinOptions.fusedActivationFunction != schema.ActivationFunctionType.NONE
        ):
            continue
        producer.builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.RELU
        producer.outputs = [op.outputs[0]]
        writer[op.outputs[0]] = producer
        fused.add(k)
    return [op for k, op in enumerate(ops) if k not in fused]


def quantize(
    data: bytes,
    spec: InputSpec,
    tensors: Sequence[np.ndarray[Any, Any]],
    *,
    nodes_to_exclude: Sequence[str] = (),
) -> bytes:
    """int8 weights and activations (AI Edge Quantizer `static_wi8_ai8`), float32 input/outputs.

    `tensors` are the calibration images through the ISP. `nodes_to_exclude` names ops by their
    output tensor names (TFLite ops have no names of their own); they stay float.
    """
    try:
        from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe, recipe_manager
    except ImportError:
        raise PackageError(
            "int8 TFLite for LiteRT needs AI Edge Quantizer: pip install 'ivs[pack]' (ai-edge-quantizer)"
        ) from None
    fp32 = float_model(data)
    inputs, outputs = io_names(fp32)
    if spec.name not in inputs:
        raise PackageError(f"spec input {spec.name!r} is not a model input: it has {inputs}")
    signature = _signature_input_name(fp32, spec.name)
    sg = _read(fp32).subgraphs[0]
    op_outputs = {_name(sg.tensors[i]) for op in sg.operators for i in op.outputs}
    unknown = sorted(set(nodes_to_exclude) - op_outputs)
    if unknown:
        raise PackageError(
            f"quantize nodes_to_exclude {unknown} are not op outputs of the model: a TFLite op is named "
            f"by its output tensor (RELUs fused into the op before them), e.g. {sorted(op_outputs)[:8]}"
        )
    rules = recipe_manager.RecipeManager()
    rules.load_quantization_recipe(recipe.static_wi8_ai8())
    no_quantize = algorithm_manager.AlgorithmName.NO_QUANTIZE
    op = qtyping.TFLOperationName
    # Later rules win. The model's input and outputs stay float32: the runners feed the ISP's
    # float tensor and the decoders read float outputs.
    rules.add_quantization_config(".*", op.INPUT, algorithm_key=no_quantize)
    rules.add_quantization_config(".*", op.OUTPUT, algorithm_key=no_quantize)
    if nodes_to_exclude:
        scope = "|".join(re.escape(n) for n in nodes_to_exclude)
        rules.add_quantization_config(f"(^|.*;)({scope});", op.ALL_SUPPORTED, algorithm_key=no_quantize)
    qt = quantizer.Quantizer(bytearray(fp32), rules.get_quantization_recipe())
    calibration = {SIGNATURE: [{signature: t} for t in tensors]}
    try:
        with warnings.catch_warnings():
            # LiteRT warns that keeping every intermediate tensor is for debugging: calibration
            # needs exactly that (the ranges of every activation).
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
            ranges = qt.calibrate(calibration, num_threads=1)
            result = qt.quantize(ranges, enable_progress_bar=False, enable_progress_report=False)
    except PackageError:
        raise
    except Exception as err:
        raise PackageError(f"AI Edge Quantizer cannot quantize this model: {err}") from None
    if result.quantized_model is None:
        raise PackageError("AI Edge Quantizer returned no model")
    out = _restore_io_names(bytes(result.quantized_model), inputs, outputs)
    if io_names(out) != (inputs, outputs):
        raise PackageError(
            f"the quantized model's inputs and outputs are {io_names(out)}: expected {(inputs, outputs)}"
        )
    return out


def _restore_io_names(data: bytes, inputs: list[str], outputs: list[str]) -> bytes:
    """Give the float input/output tensors their original names back (and fix the op codes).

    The quantizer names the DEQUANTIZE op it adds before an output `x_dequant` and leaves `x`
    on the int8 tensor; the spec names `x`. The int8 tensors become `x_int8`.
    """
    model = _read(data)
    # The op codes the quantizer adds (QUANTIZE, DEQUANTIZE) leave `deprecatedBuiltinCode` at 0,
    # which readers of the older field (OpenVINO's TFLite frontend) take for ADD.
    for code in model.operatorCodes:
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)  # 127: "see builtinCode"
    sg = model.subgraphs[0]
    by_name = {_name(t): t for t in sg.tensors}
    for index, want in zip([*sg.inputs, *sg.outputs], [*inputs, *outputs], strict=True):
        tensor = sg.tensors[index]
        if _name(tensor) == want:
            continue
        if want in by_name:
            by_name[want].name = f"{want}_int8"
        tensor.name = want
    return _write(model)


def _signature_input_name(data: bytes, tensor_name: str) -> str:
    """The signature's name for the input tensor (a converter may name them differently)."""
    model = _read(data)
    sg = model.subgraphs[0]
    for sig in model.signatureDefs or []:
        for tm in sig.inputs or []:
            if _name(sg.tensors[tm.tensorIndex]) == tensor_name:
                return tm.name.decode() if isinstance(tm.name, bytes) else str(tm.name)
    return tensor_name


def budget_report(data: bytes, budget_bytes: int, top: int = 5) -> BudgetReport:
    """Weights and peak live activations of a TFLite model, batch 1, by `budget.py`'s rules.

    Weights: every constant buffer as stored (int8 1 byte, int32 biases 4) plus the
    quantization scales (4 bytes each). Activations: walking the ops in order, each tensor lives
    from the op that writes it to the last op that reads it; in a quantized model QUANTIZE and
    DEQUANTIZE of activations are looked through and every activation counts one byte per
    element, as an int8 accelerator stores it; an elementwise activation (RELU, ...) that is the
    only reader of its input overwrites it.
    """
    model = _read(data)
    sg = model.subgraphs[0]
    consts = {
        i
        for i, t in enumerate(sg.tensors)
        if model.buffers[t.buffer].data is not None and len(model.buffers[t.buffer].data) > 0
    }
    weights: dict[str, int] = {}
    for i in consts:
        t = sg.tensors[i]
        q = t.quantization
        scales = 0 if q is None or q.scale is None else len(q.scale)
        weights[_name(t) or f"tensor{i}"] = len(model.buffers[t.buffer].data) + 4 * scales
    weight_bytes = sum(weights.values())

    names = [_op_name(model, op) for op in sg.operators]
    quantized = any(sg.tensors[i].type in (_schema().TensorType.INT8, _schema().TensorType.UINT8) for i in consts)
    elem = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 8}  # TensorType -> bytes

    def size(i: int) -> int:
        t = sg.tensors[i]
        shape = [max(int(d), 1) for d in (t.shape if t.shape is not None else [])]
        return math.prod(shape) * (1 if quantized else elem.get(int(t.type), 4))

    alias: dict[int, int] = {}
    for op, name in zip(sg.operators, names, strict=True):
        if name in ("QUANTIZE", "DEQUANTIZE") and op.inputs[0] not in consts:
            alias[op.outputs[0]] = alias.get(op.inputs[0], op.inputs[0])
    compute = [(op, n) for op, n in zip(sg.operators, names, strict=True) if op.outputs[0] not in alias]
    last_use: dict[int, int] = {}
    readers: dict[int, int] = {}
    for step, (op, _) in enumerate(compute):
        for i in {alias.get(i, i) for i in op.inputs if i >= 0 and i not in consts}:
            last_use[i] = step
            readers[i] = readers.get(i, 0) + 1
    for i in sg.outputs:
        last_use[alias.get(i, i)] = len(compute)
    live = {i: size(i) for i in sg.inputs}
    peak = sum(live.values())
    for step, (op, name) in enumerate(compute):
        if name in _IN_PLACE and op.inputs:
            src = alias.get(op.inputs[0], op.inputs[0])
            if readers.get(src) == 1 and src in live and last_use.get(src) == step:
                del live[src]  # the activation overwrites its input
        for i in op.outputs:
            live[i] = size(i)
        peak = max(peak, sum(live.values()))
        for i in list(live):
            if last_use.get(i, -1) <= step:
                del live[i]
    return BudgetReport.of(budget_bytes, weight_bytes, peak, weights.items(), top)


def calibration_tensors(
    images: Sequence[Path], spec: InputSpec, progress: Callable[[int], None]
) -> list[np.ndarray[Any, Any]]:
    """The calibration images through the sensor's ISP (as quantize.py and convert.py do)."""
    from ivs.package.quantize import calibration_tensors as through_isp

    tensors = []
    for path in images:
        tensors.extend(through_isp([path], spec))
        progress(1)
    return tensors


def has_int8_weights(data: bytes) -> bool:
    """Whether any constant of the model is stored as int8 / uint8 (a quantized model)."""
    model = _read(data)
    schema = _schema()
    return any(
        t.type in (schema.TensorType.INT8, schema.TensorType.UINT8)
        and model.buffers[t.buffer].data is not None
        and len(model.buffers[t.buffer].data) > 0
        for sg in model.subgraphs
        for t in sg.tensors
    )
