"""int8 static quantization (onnxruntime QDQ, per-channel) calibrated on real images.

Calibration images go through the same ISP the sensor uses, so the int8 ranges are those of
the tensors the model will really see. Two post-training refinements act on the QDQ model
onnxruntime writes:

- int4 weights for named nodes (`int4_nodes`): per-output-channel symmetric int4 with the
  clipping scale that minimises each channel's squared rounding error, for the heaviest
  layers of a model that would not fit its memory budget in int8;
- bias correction (`bias_correction`): rounding the weights shifts each output channel's
  mean by sum(dW * E[x]); E[x] is measured on the calibration images with the fp32 model and
  the shift is folded back into the bias (Nagel et al. 2019, "Data-Free Quantization",
  empirical variant);
- precomputed rounding (`rounded_weights`): int8 weights chosen by the recipe (AdaRound,
  Nagel et al. 2020: round each weight up or down to minimise its layer's output error on
  calibration data) replace round-to-nearest, on the packer's own per-channel scales; each
  value must be the floor or the ceiling of w / scale, so the recipe chooses only the
  rounding, never the scales or the weights themselves;
- 16-bit activations for named tensors (`int16_activations`, W8A16 mixed precision as in
  Qualcomm AIMET or Sony MCT): the calibrated range of each is kept and split into 65536
  steps instead of 256 (uint16, scale / 257, zero point * 257); weights stay int8. Each such
  QuantizeLinear gets an explicit Clip to its range in front (the saturation that stands for
  a fused ReLU6, which OpenVINO does not apply for 16-bit QuantizeLinear), the Conv/Gemm that
  read one keep their bias in float (int32 at input_scale * weight_scale would overflow, as a
  16-bit accelerator accumulates wider), and the model moves to opset 21 (uint16
  QuantizeLinear).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import ml_dtypes
import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from ivs.errors import ModelError
from ivs.isp import InputSpec, Isp

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}

# spec["quantize"]["calibrate_method"] -> onnxruntime's calibration method. "percentile" clips
# each activation range to its 99.999th percentile instead of the min/max over all images.
CALIBRATE_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}

# INT4 DequantizeLinear needs opset 21.
INT4_OPSET = 21

Array = npt.NDArray[Any]


def calibration_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ModelError(f"calibration folder {folder} not found: expected a folder of images")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ModelError(
            f"calibration folder {folder} holds no images: expected .jpg/.png files of the "
            "scenes the model will see (20 or more)"
        )
    return images


def _load_tensors(images: Sequence[Path], spec: InputSpec, progress: Callable[[int], None]) -> list[Array]:
    isp = Isp(spec)
    tensors = []
    for path in images:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ModelError(f"calibration image {path} cannot be read: expected a JPEG or PNG")
        tensors.append(isp.process(np.ascontiguousarray(bgr[..., ::-1])).tensor)
        progress(1)
    return tensors


def calibration_tensors(images: Sequence[Path], spec: InputSpec) -> list[Array]:
    """The model-input tensors of the calibration images, through the sensor's ISP (used by
    recipes that tune the rounding on the same data as the packer, zoo/classifier/adaround.py)."""
    return _load_tensors(images, spec, lambda n: None)


class _Reader(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, tensors: Sequence[Array], name: str) -> None:
        self._it = iter(tensors)
        self._name = name

    def get_next(self) -> dict[str, Array] | None:
        tensor = next(self._it, None)
        return None if tensor is None else {self._name: tensor}


def quantize_onnx(
    fp32: bytes,
    spec: InputSpec,
    images: Sequence[Path],
    *,
    per_channel: bool = True,
    nodes_to_exclude: Sequence[str] = (),
    calibrate_method: str = "minmax",
    bias_correction: bool = False,
    int4_nodes: Sequence[str] = (),
    rounded_weights: Path | None = None,
    int16_activations: Sequence[str] = (),
    progress: Callable[[int], None] = lambda n: None,
) -> bytes:
    """Return the int8 QDQ model for an fp32 ONNX model.

    `rounded_weights` is an .npz file of int8 weights keyed by Conv/Gemm node name (see the
    module docstring); the nodes it does not name keep round-to-nearest. `int16_activations`
    names activation tensors (of the fp32 model) quantized with 16 bits instead of 8; "*"
    stands for all of them.
    """
    method = CALIBRATE_METHODS.get(calibrate_method)
    if method is None:
        raise ModelError(
            f"quantize calibrate_method {calibrate_method!r} is unknown: expected one of {sorted(CALIBRATE_METHODS)}"
        )
    rounding = _load_rounding(rounded_weights) if rounded_weights is not None else {}
    tensors = _load_tensors(images, spec, progress)
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(fp32)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception as err:  # pre-processing is an optimisation; quantize without it
            log.warning("quantization pre-processing skipped: %s", err)
            pre = src
        reference = onnx.load(str(pre))
        quantize_static(
            str(pre),
            str(dst),
            _Reader(tensors, spec.name),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=method,
            nodes_to_exclude=list(nodes_to_exclude),
        )
        model = onnx.load(str(dst))
    if rounding:
        _apply_rounding(model, reference, rounding)
    if int4_nodes or bias_correction:
        _refine(model, reference, tensors, set(int4_nodes), bias_correction)
    if int16_activations:
        _widen_activations(model, list(int16_activations))
    return bytes(model.SerializeToString())


def _load_rounding(path: Path) -> dict[str, Array]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: np.asarray(npz[name]) for name in npz.files}
    except (OSError, ValueError) as err:
        raise ModelError(
            f"quantize rounded_weights {path} cannot be read ({err}): expected an .npz of int8 weights "
            "keyed by Conv/Gemm node name"
        ) from None


def _apply_rounding(model: onnx.ModelProto, reference: onnx.ModelProto, rounding: dict[str, Array]) -> None:
    """Replace round-to-nearest by the given rounding, after checking it is one."""
    ref_nodes = {n.name: n for n in reference.graph.node}
    ref_inits = {i.name: i for i in reference.graph.initializer}
    inits = {i.name: i for i in model.graph.initializer}
    layers = {la.node.name: la for la in _layers(model) if la.node.name in ref_nodes}
    unknown = sorted(set(rounding) - set(layers))
    if unknown:
        raise ModelError(
            f"quantize rounded_weights names {unknown[:5]} that are not quantized Conv/Gemm nodes: "
            f"expected some of {sorted(layers)[:5]}..."
        )
    for name, q in rounding.items():
        dq = layers[name].weight_dq
        current = numpy_helper.to_array(inits[dq.input[0]])
        w = numpy_helper.to_array(ref_inits[ref_nodes[name].input[1]]).astype(np.float64)
        if q.shape != current.shape or q.dtype != np.int8:
            raise ModelError(
                f"quantize rounded_weights {name}: {q.dtype}{list(q.shape)}: expected int8{list(current.shape)}"
            )
        scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
        zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 else np.zeros(())
        shape = [1] * w.ndim
        if scale.ndim:
            shape[next((a.i for a in dq.attribute if a.name == "axis"), 1)] = -1
        exact = w / scale.reshape(shape) + zero.reshape(shape if zero.ndim else [])
        off = q.astype(np.float64) - exact
        # floor or ceiling of w / scale (a small tolerance for the float32 scale round trip)
        if np.any(np.abs(off) > 1 + 1e-4):
            raise ModelError(
                f"quantize rounded_weights {name}: values up to {np.abs(off).max():.2f} steps from w / scale: "
                "expected a rounding (floor or ceiling) on the packer's per-channel scales"
            )
        _set_init(model, numpy_helper.from_array(q, dq.input[0]))


class _Layer:
    """A quantized Conv/Gemm of a QDQ model: its input, weight and bias DequantizeLinear nodes."""

    def __init__(self, node: onnx.NodeProto, x: onnx.NodeProto, w: onnx.NodeProto, b: onnx.NodeProto | None) -> None:
        self.node, self.x_dq, self.weight_dq, self.bias_dq = node, x, w, b


def _layers(model: onnx.ModelProto) -> list[_Layer]:
    inits = {i.name for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    layers = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2:
            continue
        x, w = producer.get(node.input[0]), producer.get(node.input[1])
        if x is None or x.op_type != "DequantizeLinear" or w is None or w.op_type != "DequantizeLinear":
            continue  # left in float (nodes_to_exclude)
        if w.input[0] not in inits:
            continue
        b = producer.get(node.input[2]) if len(node.input) > 2 else None
        layers.append(_Layer(node, x, w, b if b is not None and b.op_type == "DequantizeLinear" else None))
    return layers


def _dequantized(dq: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> Array:
    q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
    zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float32) if len(dq.input) > 2 else np.zeros(())
    if scale.ndim == 0:
        return np.asarray((q - zero) * scale)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    shape = [1] * q.ndim
    shape[axis] = -1
    return np.asarray((q - zero.reshape(shape)) * scale.reshape(shape))


def _int4_channelwise(w: Array) -> tuple[Array, Array]:
    """Symmetric int4 per output channel (axis 0), the scale chosen per channel among clipping
    ratios 0.40..1.00 of max|w| to minimise the squared rounding error: with 16 levels, the
    plain max|w| scale spends most of them on a few outliers."""
    axes = tuple(range(1, w.ndim))
    peak = np.maximum(np.abs(w).max(axis=axes, keepdims=True), 1e-12)
    best_q = np.zeros_like(w)
    best_s = peak / 7.0
    best_err = np.full(peak.shape, np.inf)
    for ratio in np.linspace(0.4, 1.0, 31):
        s = ratio * peak / 7.0
        q = np.clip(np.round(w / s), -8, 7)
        err = ((q * s - w) ** 2).sum(axis=axes, keepdims=True)
        better = err < best_err
        best_q = np.where(better, q, best_q)
        best_s = np.where(better, s, best_s)
        best_err = np.where(better, err, best_err)
    return best_q.astype(np.int8), best_s.reshape(-1).astype(np.float32)


def _set_init(model: onnx.ModelProto, tensor: onnx.TensorProto) -> None:
    for init in model.graph.initializer:
        if init.name == tensor.name:
            init.CopyFrom(tensor)
            return
    model.graph.initializer.append(tensor)


def _input_means(model: onnx.ModelProto, names: list[str], tensors: Sequence[Array]) -> dict[str, Array]:
    """Per-channel means of the named tensors over the calibration inputs, by the fp32 model."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in dict.fromkeys(names) if n not in outputs)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    session = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    order = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    sums: dict[str, Array] = {}
    for tensor in tensors:
        for name, value in zip(order, session.run(None, {input_name: tensor}), strict=True):
            if name in names:
                v = np.asarray(value, np.float64)
                mean = v.mean(axis=(0, *range(2, v.ndim))) if v.ndim > 2 else v.mean(axis=0)
                sums[name] = sums.get(name, 0) + mean
    return {name: total / len(tensors) for name, total in sums.items()}


def _mean_shift(node: onnx.NodeProto, dw: Array, mean_x: Array) -> Array:
    """E[layer(x; W + dW)] - E[layer(x; W)] per output channel, from the per-channel mean of x
    (the border effect of padding is neglected)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Gemm":
        return np.asarray(dw @ mean_x if attrs.get("transB", 0) else mean_x @ dw)
    group = int(attrs.get("group", 1))
    out_ch, in_per_group = dw.shape[0], dw.shape[1]
    per_out = dw.reshape(out_ch, in_per_group, -1).sum(axis=2)  # (O, I/g)
    x = mean_x.reshape(group, in_per_group)[np.arange(out_ch) // (out_ch // group)]  # (O, I/g)
    return np.asarray((per_out * x).sum(axis=1))


def _refine(
    model: onnx.ModelProto,
    reference: onnx.ModelProto,
    tensors: Sequence[Array],
    int4_nodes: set[str],
    bias_correction: bool,
) -> None:
    ref_nodes = {n.name: n for n in reference.graph.node}
    ref_inits = {i.name: numpy_helper.to_array(i) for i in reference.graph.initializer}
    layers = [layer for layer in _layers(model) if layer.node.name in ref_nodes]
    missing = sorted(int4_nodes - {layer.node.name for layer in layers if layer.node.op_type == "Conv"})
    if missing:
        raise ModelError(
            f"quantize int4_nodes {missing} are not quantized Conv nodes of the model: expected some of "
            f"{sorted(layer.node.name for layer in layers if layer.node.op_type == 'Conv')}"
        )
    means = (
        _input_means(reference, [ref_nodes[la.node.name].input[0] for la in layers], tensors) if bias_correction else {}
    )
    inits = {i.name: i for i in model.graph.initializer}
    for layer in layers:
        ref = ref_nodes[layer.node.name]
        w = ref_inits[ref.input[1]].astype(np.float32)
        dq = layer.weight_dq
        if layer.node.name in int4_nodes:
            users = sum(dq.output[0] in n.input for n in model.graph.node)
            if users != 1:
                raise ModelError(f"int4 node {layer.node.name}: its weight feeds {users} nodes: expected one")
            q, scale = _int4_channelwise(w)
            _set_init(model, numpy_helper.from_array(q.astype(ml_dtypes.int4), dq.input[0]))
            _set_init(model, numpy_helper.from_array(scale, dq.input[1]))
            _set_init(model, numpy_helper.from_array(np.zeros(scale.shape, ml_dtypes.int4), dq.input[2]))
            for a in [a for a in dq.attribute if a.name == "axis"]:
                dq.attribute.remove(a)
            dq.attribute.append(helper.make_attribute("axis", 0))
            inits = {i.name: i for i in model.graph.initializer}
        if layer.bias_dq is None or len(ref.input) < 3 or ref.input[2] not in ref_inits:
            continue
        bias = ref_inits[ref.input[2]].astype(np.float64)
        if bias_correction:
            bias = bias - _mean_shift(ref, _dequantized(dq, inits) - w, means[ref.input[0]])
        # A QDQ bias is int32 with scale input_scale * weight_scale (per output channel).
        w_scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
        b_scale = (float(numpy_helper.to_array(inits[layer.x_dq.input[1]])) * w_scale).astype(np.float32)
        b_scale = np.broadcast_to(b_scale, bias.shape).astype(np.float32).copy()
        q_bias = np.clip(np.round(bias / b_scale), -(2**31), 2**31 - 1).astype(np.int32)
        b_dq = layer.bias_dq
        _set_init(model, numpy_helper.from_array(q_bias, b_dq.input[0]))
        _set_init(model, numpy_helper.from_array(b_scale, b_dq.input[1]))
        if len(b_dq.input) > 2:
            _set_init(model, numpy_helper.from_array(np.zeros(b_scale.shape, np.int32), b_dq.input[2]))
        for a in [a for a in b_dq.attribute if a.name == "axis"]:
            b_dq.attribute.remove(a)
        b_dq.attribute.append(helper.make_attribute("axis", 0))
        inits = {i.name: i for i in model.graph.initializer}
    if int4_nodes:
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx") and opset.version < INT4_OPSET:
                opset.version = INT4_OPSET


# uint16 QuantizeLinear/DequantizeLinear need opset 21.
INT16_OPSET = 21


def _widen_activations(model: onnx.ModelProto, names: list[str]) -> None:
    """16-bit activations for the named tensors (module docstring): same range, 257x finer steps."""
    inits = {i.name: i for i in model.graph.initializer}
    # keyed by the fp32 model's tensor names (onnxruntime renames a graph output's input to Q)
    quantizers = {
        n.input[0].removesuffix("_QuantizeLinear_Input"): n
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits
    }
    wide = set(quantizers) if names == ["*"] else set(names)
    unknown = sorted(wide - set(quantizers))
    if unknown:
        raise ModelError(
            f"quantize int16_activations {unknown[:5]} are not quantized activation tensors of the model: "
            f'expected some of {list(quantizers)[:8]}... (or ["*"] for all)'
        )
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    wide_outputs = set()
    for name in sorted(wide):
        q = quantizers[name]
        if len(q.input) < 3 or numpy_helper.to_array(inits[q.input[2]]).dtype != np.uint8:
            raise ModelError(f"quantize int16_activations {name}: expected a uint8 activation with a zero point")
        scale = float(numpy_helper.to_array(inits[q.input[1]]))
        zero = int(numpy_helper.to_array(inits[q.input[2]]))
        # Scale and zero point of its own (onnxruntime may share them between tensors).
        s16, z16 = f"{name}_scale16", f"{name}_zero_point16"
        _set_init(model, numpy_helper.from_array(np.asarray(scale / 257, np.float32), s16))
        _set_init(model, numpy_helper.from_array(np.asarray(zero * 257, np.uint16), z16))
        lo, hi = f"{name}_sat16_min", f"{name}_sat16_max"
        _set_init(model, numpy_helper.from_array(np.asarray(-zero * scale, np.float32), lo))
        _set_init(model, numpy_helper.from_array(np.asarray((255 - zero) * scale, np.float32), hi))
        clip = helper.make_node("Clip", [q.input[0], lo, hi], [f"{name}_sat16"], name=f"{name}_sat16")
        q.input[0], q.input[1], q.input[2] = clip.output[0], s16, z16
        model.graph.node.insert(list(model.graph.node).index(q), clip)
        for dq in readers.get(q.output[0], []):
            if dq.op_type == "DequantizeLinear":
                dq.input[1], dq.input[2] = s16, z16
                wide_outputs.add(dq.output[0])
    inits = {i.name: i for i in model.graph.initializer}
    for layer in _layers(model):
        b_dq = layer.bias_dq
        if layer.node.input[0] not in wide_outputs or b_dq is None:
            continue
        bias = _dequantized(b_dq, inits).astype(np.float32)
        layer.node.input[2] = f"{layer.node.input[2]}_float"
        _set_init(model, numpy_helper.from_array(bias, layer.node.input[2]))
        if not any(b_dq.output[0] in n.input for n in model.graph.node):
            model.graph.node.remove(b_dq)
    used = {name for node in model.graph.node for name in node.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < INT16_OPSET:
            opset.version = INT16_OPSET
