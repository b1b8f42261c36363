"""Part c of `ivs bench`: the pipeline a user writes first, as the baseline for ivs.

OpenCV DNN on the fp32 ONNX model, the whole frame shrunk with one `cv2.resize(INTER_AREA)`
to the model input (no crop, no tiles), the package's own normaliser and decoder, and one
`json.dumps` document per frame. Same frames, same decoder, same 2 cores as ivs; what differs
is what ivs adds: int8 models on the fastest runtime, a resize that stays fast on big frames,
msgspec records.

The fp32 model is the one `make zoo` builds (`zoo/build/NAME/model.fp32.onnx`). A clean
clone has only the int8 packages; there `dequantized_onnx` turns the package's QDQ int8 model
back into an fp32 graph (the same layers, with the int8 weights dequantised), which costs
OpenCV DNN what the original fp32 model costs, and the row says so.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from ivs.model import Model


def dequantized_onnx(model_bytes: bytes) -> bytes:
    """An fp32 ONNX graph from a QDQ-quantised one: each DequantizeLinear of a constant becomes
    its fp32 constant, and each QuantizeLinear -> DequantizeLinear pair on an activation is
    removed (the float tensor flows straight through)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # constants can also come from Constant nodes
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producers = {out: node for node in graph.node for out in node.output}
    new_consts: dict[str, npt.NDArray[np.float32]] = {}
    drop: set[int] = set()
    clips: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        x, scale = node.input[0], consts.get(node.input[1])
        zero = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if x in consts and scale is not None:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            q = consts[x].astype(np.float32)
            shape = [1] * q.ndim
            if scale.ndim == 1 and q.ndim > 0:
                shape[axis] = -1
            z = np.zeros_like(scale, np.float32) if zero is None else zero.astype(np.float32)
            new_consts[node.output[0]] = ((q - z.reshape(shape)) * scale.astype(np.float32).reshape(shape)).astype(
                np.float32
            )
            drop.add(id(node))
            continue
        q_node = producers.get(x)
        if q_node is not None and q_node.op_type == "QuantizeLinear" and scale is not None and scale.ndim == 0:
            # Quantizing saturates at the integer range: that is where a fused ReLU6 went, so
            # the pair becomes a Clip to the range it could represent, not a plain wire.
            info = np.iinfo(zero.dtype if zero is not None else np.uint8)
            zp = float(zero) if zero is not None else 0.0
            lo, hi = f"{node.output[0]}__lo", f"{node.output[0]}__hi"
            new_consts[lo] = np.asarray((info.min - zp) * float(scale), np.float32)
            new_consts[hi] = np.asarray((info.max - zp) * float(scale), np.float32)
            clips.append(onnx.helper.make_node("Clip", [q_node.input[0], lo, hi], [node.output[0]]))
            drop.update({id(node), id(q_node)})
    if not drop:
        raise ValueError("not a QDQ-quantised ONNX model: no DequantizeLinear to fold")

    kept = [n for n in graph.node if id(n) not in drop]
    order = {id(n): i for i, n in enumerate(graph.node)}
    # Each Clip takes its Q/DQ pair's place, so the nodes stay in topological order.
    placed = sorted(
        [(order[id(n)], 0, n) for n in kept] + [(order[id(producers[c.output[0]])], -1, c) for c in clips],
        key=lambda t: (t[0], t[1]),
    )
    del graph.node[:]
    graph.node.extend(n for _, _, n in placed)
    used = {name for n in graph.node for name in n.input}
    keep_init = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep_init)
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in new_consts.items() if k in used)
    del graph.value_info[:]
    return bytes(model.SerializeToString())


@dataclass
class NaivePipeline:
    """Frame -> detections -> JSON text, the way a first script does it (see the module doc)."""

    model: Model
    """The ivs model: only its manifest (input size, normalisation, labels) and decoder are used."""
    onnx_fp32: bytes
    fp32_from: str
    """Where the fp32 graph came from: the build-time file, or dequantised from the package."""

    def __post_init__(self) -> None:
        self.net = cv2.dnn.readNetFromONNX(np.frombuffer(self.onnx_fp32, np.uint8))
        m = self.model.manifest
        self._roles = dict(m.outputs.items())  # role -> output name
        self._names = list(dict.fromkeys(self._roles.values()))
        self._mean = np.asarray(m.input.mean, np.float32)
        self._inv_std = (1.0 / np.asarray(m.input.std, np.float32)).astype(np.float32)

    def detect(self, pixels: npt.NDArray[np.uint8]) -> Any:
        """Detections in frame pixels, the whole frame stretched to the model input."""
        spec = self.model.manifest.input
        h, w = pixels.shape[:2]
        small = cv2.resize(pixels, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
        if spec.color == "BGR":
            small = small[..., ::-1]
        blob = (small.astype(np.float32) - self._mean) * self._inv_std
        if spec.layout == "NCHW":
            blob = blob.transpose(2, 0, 1)
        self.net.setInput(np.ascontiguousarray(blob[None]))
        outs = dict(zip(self._names, self.net.forward(self._names), strict=True))
        raw = {role: outs[name] for role, name in self._roles.items()}
        det = self.model._decoder(raw, self.model.manifest.decoder.params, self.model._ctx)
        xyxy = det.xyxy.astype(np.float32).copy()
        xyxy[:, 0::2] *= w / spec.width
        xyxy[:, 1::2] *= h / spec.height
        return det.with_boxes(xyxy, None)

    def __call__(self, pixels: npt.NDArray[np.uint8], index: int) -> str:
        """One frame to its JSON document."""
        det = self.detect(pixels)
        labels = self.model.labels
        doc = {
            "frame": index,
            "time": time.time(),
            "width": int(pixels.shape[1]),
            "height": int(pixels.shape[0]),
            "detections": [
                {
                    "box": [round(float(v), 1) for v in det.xyxy[i]],
                    "score": round(float(det.confidence[i]), 4),
                    "class_id": int(det.class_id[i]),
                    "label": labels[int(det.class_id[i])] if 0 <= int(det.class_id[i]) < len(labels) else "",
                }
                for i in range(len(det))
            ],
        }
        return json.dumps(doc)
