"""The IMX500's per-frame metadata as libcamera exports it and picamera2 reads it.

Written from the libcamera structures (`src/ipa/rpi/controller/controller.h`, BSD-2) and
picamera2's `devices/imx500/imx500.py` reading of them, so that recorded metadata replays here
without picamera2:

- `CnnOutputTensor`: every output tensor of the network, dequantized to float32 and
  concatenated, in output order.
- `CnnOutputTensorInfo`: a little-endian C struct, `char network_name[64]; uint32 num_tensors;`
  then `MAX_TENSORS` entries of `{uint32 tensor_data_num; uint32 num_dimensions;
  uint16 size[MAX_DIMS]}`. libcamera since December 2024 uses 16 tensors of 16 dimensions
  (708 bytes); the first AI Camera releases used 8 and 8 (260 bytes). Both are read.
- Each tensor's `size` lists its dimensions without the batch, the first dimension varying
  fastest: picamera2 reshapes the flat values with `order="F"`, and so does `split_outputs`.
- `CnnKpiInfo`: `{uint32 dnn_runtime; uint32 dsp_runtime}` in microseconds; picamera2 gets it
  as 8 bytes (old) or as a pair of integers (new).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ivs.errors import SourceError
from ivs.frame import Kpi

NETWORK_NAME_LEN = 64
# (max tensors, max dimensions) of each libcamera release, by the struct's size in bytes.
LAYOUTS = {NETWORK_NAME_LEN + 4 + t * (8 + 2 * d): (t, d) for t, d in ((16, 16), (8, 8))}
CURRENT_LAYOUT = (16, 16)


@dataclass(frozen=True)
class TensorInfo:
    """One output tensor: its dimensions (no batch, first varies fastest) and element count."""

    dims: tuple[int, ...]
    data_num: int


@dataclass(frozen=True)
class OutputTensorInfo:
    network_name: str
    tensors: tuple[TensorInfo, ...]

    @property
    def total(self) -> int:
        return sum(int(np.prod(t.dims)) for t in self.tensors)


def as_bytes(value: Any, what: str) -> bytes:
    """The raw bytes of a metadata value: picamera2 hands them over as bytes or as a sequence of ints."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8:
            raise SourceError(f"{what}: expected bytes (uint8), got an array of {value.dtype}")
        return value.tobytes()
    if isinstance(value, Sequence) and all(isinstance(v, int) and 0 <= v < 256 for v in value):
        return bytes(value)
    raise SourceError(f"{what}: expected bytes or a sequence of byte values, got {type(value).__name__}")


def parse_output_tensor_info(value: Any) -> OutputTensorInfo:
    """Parse `CnnOutputTensorInfo`; a `SourceError` says what is wrong with a malformed one."""
    raw = as_bytes(value, "CnnOutputTensorInfo")
    layout = LAYOUTS.get(len(raw))
    if layout is None:
        known = " or ".join(f"{n} ({t} tensors x {d} dims)" for n, (t, d) in LAYOUTS.items())
        raise SourceError(f"CnnOutputTensorInfo: {len(raw)} bytes; expected {known}")
    max_tensors, max_dims = layout
    name = raw[:NETWORK_NAME_LEN].split(b"\0", 1)[0].decode("utf-8", errors="replace")
    (count,) = struct.unpack_from("<I", raw, NETWORK_NAME_LEN)
    if not 1 <= count <= max_tensors:
        raise SourceError(f"CnnOutputTensorInfo of {name!r}: {count} tensors; expected 1 to {max_tensors}")
    entry = struct.Struct(f"<II{max_dims}H")
    tensors = []
    for i in range(count):
        data_num, ndims, *sizes = entry.unpack_from(raw, NETWORK_NAME_LEN + 4 + i * entry.size)
        if not 1 <= ndims <= max_dims:
            raise SourceError(
                f"CnnOutputTensorInfo of {name!r}: tensor {i} has {ndims} dimensions; expected 1 to {max_dims}"
            )
        dims = tuple(int(s) for s in sizes[:ndims])
        if 0 in dims:
            raise SourceError(f"CnnOutputTensorInfo of {name!r}: tensor {i} has a zero dimension {dims}")
        tensors.append(TensorInfo(dims, int(data_num)))
    return OutputTensorInfo(name, tuple(tensors))


def pack_output_tensor_info(
    network_name: str, dims: Sequence[Sequence[int]], layout: tuple[int, int] = CURRENT_LAYOUT
) -> bytes:
    """The `CnnOutputTensorInfo` bytes libcamera would send for tensors of these dimensions."""
    max_tensors, max_dims = layout
    name = network_name.encode("utf-8")[: NETWORK_NAME_LEN - 1]
    if not 1 <= len(dims) <= max_tensors:
        raise ValueError(f"{len(dims)} output tensors: the IMX500 metadata holds 1 to {max_tensors}")
    out = bytearray(name.ljust(NETWORK_NAME_LEN, b"\0"))
    out += struct.pack("<I", len(dims))
    entry = struct.Struct(f"<II{max_dims}H")
    for d in dims:
        if not 1 <= len(d) <= max_dims or not all(0 < s < 65536 for s in d):
            raise ValueError(f"tensor dimensions {tuple(d)}: expected 1 to {max_dims} sizes in 1..65535")
        out += entry.pack(int(np.prod(d)), len(d), *d, *([0] * (max_dims - len(d))))
    out += bytes(entry.size * (max_tensors - len(dims)))
    return bytes(out)


def split_outputs(values: Any, info: OutputTensorInfo) -> list[npt.NDArray[np.float32]]:
    """The output tensors (batch 1 added) from `CnnOutputTensor` and its parsed info."""
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    if flat.size != info.total:
        shapes = ", ".join(str(t.dims) for t in info.tensors)
        raise SourceError(
            f"CnnOutputTensor of {info.network_name!r}: {flat.size} values; expected {info.total} "
            f"for the tensors {shapes} that CnnOutputTensorInfo describes"
        )
    out, offset = [], 0
    for t in info.tensors:
        n = int(np.prod(t.dims))
        out.append(flat[offset : offset + n].reshape(t.dims, order="F")[None])
        offset += n
    return out


def flatten_outputs(tensors: Sequence[np.ndarray[Any, Any]]) -> tuple[npt.NDArray[np.float32], list[tuple[int, ...]]]:
    """`CnnOutputTensor` values and the dimensions for `pack_output_tensor_info` (batch-1 tensors in)."""
    parts, dims = [], []
    for t in tensors:
        a = np.asarray(t, np.float32)
        if a.ndim < 2 or a.shape[0] != 1:
            raise ValueError(f"expected a batch-1 tensor (1, ...), got shape {a.shape}")
        parts.append(a[0].reshape(-1, order="F"))
        dims.append(tuple(int(s) for s in a.shape[1:]))
    return np.concatenate(parts), dims


def parse_kpi(value: Any) -> Kpi:
    """`CnnKpiInfo`: 8 bytes or two integers (microseconds) -> milliseconds."""
    if isinstance(value, bytes | bytearray | memoryview):
        if len(value) != 8:
            raise SourceError(f"CnnKpiInfo: {len(value)} bytes; expected 8 (two uint32: DNN and DSP runtime)")
        dnn, dsp = struct.unpack("<II", bytes(value))
    else:
        pair = np.asarray(value).reshape(-1)
        if pair.size != 2 or not np.issubdtype(pair.dtype, np.integer) or (pair < 0).any():
            raise SourceError(
                f"CnnKpiInfo: expected two non-negative integers (DNN and DSP runtime, us), got {value!r}"
            )
        dnn, dsp = int(pair[0]), int(pair[1])
    return Kpi(dnn / 1000.0, dsp / 1000.0)
