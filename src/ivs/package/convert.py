"""Models that are not ONNX: TFLite, TensorFlow frozen graphs and SavedModels, OpenVINO IR.

OpenVINO's converter reads all four without TensorFlow installed; NNCF quantizes the result
to int8 with the same calibration images (through the same ISP) as the ONNX path; the package
then carries OpenVINO IR (model.xml + model.bin), run by the OpenVINO runner.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ivs.errors import ModelError, PackageError
from ivs.isp import InputSpec, Isp
from ivs.package.manifest import BudgetReport

SOURCE_KINDS = {
    ".tflite": "TFLite",
    ".pb": "TensorFlow frozen graph",
    ".xml": "OpenVINO IR",
}


def source_kind(path: Path) -> str:
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "TensorFlow SavedModel"
    kind = SOURCE_KINDS.get(path.suffix)
    if kind is None or not path.exists():
        raise PackageError(
            f"{path}: not a model ivs can pack: expected an ONNX file (.onnx), a TFLite file "
            "(.tflite), a TensorFlow frozen graph (.pb), a SavedModel folder or OpenVINO IR (.xml)"
        )
    return kind


def read(path: Path) -> Any:
    """The source as an `openvino.Model`."""
    import openvino as ov

    try:
        if path.suffix == ".xml":
            return ov.Core().read_model(str(path))
        return ov.convert_model(str(path))
    except Exception as err:
        raise PackageError(f"{path}: OpenVINO cannot convert this {source_kind(path)}: {err}") from None


def quantize(
    model: Any,
    spec: InputSpec,
    images: Sequence[Path],
    progress: Callable[[int], None] = lambda n: None,
) -> Any:
    """int8 with NNCF post-training quantization, calibrated on `images` through the ISP."""
    import cv2
    import nncf

    isp = Isp(spec)

    def load(path: Path) -> np.ndarray[Any, Any]:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ModelError(f"calibration image {path} cannot be read: expected a JPEG or PNG")
        progress(1)
        return isp.process(np.ascontiguousarray(bgr[..., ::-1])).tensor

    tensors = [load(p) for p in images]
    return nncf.quantize(model, nncf.Dataset(tensors), subset_size=len(tensors))


def serialize(model: Any) -> tuple[bytes, bytes]:
    """(model.xml, model.bin) bytes of an openvino.Model."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        return xml.read_bytes(), xml.with_suffix(".bin").read_bytes()


def io_names(model: Any) -> tuple[list[str], list[str]]:
    """All names of the model's inputs and outputs (a tensor may have several)."""
    ins = sorted(n for port in model.inputs for n in port.get_names())
    outs = sorted(n for port in model.outputs for n in port.get_names())
    return ins, outs


def budget_report(model: Any, budget_bytes: int, top: int = 5) -> BudgetReport:
    """Weights (Constant nodes) and peak live activations of an openvino.Model, batch 1.

    In an NNCF-quantized model, FakeQuantize nodes mark int8 tensors: activations count one
    byte per element there, as an int8 accelerator stores them.
    """
    ops = list(model.get_ordered_ops())
    quantized = any(op.get_type_name() == "FakeQuantize" for op in ops)
    weights: list[tuple[str, int]] = []
    for op in ops:
        if op.get_type_name() == "Constant":
            nbytes = int(op.get_byte_size())
            weights.append((op.get_friendly_name(), nbytes))
    weight_bytes = sum(b for _, b in weights)

    def out_bytes(op: Any) -> int:
        total = 0
        for out in op.outputs():
            shape = out.get_partial_shape()
            if shape.is_dynamic:
                continue
            n = int(np.prod([d.get_length() for d in shape])) if len(shape) else 1
            size = 1 if quantized else out.get_element_type().size
            total += n * size
        return total

    index = {op.get_friendly_name(): i for i, op in enumerate(ops)}
    last_use: dict[str, int] = {}
    for i, op in enumerate(ops):
        for inp in op.inputs():
            last_use[inp.get_source_output().get_node().get_friendly_name()] = i
    live: dict[str, int] = {}
    peak = 0
    for i, op in enumerate(ops):
        kind = op.get_type_name()
        if kind in ("Constant", "Result"):
            continue
        name = op.get_friendly_name()
        live[name] = out_bytes(op)
        peak = max(peak, sum(live.values()))
        for other in list(live):
            if last_use.get(other, index[other]) <= i:
                del live[other]
    return BudgetReport.of(budget_bytes, weight_bytes, peak, weights, top)
