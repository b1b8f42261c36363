"""A loaded model: package + runner + ISP + decoder, as the three timed stages the sensor runs."""

from __future__ import annotations

import hashlib
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
from ivs.runtime.shared import Runners


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
        iou = float(self.manifest.decoder.params.get("iou_threshold", 0.5))
        return merge_tiles(parts, inputs, iou, full_frame=self.isp.full_frame)

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
    full_frame: bool | None = None,
    threads: int | None = None,
    keyring: Keyring | None = None,
    allow_unsigned: bool = False,
    retime: bool = False,
    pool: Runners | None = None,
) -> Model:
    """Resolve a zoo name or package path, verify it, and make it runnable. `runtime="auto"`:
    the runtime remembered for this network on this machine, else the fastest, timed now
    (`retime`: time again; `ivs.runtime.choice`). `tiles` (default: the package's hint) cuts each
    frame into overlapping tiles; `full_frame` adds one pass over the whole frame to a tiled layout
    (default: with the package's tiles, its `full_frame` hint, on where it says nothing; with
    `tiles` given, off: they force exactly that grid). `pool`: run the network on the node's
    shared inference service for it (`ivs.runtime.shared`) instead of a runner of its own."""
    package = read_package(resolve(str(model)), keyring, allow_unsigned=allow_unsigned)
    m = package.manifest
    if threads is None:
        threads = int(m.runtime_hints.get("threads", min(2, os.cpu_count() or 1)))
    if full_frame is None:  # the package's layout: its tiles and, unless it says no, the whole frame
        full_frame = tiles is None and bool(m.runtime_hints.get("full_frame", True))
    if tiles is None:
        hint = m.runtime_hints.get("tiles", [1, 1])
        tiles = (int(hint[0]), int(hint[1]))
    isp = Isp(m.input, roi, tiles, full_frame=full_frame)
    sample = Isp(m.input).process(np.zeros((m.input.height, m.input.width, 3), np.uint8)).tensor
    weights = package.members[m.model.weights] if m.model.weights else None
    name, how = choose(runtime, package.model_bytes, m.model.format, m.input.name, sample, threads, weights,
                       retime=retime)  # fmt: skip
    runner: Runner
    if pool is None:
        runner = create(name, package.model_bytes, m.model.format, m.input.name, threads, weights)
    else:
        digest = hashlib.sha256(package.model_bytes).hexdigest()
        runner = pool.runner(
            digest, name, lambda t: create(name, package.model_bytes, m.model.format, m.input.name, t, weights)
        )
    missing = set(m.outputs.values()) - set(runner.run(sample))
    if missing:
        runner.close()
        raise ModelError(
            f"model {m.name}: outputs {sorted(missing)} named in the manifest are not produced by the network"
        )
    ctx = decode.DecodeContext(m.input.width, m.input.height, package.assets())
    return Model(package, runner, isp, decode.get(m.decoder.name), ctx, how)


def _ios(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Intersection of each box of `a` with each box of `b`, over the area of the `a` box."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    return np.asarray(inter / _area(a)[:, None], np.float32)


FRAGMENT_IOS = 0.7
"""A tile's box this much inside a large whole-frame box is a piece of that object..."""
FRAGMENT_AREA = 0.2
"""...when it is also at least this share of the large box (a small person in front is not)."""


def merge_tiles(
    parts: list[Detections], inputs: list[IspOutput], iou_threshold: float, full_frame: bool = False
) -> Detections:
    """One detection per object across overlapping tiles (and the whole-frame pass, first in
    `parts` when `full_frame`).

    A box touching a tile's inner edge may be an object cut by that edge. Where a box that
    is not cut covers most of it (the neighbouring tile or the whole-frame pass saw the object
    whole), the cut one is dropped. The whole-frame pass speaks only for large objects, those
    that no tile holds whole: its other boxes are dropped (a tile saw those objects with more
    pixels), and a tile's box lying inside one of its large boxes is a piece of that object and
    dropped too. Then class-wise NMS removes the copies of objects seen whole by two tiles.
    """
    if full_frame:
        # A whole-frame box that some tile holds whole (inside it, clear of its inner edges).
        held = np.zeros(len(parts[0]), bool)
        for isp in inputs[1:]:
            held |= _within(parts[0].xyxy, isp) & ~_cut(parts[0].xyxy, isp)
        parts = [parts[0][~held], *parts[1:]]
    merged = Detections.merge(parts)
    if len(merged) == 0:
        return merged
    drop = np.zeros(len(merged), bool)
    cut = np.concatenate([_cut(det.xyxy, isp) for det, isp in zip(parts, inputs, strict=True)])
    whole = merged.xyxy[~cut]
    if cut.any() and len(whole):
        covered = _ios(merged.xyxy[cut], whole).max(axis=1) >= 0.5
        drop[np.nonzero(cut)[0][covered]] = True
    n_big = len(parts[0]) if full_frame else 0
    if n_big and len(merged) > n_big:
        large, rest = merged.xyxy[:n_big], merged.xyxy[n_big:]
        share = _area(rest)[:, None] / _area(large)[None, :]
        same_class = merged.class_id[n_big:, None] == merged.class_id[None, :n_big]
        piece = (_ios(rest, large) >= FRAGMENT_IOS) & (share >= FRAGMENT_AREA) & same_class
        drop[n_big:] |= piece.any(axis=1)
    merged = merged[~drop]
    return merged[batched_nms(merged.xyxy, merged.confidence, merged.class_id, iou_threshold)]


_EDGE = 2.0
"""Pixels from a tile's edge within which a box touches it."""


def _area(xyxy: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.asarray(np.prod(np.clip(xyxy[:, 2:] - xyxy[:, :2], 1e-6, None), axis=1), np.float32)


def _bounds(isp: IspOutput) -> tuple[float, float, float, float]:
    """The frame area an input saw: x0, y0, x1, y1."""
    m = isp.box_map
    return m.origin_x, m.origin_y, m.origin_x + isp.region.shape[1], m.origin_y + isp.region.shape[0]


def _cut(xyxy: npt.NDArray[np.float32], isp: IspOutput) -> npt.NDArray[np.bool_]:
    """Boxes touching an inner edge of the area the input saw (the frame's own edges cut nothing)."""
    x0, y0, x1, y1 = _bounds(isp)
    m = isp.box_map
    cut = np.zeros(len(xyxy), bool)
    if x0 > 0:
        cut |= xyxy[:, 0] <= x0 + _EDGE
    if y0 > 0:
        cut |= xyxy[:, 1] <= y0 + _EDGE
    if x1 < m.frame_width:
        cut |= xyxy[:, 2] >= x1 - _EDGE
    if y1 < m.frame_height:
        cut |= xyxy[:, 3] >= y1 - _EDGE
    return cut


def _within(xyxy: npt.NDArray[np.float32], isp: IspOutput) -> npt.NDArray[np.bool_]:
    x0, y0, x1, y1 = _bounds(isp)
    return np.asarray(
        (xyxy[:, 0] >= x0 - _EDGE)
        & (xyxy[:, 1] >= y0 - _EDGE)
        & (xyxy[:, 2] <= x1 + _EDGE)
        & (xyxy[:, 3] <= y1 + _EDGE)
    )
