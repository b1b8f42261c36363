"""A loaded model: package + runner + ISP + decoder, as the three timed stages the sensor runs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ivs import decode
from ivs.detections import Detections, batched_nms
from ivs.errors import ModelError
from ivs.frame import Frame, Kpi
from ivs.isp import Isp, IspOutput, Roi
from ivs.package.manifest import Manifest
from ivs.package.reader import Package, read_package
from ivs.package.signing import Keyring
from ivs.package.zoo import resolve
from ivs.runtime import choose, create
from ivs.runtime.base import Runner
from ivs.runtime.choice import Choice


@dataclass
class Model:
    """One runnable model. Stages: `prepare` (ISP), `infer` (runner), `decode` (to frame pixels)."""

    package: Package
    runner: Runner
    isp: Isp
    _decoder: decode.Decoder
    _ctx: decode.DecodeContext
    choice: Choice | None = None
    """How `--runtime auto` chose the runner (None: the runtime was named, or only one reads it)."""

    @property
    def manifest(self) -> Manifest:
        return self.package.manifest

    @property
    def labels(self) -> list[str]:
        return self.package.manifest.labels

    def prepare(self, pixels: npt.NDArray[np.uint8]) -> list[IspOutput]:
        """The model input(s): one per tile, a single one without tiling."""
        return self.isp.process_tiles(pixels)

    def prepare_frame(self, frame: Frame) -> list[IspOutput]:
        """The model input(s) of a frame: its pixels through the ISP. The IMX500's model reads
        the frame's metadata instead (its network already ran on the sensor)."""
        return self.prepare(frame.pixels)

    def kpi(self, inputs: Sequence[IspOutput]) -> Kpi | None:
        """The timings a sensor reported for the frame these inputs came from (None on the CPU)."""
        return None

    def infer(self, tensors: list[IspOutput]) -> list[dict[str, np.ndarray[Any, Any]]]:
        """Raw outputs by decoder role, one dict per input."""
        names = self.manifest.outputs.items()
        out = []
        for isp in tensors:
            raw = self.runner.run(isp.tensor)
            out.append({role: raw[name] for role, name in names})
        return out

    def decode(self, outputs: list[dict[str, np.ndarray[Any, Any]]], inputs: list[IspOutput]) -> Detections:
        """Detections in full-frame pixels, merged across tiles."""
        parts = []
        for raw, isp in zip(outputs, inputs, strict=True):
            try:
                det = self._decoder(raw, self.manifest.decoder.params, self._ctx)
            except ValueError as err:
                raise ModelError(f"model {self.manifest.name}: decoder failed: {err}") from None
            box_map = isp.box_map
            keypoints = None if det.keypoints is None else box_map.points_to_frame(det.keypoints)
            parts.append(det.with_boxes(box_map.to_frame(det.xyxy), keypoints))
        if len(parts) == 1:
            return parts[0]
        return merge_tiles(parts, inputs, float(self.manifest.decoder.params.get("iou_threshold", 0.5)))

    def __call__(self, pixels: npt.NDArray[np.uint8]) -> Detections:
        """All three stages at once, for scripts and tests."""
        inputs = self.prepare(pixels)
        return self.decode(self.infer(inputs), inputs)

    def close(self) -> None:
        self.runner.close()


def load_model(
    model: str | Path,
    *,
    runtime: str = "auto",
    roi: Roi | None = None,
    tiles: tuple[int, int] | None = None,
    threads: int | None = None,
    keyring: Keyring | None = None,
    allow_unsigned: bool = False,
    retime: bool = False,
) -> Model:
    """Resolve a zoo name or package path, verify it, and make it runnable. `runtime="auto"`:
    the runtime remembered for this network on this machine, else the fastest, timed now
    (`retime`: time again; `ivs.runtime.choice`)."""
    package = read_package(resolve(str(model)), keyring, allow_unsigned=allow_unsigned)
    m = package.manifest
    if threads is None:
        threads = int(m.runtime_hints.get("threads", min(2, os.cpu_count() or 1)))
    if tiles is None:
        hint = m.runtime_hints.get("tiles", [1, 1])
        tiles = (int(hint[0]), int(hint[1]))
    isp = Isp(m.input, roi, tiles)
    sample = Isp(m.input).process(np.zeros((m.input.height, m.input.width, 3), np.uint8)).tensor
    weights = package.members[m.model.weights] if m.model.weights else None
    name, how = choose(runtime, package.model_bytes, m.model.format, m.input.name, sample, threads, weights,
                       retime=retime)  # fmt: skip
    runner = create(name, package.model_bytes, m.model.format, m.input.name, threads, weights)
    missing = set(m.outputs.values()) - set(runner.run(sample))
    if missing:
        raise ModelError(
            f"model {m.name}: outputs {sorted(missing)} named in the manifest are not produced by the network"
        )
    ctx = decode.DecodeContext(m.input.width, m.input.height, package.assets())
    return Model(package, runner, isp, decode.get(m.decoder.name), ctx, how)


def merge_tiles(parts: list[Detections], inputs: list[IspOutput], iou_threshold: float) -> Detections:
    """One detection per object across overlapping tiles.

    A box touching a tile's inner edge may be an object cut by that edge. Where a box that
    is not cut covers most of it (the neighbouring tile saw the object whole, thanks to the
    overlap), the cut one is dropped; an object larger than the overlap keeps its cut boxes.
    Then class-wise NMS removes the copies of objects seen whole by two tiles.
    """
    cut_flags = []
    for det, isp in zip(parts, inputs, strict=True):
        m = isp.box_map
        x0, y0 = m.origin_x, m.origin_y
        x1, y1 = x0 + isp.region.shape[1], y0 + isp.region.shape[0]
        margin = 2.0
        cut = np.zeros(len(det), bool)
        # Only edges inside the frame are inner edges; the frame's own edges cut nothing.
        if x0 > 0:
            cut |= det.xyxy[:, 0] <= x0 + margin
        if y0 > 0:
            cut |= det.xyxy[:, 1] <= y0 + margin
        if x1 < m.frame_width:
            cut |= det.xyxy[:, 2] >= x1 - margin
        if y1 < m.frame_height:
            cut |= det.xyxy[:, 3] >= y1 - margin
        cut_flags.append(cut)
    merged = Detections.merge(parts)
    if len(merged) == 0:
        return merged
    cut = np.concatenate(cut_flags)
    whole = merged.xyxy[~cut]
    if cut.any() and len(whole):
        c = merged.xyxy[cut]
        tl = np.maximum(c[:, None, :2], whole[None, :, :2])
        br = np.minimum(c[:, None, 2:], whole[None, :, 2:])
        inter = np.prod(np.clip(br - tl, 0, None), axis=2)
        area = np.prod(np.clip(c[:, 2:] - c[:, :2], 1e-6, None), axis=1)
        covered = (inter / area[:, None]).max(axis=1) >= 0.5
        drop = np.zeros(len(merged), bool)
        drop[np.nonzero(cut)[0][covered]] = True
        merged = merged[~drop]
    return merged[batched_nms(merged.xyxy, merged.confidence, merged.class_id, iou_threshold)]
