"""A loaded model: package + runner + ISP + decoder, as the three timed stages the sensor runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ivs import decode
from ivs.detections import Detections
from ivs.errors import ModelError
from ivs.isp import BoxMap, Isp, IspOutput, Roi
from ivs.package.manifest import Manifest
from ivs.package.reader import Package, read_package
from ivs.package.signing import Keyring
from ivs.package.zoo import resolve
from ivs.runtime import load_runner
from ivs.runtime.base import Runner


@dataclass
class Model:
    """One runnable model. Stages: `prepare` (ISP), `infer` (runner), `decode` (to frame pixels)."""

    package: Package
    runner: Runner
    isp: Isp
    _decoder: decode.Decoder
    _ctx: decode.DecodeContext

    @property
    def manifest(self) -> Manifest:
        return self.package.manifest

    @property
    def labels(self) -> list[str]:
        return self.package.manifest.labels

    def prepare(self, pixels: npt.NDArray[np.uint8]) -> IspOutput:
        return self.isp.process(pixels)

    def infer(self, tensor: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        raw = self.runner.run(tensor)
        return {role: raw[name] for role, name in self.manifest.outputs.items()}

    def decode(self, outputs: dict[str, np.ndarray[Any, Any]], box_map: BoxMap) -> Detections:
        try:
            det = self._decoder(outputs, self.manifest.decoder.params, self._ctx)
        except ValueError as err:
            raise ModelError(f"model {self.manifest.name}: decoder failed: {err}") from None
        keypoints = None if det.keypoints is None else box_map.points_to_frame(det.keypoints)
        return det.with_boxes(box_map.to_frame(det.xyxy), keypoints)

    def __call__(self, pixels: npt.NDArray[np.uint8]) -> Detections:
        """All three stages at once, for scripts and tests."""
        isp = self.prepare(pixels)
        return self.decode(self.infer(isp.tensor), isp.box_map)

    def close(self) -> None:
        self.runner.close()


def load_model(
    model: str | Path,
    *,
    runtime: str = "auto",
    roi: Roi | None = None,
    threads: int | None = None,
    keyring: Keyring | None = None,
    allow_unsigned: bool = False,
) -> Model:
    """Resolve a zoo name or package path, verify it, and make it runnable."""
    package = read_package(resolve(str(model)), keyring, allow_unsigned=allow_unsigned)
    m = package.manifest
    if threads is None:
        threads = int(m.runtime_hints.get("threads", min(2, os.cpu_count() or 1)))
    isp = Isp(m.input, roi)
    sample = Isp(m.input).process(np.zeros((m.input.height, m.input.width, 3), np.uint8)).tensor
    runner = load_runner(runtime, package.model_bytes, m.model.format, m.input.name, sample, threads)
    missing = set(m.outputs.values()) - set(runner.run(sample))
    if missing:
        raise ModelError(
            f"model {m.name}: outputs {sorted(missing)} named in the manifest are not produced by the network"
        )
    ctx = decode.DecodeContext(m.input.width, m.input.height, package.assets())
    return Model(package, runner, isp, decode.get(m.decoder.name), ctx)
