"""Build the `face` zoo model: MediaPipe BlazeFace short range (.tflite) -> ONNX.

Run in the recipe venv (see requirements.txt):

    .venv-zoo-face/bin/python zoo/face/build.py --out zoo/build/face

Writes to --out:
    model.fp32.onnx   the .tflite converted by tf2onnx (opset 17), batch 1:
                      input  "input"          float32 (1, 128, 128, 3) NHWC RGB, (pixel-127.5)/127.5
                      output "regressors"     float32 (1, 896, 16) box (dx, dy, w, h) + 6 keypoints
                                              (x, y), input pixels relative to the anchor
                      output "classificators" float32 (1, 896, 1) face logit
    model.tflite      the original upstream file, unchanged (for the LiteRT runner)
    model_full_range.tflite
                      BlazeFace full range (face_detection_full_range_sparse.tflite) with its
                      46 sparse weight tensors densified (`densify`), otherwise unchanged: the
                      source of the face-full package (int8 TFLite, zoo/face-full)
    anchors_full_range.npy
                      float32 (2304, 4) anchors of the full-range model
    anchors.npy       float32 (896, 4) anchors (x_center, y_center, w, h), normalized, made by
                      `ssd_anchors` (MediaPipe's SsdAnchorsCalculator, short-range options)
    spec.json         the package spec
    reference.json    TFLite's raw outputs decoded here (numpy, MediaPipe's rules) on the check
                      images, for check.py

The ONNX model must give TFLite's raw outputs on the check images to 1e-4.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recipe import ensure_upstream, fold_and_freeze, licence_file

# --no-deps: it declares numpy<2, opencv-contrib-python, jax, ...; only its files are used.
UPSTREAM = "mediapipe==0.10.21"
PACKAGE = "mediapipe"
MODEL_FILE = "modules/face_detection/face_detection_short_range.tflite"
FULL_FILE = "modules/face_detection/face_detection_full_range_sparse.tflite"
SIZE = 128
FULL_SIZE = 192
ROOT = Path(__file__).resolve().parents[2]
MEDIA = ROOT / ".cache" / "media"
# The .tflite's own tensor names, so that one spec serves model.fp32.onnx and model.tflite.
IN_NAME, REG_NAME, CLS_NAME = "input", "regressors", "classificators"
KEYPOINT_NAMES = [
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_center",
    "right_ear_tragion",
    "left_ear_tragion",
]
# mediapipe/modules/face_detection/face_detection.pbtxt (short range): SsdAnchorsCalculator
# and TensorsToDetectionsCalculator / NonMaxSuppressionCalculator options.
ANCHOR_OPTIONS = {
    "num_layers": 4,
    "min_scale": 0.1484375,
    "max_scale": 0.75,
    "input_size_height": SIZE,
    "input_size_width": SIZE,
    "anchor_offset_x": 0.5,
    "anchor_offset_y": 0.5,
    "strides": [8, 16, 16, 16],
    "aspect_ratios": [1.0],
    "fixed_anchor_size": True,
    "interpolated_scale_aspect_ratio": 1.0,
}
# The full-range model (face_detection_full_range.pbtxt): one 48x48 feature map (stride 4),
# one anchor per cell (interpolated_scale_aspect_ratio 0), 2304 anchors.
FULL_ANCHOR_OPTIONS = {
    **ANCHOR_OPTIONS,
    "num_layers": 1,
    "input_size_height": FULL_SIZE,
    "input_size_width": FULL_SIZE,
    "strides": [4],
    "interpolated_scale_aspect_ratio": 0.0,
}
MIN_SCORE = 0.5
MIN_SUPPRESSION = 0.3
LOGIT_CLIP = 100.0


def ssd_anchors(
    num_layers: int,
    min_scale: float,
    max_scale: float,
    input_size_height: int,
    input_size_width: int,
    anchor_offset_x: float,
    anchor_offset_y: float,
    strides: list[int],
    aspect_ratios: list[float],
    fixed_anchor_size: bool,
    interpolated_scale_aspect_ratio: float,
) -> np.ndarray:
    """MediaPipe's SsdAnchorsCalculator (reduce_boxes_in_lowest_layer false): (N, 4) float32
    anchors (x_center, y_center, w, h), normalized. Consecutive layers with the same stride
    share one feature map and stack their anchors per cell."""

    def scale(i: int) -> float:
        n = len(strides)
        return (min_scale + max_scale) * 0.5 if n == 1 else min_scale + (max_scale - min_scale) * i / (n - 1)

    rows: list[tuple[float, float, float, float]] = []
    layer = 0
    while layer < num_layers:
        sizes: list[tuple[float, float]] = []  # (w, h) per anchor of a cell
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            s = scale(last)
            for ar in aspect_ratios:
                sizes.append((s * math.sqrt(ar), s / math.sqrt(ar)))
            if interpolated_scale_aspect_ratio > 0:
                s_next = 1.0 if last == len(strides) - 1 else scale(last + 1)
                si, ar = math.sqrt(s * s_next), interpolated_scale_aspect_ratio
                sizes.append((si * math.sqrt(ar), si / math.sqrt(ar)))
            last += 1
        stride = strides[layer]
        fh, fw = math.ceil(input_size_height / stride), math.ceil(input_size_width / stride)
        for y in range(fh):
            for x in range(fw):
                for w, h in sizes:
                    xc, yc = (x + anchor_offset_x) / fw, (y + anchor_offset_y) / fh
                    rows.append((xc, yc, 1.0, 1.0) if fixed_anchor_size else (xc, yc, w, h))
        layer = last
    return np.asarray(rows, np.float32)


class Tflite:
    """The original model in TensorFlow's TFLite interpreter."""

    def __init__(self, path: Path) -> None:
        # The reference kernels, not XNNPACK: exact float32 maths, no fused fast paths.
        self.interp = tf.lite.Interpreter(
            model_path=str(path),
            num_threads=1,
            experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF,
        )
        self.interp.allocate_tensors()
        ins = self.interp.get_input_details()
        assert len(ins) == 1, ins
        self.input = ins[0]
        self.outputs = {d["name"]: d for d in self.interp.get_output_details()}

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.interp.set_tensor(self.input["index"], x)
        self.interp.invoke()
        return {name: self.interp.get_tensor(d["index"]).copy() for name, d in self.outputs.items()}


def densify(src: Path, dst: Path) -> int:
    """Write `src` with every sparse constant made dense, and its DENSIFY op removed.

    MediaPipe's full-range model stores 46 of its 1x1 conv kernels as sparse float16 tensors
    (TFLite sparsity: every dimension dense but the last, which is CSR), each read through a
    DENSIFY op and then a DEQUANTIZE to float32. AI Edge Quantizer reads a sparse tensor's
    buffer as if it were dense; after this the file is as MediaPipe's dense float16 models
    are (DEQUANTIZE of float16 constants), which `ivs.package.tflite.float_model` folds.
    Returns the number of tensors densified."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils as fu

    model = fu.read_model_from_bytearray(bytearray(src.read_bytes()))
    assert len(model.subgraphs) == 1
    sg = model.subgraphs[0]
    kept = []
    for op in sg.operators:
        if fu.opcode_to_name(model, op.opcodeIndex) != "DENSIFY":
            kept.append(op)
            continue
        t, o = sg.tensors[op.inputs[0]], sg.tensors[op.outputs[0]]
        sp, shape = t.sparsity, list(t.shape)
        dims = sp.dimMetadata
        assert list(sp.traversalOrder) == list(range(len(shape))) and sp.blockMap is None, t.name
        assert all(d.format == schema.DimensionType.DENSE for d in dims[:-1]), t.name
        assert dims[-1].format == schema.DimensionType.SPARSE_CSR, t.name
        assert o.type == t.type == schema.TensorType.FLOAT16 and list(o.shape) == shape, t.name
        values = np.frombuffer(bytes(model.buffers[t.buffer].data), np.float16)
        segments = np.asarray(dims[-1].arraySegments.values)
        indices = np.asarray(dims[-1].arrayIndices.values)
        rows = math.prod(shape[:-1])
        assert len(segments) == rows + 1 and len(indices) == len(values) == segments[-1], t.name
        dense = np.zeros((rows, shape[-1]), np.float16)
        for r in range(rows):
            dense[r, indices[segments[r] : segments[r + 1]]] = values[segments[r] : segments[r + 1]]
        model.buffers.append(schema.BufferT(data=np.frombuffer(dense.tobytes(), np.uint8)))
        o.buffer = len(model.buffers) - 1
        model.buffers[t.buffer] = schema.BufferT()
    n = len(sg.operators) - len(kept)
    sg.operators = kept
    used = sorted({i for op in kept for i in [*op.inputs, *op.outputs] if i >= 0} | {*sg.inputs, *sg.outputs})
    index = {old: new for new, old in enumerate(used)}
    sg.tensors = [sg.tensors[i] for i in used]
    for op in kept:
        op.inputs = [index[i] if i >= 0 else i for i in op.inputs]
        op.outputs = [index[i] for i in op.outputs]
    sg.inputs = [index[i] for i in sg.inputs]
    sg.outputs = [index[i] for i in sg.outputs]
    dst.write_bytes(bytes(fu.convert_object_to_bytearray(model)))
    return n


def full_range(pkg_dir: Path, out: Path, images: dict[str, np.ndarray]) -> None:
    """model_full_range.tflite (densified) and anchors_full_range.npy for zoo/face-full; the
    dense file must give the sparse file's outputs exactly."""
    src = pkg_dir / FULL_FILE
    dst = out / "model_full_range.tflite"
    n = densify(src, dst)
    sparse, dense = Tflite(src), Tflite(dst)
    assert list(dense.input["shape"]) == [1, FULL_SIZE, FULL_SIZE, 3], dense.input
    anchors = ssd_anchors(**FULL_ANCHOR_OPTIONS)  # type: ignore[arg-type]
    shapes = {name: list(d["shape"]) for name, d in dense.outputs.items()}
    assert anchors.shape == (2304, 4) and shapes == {"Identity": [1, 2304, 16], "Identity_1": [1, 2304, 1]}, shapes
    np.save(out / "anchors_full_range.npy", anchors)
    rng = np.random.default_rng(0)
    for name, rgb in [*images.items(), ("noise", None)]:
        if rgb is None:
            x = rng.uniform(-1, 1, (1, FULL_SIZE, FULL_SIZE, 3)).astype(np.float32)
        else:
            x = ((letterbox(rgb, FULL_SIZE).astype(np.float32) - 127.5) / 127.5)[None]
        a, b = sparse(x), dense(x)
        diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
        assert diff == 0.0, (name, diff)
        if rgb is not None:
            faces = decode(b["Identity"], b["Identity_1"], anchors, FULL_SIZE)
            print(f"{name}: full range (model-input px):", [{k: f[k] for k in ("xyxy", "score")} for f in faces])
    size = f"{src.stat().st_size} -> {dst.stat().st_size} bytes"
    print(f"full range: {n} sparse tensors densified, {size}, outputs identical")


def to_onnx(tflite_path: Path, path: Path, rename: dict[str, str]) -> None:
    model, _ = tf2onnx.convert.from_tflite(str(tflite_path), opset=17)
    g = model.graph
    for v in [*g.input, *g.output, *g.value_info]:
        v.name = rename.get(v.name, v.name)
    for node in g.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    assert [i.name for i in g.input] == [IN_NAME], [i.name for i in g.input]
    assert sorted(o.name for o in g.output) == sorted([REG_NAME, CLS_NAME]), [o.name for o in g.output]
    # Static batch 1 (tf2onnx may leave the TFLite batch dimension symbolic).
    for v in [*g.input, *g.output]:
        dim = v.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = 1
    model.producer_name = "ivs zoo/face/build.py (tf2onnx)"
    model.doc_string = f"MediaPipe BlazeFace short range from {UPSTREAM} ({MODEL_FILE})"
    onnx.checker.check_model(model, full_check=True)
    final = fold_and_freeze(model, path)
    ops = sorted({n.op_type for n in final.graph.node})
    print("onnx ops:", ops, "nodes:", len(final.graph.node))


def logit_head(path: Path) -> list[str]:
    """The nodes from the last Convs to the `classificators` output (Conv, Transpose, Reshape,
    Concat), to keep in float when quantizing.

    The logits span about -240..+5 on the calibration images; uint8 over that range has steps
    of ~1, so every anchor with a logit near 0 comes out as exactly 0, a score of exactly
    0.5 = the threshold: with the head quantized, int8 "finds" two faces on chelsea (a cat)
    and one on messi5, all at 0.500.
    """
    graph = onnx.load(path).graph
    producer = {o: n for n in graph.node for o in n.output}
    names: list[str] = []
    stack = [CLS_NAME]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in names:
            continue
        assert node.op_type in {"Concat", "Reshape", "Transpose", "Conv"}, node.op_type
        names.append(node.name)
        if node.op_type != "Conv":
            stack.extend(i for i in node.input if i in producer)
    convs = [n.name for n in graph.node if n.name in names and n.op_type == "Conv"]
    assert len(convs) == 2, f"expected the 2 classificator Convs in the logit head, got {convs}"
    return sorted(names)


def letterbox(rgb: np.ndarray, size: int = SIZE) -> np.ndarray:
    """ivs's letterbox (linear): fit inside size x size, centred, black (-1.0) padding, as
    MediaPipe's ImageToTensorCalculator with keep_aspect_ratio does."""
    h, w = rgb.shape[:2]
    s = min(size / w, size / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[py : py + nh, px : px + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas


def decode(reg: np.ndarray, logits: np.ndarray, anchors: np.ndarray, size: int = SIZE) -> list[dict[str, object]]:
    """MediaPipe's decode + weighted NMS, plain numpy, in model-input pixels (reference)."""
    with np.errstate(over="ignore"):
        scores = 1 / (1 + np.exp(-np.clip(logits[0, :, 0], -LOGIT_CLIP, LOGIT_CLIP)))
    idx = np.flatnonzero(scores >= MIN_SCORE)
    r, a = reg[0, idx] / size, anchors[idx]
    xc, yc = r[:, 0] * a[:, 2] + a[:, 0], r[:, 1] * a[:, 3] + a[:, 1]
    w, h = r[:, 2] * a[:, 2], r[:, 3] * a[:, 3]
    boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], 1) * size
    kps = (r[:, 4:].reshape(-1, 6, 2) * a[:, None, 2:] + a[:, None, :2]) * size
    s = scores[idx]
    order = list(np.argsort(-s, kind="stable"))
    out = []
    while order:
        b = boxes[order[0]]
        members, rest = [], []
        for j in order:
            o = boxes[j]
            iw = max(0.0, min(b[2], o[2]) - max(b[0], o[0]))
            ih = max(0.0, min(b[3], o[3]) - max(b[1], o[1]))
            inter = iw * ih
            union = (b[2] - b[0]) * (b[3] - b[1]) + (o[2] - o[0]) * (o[3] - o[1]) - inter
            (members if union > 0 and inter / union > MIN_SUPPRESSION else rest).append(j)
        if not members:
            members = [order[0]]
            rest = order[1:]
        wts = s[members]
        box = (boxes[members] * wts[:, None]).sum(0) / wts.sum()
        kp = (kps[members] * wts[:, None, None]).sum(0) / wts.sum()
        out.append(
            {
                "xyxy": [round(float(v), 3) for v in box],
                "score": round(float(s[order[0]]), 5),
                "keypoints": [[round(float(v), 3) for v in p] for p in kp],
            }
        )
        order = rest
    return out


def check_images() -> dict[str, np.ndarray]:
    from skimage import data

    images = {"astronaut": data.astronaut(), "chelsea": data.chelsea()}
    bgr = cv2.imread(str(MEDIA / "messi5.jpg"))
    if bgr is not None:
        images["messi5"] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        # His face is ~8 px wide in the whole frame letterboxed to 128x128, too small for the
        # short-range model; in this 250x200 crop it is ~18 px.
        images["messi5_crop"] = np.ascontiguousarray(images["messi5"][0:200, 150:400])
    else:
        print(f"{MEDIA / 'messi5.jpg'} unreadable: no messi5 check")
    return images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-install", action="store_true", help="refuse to pip install upstream")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    pkg_dir = ensure_upstream(PACKAGE, UPSTREAM, not args.no_install)
    src = pkg_dir / MODEL_FILE
    shutil.copyfile(src, out / "model.tflite")

    lite = Tflite(src)
    inp = lite.input
    assert list(inp["shape"]) == [1, SIZE, SIZE, 3] and inp["dtype"] == np.float32, inp
    outs = {name: (list(d["shape"]), d["dtype"]) for name, d in lite.outputs.items()}
    print("tflite input:", inp["name"], list(inp["shape"]), "outputs:", outs)
    reg_src = next(n for n, (s, _) in outs.items() if s[-1] == 16)
    cls_src = next(n for n, (s, _) in outs.items() if s[-1] == 1)

    anchors = ssd_anchors(**ANCHOR_OPTIONS)  # type: ignore[arg-type]
    n = anchors.shape[0]
    assert anchors.shape == (896, 4) and outs[reg_src][0] == [1, n, 16], (anchors.shape, outs)
    np.save(out / "anchors.npy", anchors)
    print(f"anchors: {anchors.shape}, x_center/y_center/w/h, normalized")

    onnx_path = out / "model.fp32.onnx"
    to_onnx(src, onnx_path, {inp["name"]: IN_NAME, reg_src: REG_NAME, cls_src: CLS_NAME})
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in onnx.load(onnx_path).graph.output}
    print("onnx input:", IN_NAME, [1, SIZE, SIZE, 3], "outputs:", shapes)

    # ONNX == TFLite (raw outputs) on real images and noise; TFLite's detections as reference.
    rng = np.random.default_rng(0)
    images = check_images()
    reference: dict[str, object] = {}
    worst = 0.0
    for name, rgb in [*images.items(), ("noise", None)]:
        if rgb is None:
            x = rng.uniform(-1, 1, (1, SIZE, SIZE, 3)).astype(np.float32)
        else:
            x = ((letterbox(rgb).astype(np.float32) - 127.5) / 127.5)[None]
        t = lite(x)
        o_reg, o_cls = sess.run([REG_NAME, CLS_NAME], {IN_NAME: x})
        dr, dc = np.abs(o_reg - t[reg_src]).max(), np.abs(o_cls - t[cls_src]).max()
        # Relative to the tensor's range: logits reach +-80 (float32 eps there is 1e-5).
        rr, rc = dr / np.abs(t[reg_src]).max(), dc / np.abs(t[cls_src]).max()
        worst = max(worst, float(rr), float(rc))
        print(
            f"{name}: onnx vs tflite max |diff| regressors {dr:.2e} ({rr:.1e} of max |value|), "
            f"logits {dc:.2e} ({rc:.1e})"
        )
        if rgb is None:
            continue
        dets = decode(t[reg_src], t[cls_src], anchors)
        reference[name] = {"frame_shape": list(rgb.shape), "tflite_detections": dets}
        print(f"{name}: TFLite + MediaPipe decode (model-input px):")
        for d in dets:
            print("   ", {k: d[k] for k in ("xyxy", "score")})
    assert worst < 1e-5, f"ONNX differs from TFLite by {worst:.1e} of the outputs' range"
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    full_range(pkg_dir, out, images)

    spec = {
        "name": "face",
        "version": "1.0.0",
        "task": "face",
        "description": "MediaPipe BlazeFace short range: faces within ~2 m, with 6 keypoints (128x128)",
        "input": {
            "name": IN_NAME,
            "width": SIZE,
            "height": SIZE,
            "layout": "NHWC",
            "color": "RGB",
            "dtype": "float32",
            "mean": [127.5] * 3,
            "std": [127.5] * 3,
            # MediaPipe's ImageToTensorCalculator keeps the aspect ratio (zero padding, -1.0
            # after normalisation) and samples bilinearly.
            "resize": "letterbox",
            "interpolation": "linear",
        },
        "outputs": {"regressors": REG_NAME, "scores": CLS_NAME},
        "labels": ["face"],
        "decoder": {
            "name": "blazeface",
            "params": {
                "score_threshold": MIN_SCORE,
                "iou_threshold": MIN_SUPPRESSION,
                "nms": "weighted",
                "max_detections": 100,
                "anchors": "anchors",
                "num_keypoints": len(KEYPOINT_NAMES),
                "keypoint_names": KEYPOINT_NAMES,
                "scales": [float(SIZE)] * 4,
            },
        },
        "assets": {"anchors": "anchors.npy"},
        "upstream": {
            "package": UPSTREAM,
            "file": f"{PACKAGE}/{MODEL_FILE}",
            "licence": "Apache-2.0",
            "licence_file": "LICENSE.txt",
        },
        # The logit head stays float (logit_head; zoo/face/README.md).
        "quantize": {"per_channel": True, "nodes_to_exclude": logit_head(onnx_path)},
    }
    (out / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    here = Path(__file__).resolve().parent
    if not (here / "LICENSE.txt").exists():
        shutil.copyfile(licence_file(pkg_dir, "mediapipe"), here / "LICENSE.txt")
    print(f"wrote {out}: {sorted(p.name for p in out.iterdir())}")


if __name__ == "__main__":
    main()
