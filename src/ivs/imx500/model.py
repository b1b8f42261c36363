"""The model side of the IMX500 path: the package gives labels, decoder and thresholds; the
network itself runs on the sensor, whose output tensors arrive in each frame's metadata.

`SensorModel` is a `Model` whose three stages take a frame's metadata instead of its pixels:
`prepare_frame` reads and checks the tensors (the sensor's ISP and DNN already ran on the chip),
`infer` hands them over by decoder role, `decode` is the package's decoder, and boxes land on the
frame through the same map the CPU ISP would use for that region. The per-frame DNN and DSP
runtimes the sensor reports travel with the tensors (`SensorOutput.kpi`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ivs import decode
from ivs.detections import Detections
from ivs.errors import ModelError, SourceError
from ivs.frame import Frame, Kpi
from ivs.imx500.source import CameraSource, SensorFrame
from ivs.imx500.tensors import parse_kpi, parse_output_tensor_info, split_outputs
from ivs.isp import BoxMap, InputSpec, Isp, IspOutput, Roi
from ivs.model import Model
from ivs.package.reader import Package, read_package
from ivs.package.signing import Keyring
from ivs.package.zoo import resolve

RUNTIME = "imx500"
_NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


@dataclass(frozen=True)
class SensorOutput(IspOutput):
    """What the sensor hands the host for one frame: the output tensors in network order and
    its own timings; `tensor` and `region` are empty (no pixels reach the host)."""

    outputs: tuple[np.ndarray[Any, Any], ...] = ()
    network: str = ""
    kpi: Kpi | None = None


class SensorRunner:
    """Stands where a runner would: the network runs on the sensor, not here."""

    name = RUNTIME

    def run(self, tensor: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        raise ModelError("the network runs on the IMX500: the host gets its outputs from the frame metadata")

    def cancel(self) -> bool:
        return False  # nothing runs here to cancel

    def close(self) -> None:
        pass


def sensor_region(spec: InputSpec, roi: Roi | None, width: int, height: int) -> tuple[int, int, int, int]:
    """The part of a width x height frame the sensor must feed the network: x, y, w, h.

    The IMX500 scales its inference region to the input tensor, aspect ignored: "stretch" is
    the region itself and "crop" its largest centred part with the input's aspect (what the CPU
    ISP crops). It cannot pad, so a "letterbox" package is refused.
    """
    if spec.resize == "letterbox":
        raise ModelError(
            "the IMX500 cannot letterbox its input (it scales the inference region to the tensor): "
            "expected a package whose input resize is 'stretch' or 'crop'"
        )
    rx, ry, rw, rh = Isp(spec, roi).region(width, height)
    if spec.resize == "crop":
        cw = min(rw, round(rh * spec.width / spec.height))
        ch = min(rh, round(rw * spec.height / spec.width))
        rx, ry, rw, rh = rx + (rw - cw) // 2, ry + (rh - ch) // 2, cw, ch
    return rx, ry, rw, rh


def frame_metadata(frame: Frame) -> Mapping[str, Any]:
    if not isinstance(frame, SensorFrame):
        raise SourceError(
            f"{frame.source_id or 'source'}: frame {frame.index} carries no IMX500 metadata: the imx500 model "
            "needs an imx500 or imx500-replay source"
        )
    return frame.metadata


@dataclass
class SensorModel(Model):
    """A package run on the IMX500: see the module docstring.

    output_roles: the decoder role of each output tensor, in the network's output order.
    params: the decoder's parameters (the package's, or those of an IMX500-specific decoder).
    """

    output_roles: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    _maps: dict[tuple[int, int], BoxMap] = field(default_factory=dict)

    def box_map(self, width: int, height: int) -> BoxMap:
        """Model-input pixels -> frame pixels for a frame of this size (the CPU ISP's map)."""
        if (width, height) not in self._maps:
            spec = self.manifest.input
            x, y, w, h = sensor_region(spec, self.isp.roi, width, height)
            self._maps[width, height] = BoxMap(spec.width / w, spec.height / h, 0.0, 0.0, x, y, width, height)
        return self._maps[width, height]

    def prepare(self, pixels: np.ndarray[Any, Any]) -> list[IspOutput]:
        raise ModelError("the imx500 model reads frame metadata (prepare_frame), not pixels")

    def prepare_frame(self, frame: Frame) -> list[IspOutput]:
        """The frame's output tensors and KPI, read from its metadata."""
        md = frame_metadata(frame)
        where = f"{frame.source_id or 'imx500'} frame {frame.index}"
        missing = [k for k in ("CnnOutputTensor", "CnnOutputTensorInfo") if md.get(k) is None]
        if missing:
            raise SourceError(f"{where}: metadata has no {' or '.join(missing)}: expected the sensor's output tensors")
        try:
            info = parse_output_tensor_info(md["CnnOutputTensorInfo"])
            tensors = split_outputs(md["CnnOutputTensor"], info)
            kpi = parse_kpi(md["CnnKpiInfo"]) if md.get("CnnKpiInfo") is not None else None
        except SourceError as err:
            raise SourceError(f"{where}: {err}") from None
        box_map = self.box_map(frame.width, frame.height)
        return [SensorOutput(_NO_PIXELS, box_map, _NO_PIXELS, tuple(tensors), info.network_name, kpi)]

    def infer(self, tensors: list[IspOutput]) -> list[dict[str, np.ndarray[Any, Any]]]:
        out = []
        for item in tensors:
            if not isinstance(item, SensorOutput):
                raise ModelError("the imx500 model takes the sensor's outputs (prepare_frame), not an ISP tensor")
            if len(item.outputs) != len(self.output_roles):
                shapes = ", ".join(str(t.shape) for t in item.outputs)
                raise ModelError(
                    f"the network on the sensor ({item.network!r}) gives {len(item.outputs)} output tensors "
                    f"({shapes}); package {self.manifest.name} expects {len(self.output_roles)}: "
                    f"{', '.join(self.output_roles)}. Is the .rpk the one exported from this package?"
                )
            out.append(dict(zip(self.output_roles, item.outputs, strict=True)))
        return out

    def decode(self, outputs: list[dict[str, np.ndarray[Any, Any]]], inputs: list[IspOutput]) -> Detections:
        parts = []
        for raw, isp in zip(outputs, inputs, strict=True):
            try:
                det = self._decoder(raw, self.params, self._ctx)
            except ValueError as err:
                raise ModelError(f"model {self.manifest.name} on the IMX500: decoder failed: {err}") from None
            keypoints = None if det.keypoints is None else isp.box_map.points_to_frame(det.keypoints)
            parts.append(det.with_boxes(isp.box_map.to_frame(det.xyxy), keypoints))
        return parts[0] if len(parts) == 1 else Detections.merge(parts)

    def kpi(self, inputs: Sequence[IspOutput]) -> Kpi | None:
        """The sensor's own timings for the frame these inputs came from."""
        return next((i.kpi for i in inputs if isinstance(i, SensorOutput) and i.kpi is not None), None)


def from_package(
    package: Package,
    *,
    roi: Roi | None = None,
    decoder: Mapping[str, Any] | None = None,
    output_roles: Sequence[str] | None = None,
) -> SensorModel:
    """A `SensorModel` for a verified package.

    decoder / output_roles: what the network exported for the sensor emits, when it differs from
    the package's own network (e.g. an SSD whose NMS runs on the chip emits final boxes, scores and
    classes: the `postprocessed` decoder); default: `runtime_hints.imx500.decoder` / `.outputs`,
    else the package's decoder and its output roles in manifest order.
    """
    m = package.manifest
    hints = m.runtime_hints.get("imx500", {})
    if not isinstance(hints, dict):
        raise ModelError(f"model {m.name}: runtime_hints.imx500 must be an object, got {hints!r}")
    spec = decoder if decoder is not None else hints.get("decoder")
    name, params = (m.decoder.name, m.decoder.params) if spec is None else (spec.get("name"), spec.get("params", {}))
    roles = tuple(output_roles if output_roles is not None else hints.get("outputs", list(m.outputs)))
    try:
        fn = decode.get(str(name))
    except KeyError as err:
        raise ModelError(f"model {m.name} on the IMX500: {err.args[0]}") from None
    if not roles or len(set(roles)) != len(roles):
        raise ModelError(f"model {m.name} on the IMX500: output roles {list(roles)}: expected distinct role names")
    sensor_region(m.input, None, m.input.width, m.input.height)  # refuses what the sensor cannot do
    ctx = decode.DecodeContext(m.input.width, m.input.height, package.assets())
    return SensorModel(package, SensorRunner(), Isp(m.input, roi), fn, ctx, output_roles=roles, params=dict(params))


def load_sensor_model(
    model: str | Path,
    *,
    roi: Roi | None = None,
    keyring: Keyring | None = None,
    allow_unsigned: bool = False,
    decoder: Mapping[str, Any] | None = None,
    output_roles: Sequence[str] | None = None,
) -> SensorModel:
    """Resolve a zoo name or package path, verify it, and make it the model of the IMX500 path."""
    package = read_package(resolve(str(model)), keyring, allow_unsigned=allow_unsigned)
    return from_package(package, roi=roi, decoder=decoder, output_roles=output_roles)


def attach(source: Any, model: Model) -> None:
    """Point a camera source's inference region at what `model` must see (a replay needs nothing)."""
    if isinstance(source, CameraSource) and isinstance(model, SensorModel):
        source.set_inference_region(*sensor_region(model.manifest.input, model.isp.roi, source.width, source.height))
