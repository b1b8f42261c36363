"""`ivs model pack`: an fp32 model + its intrinsics -> one signed int8 package within budget."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from ivs.errors import PackageError
from ivs.isp import InputSpec
from ivs.package.budget import DEFAULT_BUDGET, budget_report, describe_overflow
from ivs.package.manifest import BudgetReport, Manifest
from ivs.package.quantize import calibration_images, quantize_onnx
from ivs.package.writer import write_package

_SPEC_KEYS = {
    "name",
    "version",
    "task",
    "description",
    "notice",
    "input",
    "outputs",
    "labels",
    "decoder",
    "assets",
    "upstream",
    "quantize",
    "runtime_hints",
}

# `pack(target=...)` / spec `quantize.target`: where the package is meant to run, when that
# changes what `pack` makes of the source. None: ONNX stays ONNX, anything else becomes
# OpenVINO IR when quantized. "litert": a TFLite source stays TFLite (int8 for LiteRT).
TARGETS = ("litert",)


def load_spec(path: Path) -> dict[str, Any]:
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PackageError(f"{path}: cannot read the model spec ({err}): expected a JSON object") from None
    if not isinstance(spec, dict):
        raise PackageError(f"{path}: expected a JSON object")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise PackageError(f"{path}: unknown keys {sorted(unknown)}: expected some of {sorted(_SPEC_KEYS)}")
    return spec


def pack(
    model: Path,
    spec: dict[str, Any],
    out: Path,
    *,
    calibration: Path | None,
    key: Ed25519PrivateKey | None,
    budget: int = DEFAULT_BUDGET,
    asset_dir: Path | None = None,
    progress: Callable[[int], None] = lambda n: None,
    target: str | None = None,
) -> Manifest:
    """Quantize (when a calibration folder is given), check the budget, sign and write.

    `model` is an ONNX file (quantized with onnxruntime, packaged as ONNX), or a TFLite file,
    a TensorFlow frozen graph or SavedModel, or OpenVINO IR (converted and quantized with
    OpenVINO and NNCF, packaged as OpenVINO IR). `target="litert"` (or spec `quantize.target`)
    keeps a TFLite file in TFLite instead, int8 by AI Edge Quantizer (`ivs.package.tflite`).
    """
    try:
        input_spec = InputSpec.model_validate(spec["input"])
    except (KeyError, ValidationError) as err:
        raise PackageError(f"model spec 'input' is invalid: {err}") from None
    target = target or spec.get("quantize", {}).get("target")
    if target not in (None, *TARGETS):
        raise PackageError(f"unknown pack target {target!r}: expected one of {list(TARGETS)} (or none)")
    images = calibration_images(calibration) if calibration is not None else None
    precision = "int8" if images is not None else "fp32"
    if target == "litert":
        members, model_file, report = _pack_litert(model, spec, input_spec, images, budget, progress)
    elif model.suffix == ".onnx":
        members, model_file, report = _pack_onnx(model, spec, input_spec, images, budget, progress)
    elif model.suffix == ".tflite" and images is None:
        members, model_file, report = _pack_tflite(model, spec, input_spec, budget)
    else:
        members, model_file, report = _pack_openvino(model, spec, input_spec, images, budget, progress)
    model_file.setdefault("precision", precision)
    if not report.fits:
        raise PackageError(f"{spec.get('name', model.stem)} does not fit: {describe_overflow(report)}")
    for role, member in spec.get("assets", {}).items():
        src = (asset_dir or model.parent) / member
        if not src.is_file():
            raise PackageError(f"asset {role!r}: {src} not found")
        members[member] = src.read_bytes()
    fields = {k: v for k, v in spec.items() if k != "quantize"}
    fields["model"] = model_file
    fields["budget"] = report.model_dump()
    return write_package(out, fields, members, key)


def _pack_onnx(
    model: Path,
    spec: dict[str, Any],
    input_spec: InputSpec,
    images: list[Path] | None,
    budget: int,
    progress: Callable[[int], None],
) -> tuple[dict[str, bytes], dict[str, Any], BudgetReport]:
    if not model.is_file():
        raise PackageError(f"{model} not found: expected an ONNX file")
    data = model.read_bytes()
    if images is not None:
        qopts = spec.get("quantize", {})
        data = quantize_onnx(
            data,
            input_spec,
            images,
            per_channel=bool(qopts.get("per_channel", True)),
            nodes_to_exclude=list(qopts.get("nodes_to_exclude", [])),
            calibrate_method=str(qopts.get("calibrate_method", "minmax")),
            bias_correction=bool(qopts.get("bias_correction", False)),
            int4_nodes=list(qopts.get("int4_nodes", [])),
            int16_activations=list(qopts.get("int16_activations", [])),
            # precomputed rounding (AdaRound) written by the recipe beside the fp32 model
            rounded_weights=model.parent / qopts["rounded_weights"] if "rounded_weights" in qopts else None,
            progress=progress,
        )
    return {"model.onnx": data}, {"path": "model.onnx", "format": "onnx"}, budget_report(data, budget)


def _pack_openvino(
    model: Path,
    spec: dict[str, Any],
    input_spec: InputSpec,
    images: list[Path] | None,
    budget: int,
    progress: Callable[[int], None],
) -> tuple[dict[str, bytes], dict[str, Any], BudgetReport]:
    from ivs.package import convert

    convert.source_kind(model)
    network = convert.read(model)
    _check_names(model, network, input_spec, spec)
    if images is not None:
        network = convert.quantize(network, input_spec, images, progress)
    xml, weights = convert.serialize(network)
    report = convert.budget_report(network, budget)
    model_file = {"path": "model.xml", "weights": "model.bin", "format": "openvino"}
    return {"model.xml": xml, "model.bin": weights}, model_file, report


def _pack_tflite(
    model: Path, spec: dict[str, Any], input_spec: InputSpec, budget: int
) -> tuple[dict[str, bytes], dict[str, Any], BudgetReport]:
    """A TFLite file packaged as it is (for LiteRT, or OpenVINO); int8 if its weights are."""
    from ivs.package import convert

    network = convert.read(model)  # also proves the file is a readable TFLite model
    _check_names(model, network, input_spec, spec)
    quantized = any(
        op.get_type_name() == "Constant" and op.get_element_type().get_type_name() in ("i8", "u8")
        for op in network.get_ordered_ops()
    )
    model_file = {"path": "model.tflite", "format": "tflite", "precision": "int8" if quantized else "fp32"}
    return {"model.tflite": model.read_bytes()}, model_file, convert.budget_report(network, budget)


def _pack_litert(
    model: Path,
    spec: dict[str, Any],
    input_spec: InputSpec,
    images: list[Path] | None,
    budget: int,
    progress: Callable[[int], None],
) -> tuple[dict[str, bytes], dict[str, Any], BudgetReport]:
    """A TFLite file kept in TFLite for LiteRT: int8 weights and activations (AI Edge Quantizer,
    `static_wi8_ai8`) when calibration images are given, as it is otherwise. No OpenVINO needed."""
    from ivs.package import tflite

    if model.suffix != ".tflite" or not model.is_file():
        raise PackageError(f"{model}: target litert packs a TFLite file (.tflite): expected one")
    data = model.read_bytes()
    if not tflite.is_tflite(data):
        raise PackageError(f"{model}: not a TFLite model (no TFL3 file identifier)")
    _check_io(model, *tflite.io_names(data), input_spec, spec)
    qopts = spec.get("quantize", {})
    # AI Edge Quantizer's static_wi8_ai8: per-channel int8 weights, min/max activation ranges.
    fixed = {"per_channel": True, "calibrate_method": "minmax", "bias_correction": False, "int4_nodes": []}
    unsupported = sorted(
        k for k, v in qopts.items() if k not in ("target", "nodes_to_exclude") and (k not in fixed or fixed[k] != v)
    )
    if unsupported:
        raise PackageError(
            f"quantize options {unsupported} are not available for target litert: it quantizes "
            "per channel with min/max ranges; only nodes_to_exclude (op output tensor names) applies"
        )
    if images is not None:
        tensors = tflite.calibration_tensors(images, input_spec, progress)
        data = tflite.quantize(data, input_spec, tensors, nodes_to_exclude=list(qopts.get("nodes_to_exclude", [])))
    report = tflite.budget_report(data, budget)
    precision = "int8" if images is not None or tflite.has_int8_weights(data) else "fp32"
    return {"model.tflite": data}, {"path": "model.tflite", "format": "tflite", "precision": precision}, report


def _check_names(model: Path, network: Any, input_spec: InputSpec, spec: dict[str, Any]) -> None:
    """The spec must name tensors the network has; say which it has when it does not."""
    from ivs.package import convert

    _check_io(model, *convert.io_names(network), input_spec, spec)


def _check_io(model: Path, ins: list[str], outs: list[str], input_spec: InputSpec, spec: dict[str, Any]) -> None:
    if input_spec.name not in ins:
        raise PackageError(f"{model}: spec input {input_spec.name!r} is not a model input: it has {ins}")
    missing = sorted(set(spec.get("outputs", {}).values()) - set(outs))
    if missing:
        raise PackageError(f"{model}: spec outputs {missing} are not outputs of the model: it has {outs}")
