"""int8 static quantization (onnxruntime QDQ, per-channel) calibrated on real images.

Calibration images go through the same ISP the sensor uses, so the int8 ranges are those of
the tensors the model will really see.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
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


class _Reader(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, images: Sequence[Path], spec: InputSpec, progress: Callable[[int], None]) -> None:
        self._it = iter(images)
        self._isp = Isp(spec)
        self._name = spec.name
        self._progress = progress

    def get_next(self) -> dict[str, np.ndarray[Any, Any]] | None:
        path = next(self._it, None)
        if path is None:
            return None
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ModelError(f"calibration image {path} cannot be read: expected a JPEG or PNG")
        self._progress(1)
        return {self._name: self._isp.process(np.ascontiguousarray(bgr[..., ::-1])).tensor}


def quantize_onnx(
    fp32: bytes,
    spec: InputSpec,
    images: Sequence[Path],
    *,
    per_channel: bool = True,
    nodes_to_exclude: Sequence[str] = (),
    calibrate_method: str = "minmax",
    progress: Callable[[int], None] = lambda n: None,
) -> bytes:
    """Return the int8 QDQ model for an fp32 ONNX model."""
    method = CALIBRATE_METHODS.get(calibrate_method)
    if method is None:
        raise ModelError(
            f"quantize calibrate_method {calibrate_method!r} is unknown: expected one of {sorted(CALIBRATE_METHODS)}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(fp32)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception as err:  # pre-processing is an optimisation; quantize without it
            log.warning("quantization pre-processing skipped: %s", err)
            pre = src
        quantize_static(
            str(pre),
            str(dst),
            _Reader(images, spec, progress),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=method,
            nodes_to_exclude=list(nodes_to_exclude),
        )
        return dst.read_bytes()
