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
from ivs.package.manifest import Manifest
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
) -> Manifest:
    """Quantize (when a calibration folder is given), check the budget, sign and write."""
    if model.suffix != ".onnx":
        raise PackageError(f"{model}: expected an ONNX model (.onnx)")
    fp32 = model.read_bytes()
    try:
        input_spec = InputSpec.model_validate(spec["input"])
    except (KeyError, ValidationError) as err:
        raise PackageError(f"model spec 'input' is invalid: {err}") from None
    qopts = spec.get("quantize", {})
    if calibration is not None:
        data = quantize_onnx(
            fp32,
            input_spec,
            calibration_images(calibration),
            per_channel=bool(qopts.get("per_channel", True)),
            nodes_to_exclude=list(qopts.get("nodes_to_exclude", [])),
            calibrate_method=str(qopts.get("calibrate_method", "minmax")),
            progress=progress,
        )
        precision = "int8"
    else:
        data, precision = fp32, "fp32"
    report = budget_report(data, budget)
    if not report.fits:
        raise PackageError(f"{spec.get('name', model.stem)} does not fit: {describe_overflow(report)}")
    members = {"model.onnx": data}
    for role, member in spec.get("assets", {}).items():
        src = (asset_dir or model.parent) / member
        if not src.is_file():
            raise PackageError(f"asset {role!r}: {src} not found")
        members[member] = src.read_bytes()
    fields = {k: v for k, v in spec.items() if k != "quantize"}
    fields["model"] = {"path": "model.onnx", "format": "onnx", "precision": precision}
    fields["budget"] = report.model_dump()
    return write_package(out, fields, members, key)
