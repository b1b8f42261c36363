"""Recorded IMX500 metadata: frames of output tensors in picamera2's layout, for replay.

A recording is an `.npz` file (numpy's zip of arrays, read with `allow_pickle=False`):

| array | shape | what |
| --- | --- | --- |
| `header` | (bytes,) uint8 | UTF-8 JSON, below |
| `CnnOutputTensor` | (frames, values) float32 | each frame's flat output tensors, as picamera2 gets them |
| `CnnOutputTensorInfo` | (frames, 708 or 260) uint8 | each frame's tensor-info struct bytes |
| `CnnKpiInfo` | (frames, 2) uint32 | DNN and DSP runtime, microseconds |
| `SensorTimestamp` | (frames,) int64 | nanoseconds |
| `index` | (frames,) int64 | the frame's index in its source |
| `pts` | (frames,) float64 | the frame's presentation time in seconds (NaN: none) |

The header: `format` ("ivs.imx500-recording/1"), `width` and `height` (the picture the boxes
map to), `fps`, `network`, `output_roles`, `model` (name, version), `source`, `kpi` (where the
timings come from), `frames`.

`record` writes one from a real model run here: each frame through the package's ISP and
network on the CPU, its outputs stored exactly as the sensor would send them.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ivs.errors import ModelError, SourceError
from ivs.imx500.tensors import LAYOUTS, flatten_outputs, pack_output_tensor_info
from ivs.model import Model
from ivs.sources.base import Source

FORMAT = "ivs.imx500-recording/1"
ARRAYS = ("CnnOutputTensor", "CnnOutputTensorInfo", "CnnKpiInfo", "SensorTimestamp", "index", "pts")


@dataclass(frozen=True)
class Recording:
    header: dict[str, Any]
    tensors: npt.NDArray[np.float32]
    infos: npt.NDArray[np.uint8]
    kpis: npt.NDArray[np.uint32]
    timestamps: npt.NDArray[np.int64]
    indices: npt.NDArray[np.int64]
    pts: npt.NDArray[np.float64]

    @property
    def width(self) -> int:
        return int(self.header["width"])

    @property
    def height(self) -> int:
        return int(self.header["height"])

    def __len__(self) -> int:
        return int(self.tensors.shape[0])

    def metadata(self, i: int) -> dict[str, Any]:
        """Frame i's metadata as picamera2's `capture_metadata()` would give it."""
        return {
            "CnnOutputTensor": self.tensors[i],
            "CnnOutputTensorInfo": self.infos[i].tobytes(),
            "CnnKpiInfo": (int(self.kpis[i, 0]), int(self.kpis[i, 1])),
            "SensorTimestamp": int(self.timestamps[i]),
        }

    def frame_pts(self, i: int) -> float | None:
        p = float(self.pts[i])
        return None if np.isnan(p) else p


def read_recording(path: Path) -> Recording:
    """Read and check a recording; a `SourceError` says what is wrong with a bad one."""
    where = f"imx500 recording {path}"
    if not path.is_file():
        raise SourceError(f"{where} not found: expected an .npz file written by `ivs.imx500.record`")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("header", *ARRAYS) if k not in z.files]
            if missing:
                raise SourceError(f"{where}: no array {', '.join(missing)}; expected {', '.join(('header', *ARRAYS))}")
            arrays = {k: z[k] for k in ("header", *ARRAYS)}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise SourceError(f"{where}: not a readable .npz recording ({err})") from None
    try:
        header = json.loads(arrays["header"].tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SourceError(f"{where}: header is not UTF-8 JSON ({err})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        got = header.get("format") if isinstance(header, dict) else header
        raise SourceError(f"{where}: format {got!r}; expected {FORMAT!r}")
    for key in ("width", "height"):
        if not isinstance(header.get(key), int) or header[key] <= 0:
            raise SourceError(f"{where}: header {key} {header.get(key)!r}; expected a positive integer (pixels)")
    tensors, infos, kpis = arrays["CnnOutputTensor"], arrays["CnnOutputTensorInfo"], arrays["CnnKpiInfo"]
    n = tensors.shape[0] if tensors.ndim == 2 else -1
    checks = [
        ("CnnOutputTensor", tensors, tensors.ndim == 2 and tensors.dtype == np.float32, "(frames, values) float32"),
        ("CnnOutputTensorInfo", infos, infos.shape[:1] == (n,) and infos.ndim == 2 and infos.shape[1] in LAYOUTS
         and infos.dtype == np.uint8, f"({n}, {' or '.join(map(str, LAYOUTS))}) uint8"),
        ("CnnKpiInfo", kpis, kpis.shape == (n, 2) and kpis.dtype == np.uint32, f"({n}, 2) uint32"),
        ("SensorTimestamp", arrays["SensorTimestamp"], arrays["SensorTimestamp"].shape == (n,), f"({n},) int64"),
        ("index", arrays["index"], arrays["index"].shape == (n,), f"({n},) int64"),
        ("pts", arrays["pts"], arrays["pts"].shape == (n,), f"({n},) float64"),
    ]  # fmt: skip
    for name, arr, ok, expected in checks:
        if not ok:
            raise SourceError(f"{where}: {name} has shape {arr.shape} {arr.dtype}; expected {expected}")
    return Recording(
        header,
        tensors,
        infos,
        kpis,
        arrays["SensorTimestamp"].astype(np.int64),
        arrays["index"].astype(np.int64),
        arrays["pts"].astype(np.float64),
    )


@dataclass
class _Rows:
    tensors: list[npt.NDArray[np.float32]]
    infos: list[bytes]
    kpis: list[tuple[int, int]]
    timestamps: list[int]
    indices: list[int]
    pts: list[float]


def write_recording(path: Path, header: dict[str, Any], rows: Iterator[dict[str, Any]]) -> int:
    """Write frames of metadata (dicts with the `ARRAYS` keys) under `header`; returns the count."""
    acc = _Rows([], [], [], [], [], [])
    for row in rows:
        acc.tensors.append(np.asarray(row["CnnOutputTensor"], np.float32).reshape(-1))
        acc.infos.append(bytes(row["CnnOutputTensorInfo"]))
        acc.kpis.append(row["CnnKpiInfo"])
        acc.timestamps.append(int(row["SensorTimestamp"]))
        acc.indices.append(int(row["index"]))
        acc.pts.append(np.nan if row["pts"] is None else float(row["pts"]))
    if not acc.tensors:
        raise SourceError(f"imx500 recording {path}: no frames to write")
    doc = {"format": FORMAT, **header, "frames": len(acc.tensors)}
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        header=np.frombuffer(json.dumps(doc).encode("utf-8"), np.uint8),
        CnnOutputTensor=np.stack(acc.tensors),
        CnnOutputTensorInfo=np.stack([np.frombuffer(b, np.uint8) for b in acc.infos]),
        CnnKpiInfo=np.asarray(acc.kpis, np.uint32).reshape(-1, 2),
        SensorTimestamp=np.asarray(acc.timestamps, np.int64),
        index=np.asarray(acc.indices, np.int64),
        pts=np.asarray(acc.pts, np.float64),
    )
    path.write_bytes(buf.getvalue())
    return len(acc.tensors)


def record(
    model: Model,
    source: Source,
    path: Path,
    *,
    max_frames: int | None = None,
    output_roles: tuple[str, ...] | None = None,
    network: str | None = None,
) -> int:
    """Run `model` on the CPU over `source` and record its outputs as IMX500 metadata.

    Each frame goes through the package's ISP (one region, no tiles: the sensor runs one
    inference per frame) and network; the output tensors, in `output_roles` order (default: the
    manifest's), are stored as `CnnOutputTensor` + `CnnOutputTensorInfo`. `CnnKpiInfo` holds
    this CPU's network and ISP times (the header says so), `SensorTimestamp` the frame's pts.
    Returns the number of frames written.
    """
    if model.isp.tiles != (1, 1):
        raise ModelError(f"recording for the IMX500 needs one region per frame, got tiles {model.isp.tiles}")
    m = model.manifest
    roles = output_roles or tuple(m.outputs)
    name = network or f"{m.name}-{m.version}"
    size: list[int] = []

    def rows() -> Iterator[dict[str, Any]]:
        for k, frame in enumerate(source.frames()):
            if max_frames is not None and k >= max_frames:
                break
            if not size:
                size.extend((frame.width, frame.height))
            elif (frame.width, frame.height) != tuple(size):
                raise SourceError(f"frame {frame.index} is {frame.width}x{frame.height}; the first was {size}")
            t0 = time.perf_counter_ns()
            inputs = model.prepare(frame.pixels)
            t1 = time.perf_counter_ns()
            (raw,) = model.infer(inputs)
            t2 = time.perf_counter_ns()
            flat, dims = flatten_outputs([raw[r] for r in roles])
            pts = frame.pts
            yield {
                "CnnOutputTensor": flat,
                "CnnOutputTensorInfo": pack_output_tensor_info(name, dims),
                "CnnKpiInfo": ((t2 - t1) // 1000, (t1 - t0) // 1000),
                "SensorTimestamp": round(pts * 1e9) if pts is not None else frame.t_capture_ns,
                "index": frame.index,
                "pts": pts,
            }

    try:
        items = list(rows())
    finally:
        source.close()
    if not items:
        raise SourceError(f"{source.id}: no frames to record")
    header = {
        "width": size[0],
        "height": size[1],
        "fps": source.fps,
        "network": name,
        "output_roles": list(roles),
        "model": {"name": m.name, "version": m.version},
        "source": source.id,
        "kpi": f"recorded on the CPU with {getattr(model.runner, 'name', '?')}: DNN = network, DSP = ISP time",
    }
    return write_recording(path, header, iter(items))
