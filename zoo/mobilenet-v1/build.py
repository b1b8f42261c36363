"""Build the `mobilenet-v1` zoo model: MobileNet V1 1.0/224, UNTRAINED -> fp32 ONNX + spec.json.

For latency comparison with Sony's IMX500 claim (MobileNet V1 in 3.1 ms) only: no package
ships MobileNet V1 weights, and a dense CNN's latency does not depend on its weight values, so
the weights are a fixed-seed He initialisation. The outputs are meaningless.

Run in the recipe venv (see requirements.txt next to this file):

    .venv-zoo-mobilenet-v1/bin/python zoo/mobilenet-v1/build.py --out zoo/build/mobilenet-v1

Writes into --out:
    model.fp32.onnx  opset 17, input `input` float32 [1,3,224,224] NCHW RGB, (x-127.5)/127.5;
                     output `logits` float32 [1,1000] (no softmax in the graph)
    spec.json        name/input/outputs/labels/decoder/upstream/quantize (turned into the manifest)
    LICENSE.txt      copy of zoo/mobilenet-v1/LICENSE.txt
    checks.json      parameter count, MACs, ONNX sha256, ONNX Runtime output shape

Architecture: Howard et al. 2017 (arXiv:1704.04861), Table 1, width 1.0, as in TF-slim's
mobilenet_v1 (ReLU6, the quantized TFLite reference model's activation): conv 3x3/2 32, 13
depthwise-separable blocks (dw 3x3 + BN + ReLU6, pw 1x1 + BN + ReLU6), global average pool,
1x1 conv to 1000 classes (with bias), flatten. BatchNorm is folded into each conv's bias, as
an inference graph (and the IMX500 converter) has it. The paper's Table 1 lists the last
depthwise conv as stride 2; every implementation (and the 7x7 input of its pool) uses 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

NAME = "mobilenet-v1"
VERSION = "1.0.0"
SIZE = 224
CLASSES = 1000
MEAN = [127.5, 127.5, 127.5]
STD = [127.5, 127.5, 127.5]
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17
SEED = 1704_04861  # arXiv id of the paper: any fixed seed makes the build deterministic

# (stride, output channels) of the 13 depthwise-separable blocks, Table 1.
BLOCKS = [
    (1, 64),
    (2, 128),
    (1, 128),
    (2, 256),
    (1, 256),
    (2, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (2, 1024),
    (1, 1024),
]

# The paper / Keras count (trainable parameters, BatchNorm gamma+beta included, no conv biases).
PAPER_PARAMS = 4_231_976


class Graph:
    """Collects nodes and initializers while counting parameters and multiply-adds."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.params = 0  # folded graph: conv weights + biases
        self.bn_channels = 0  # channels that had a BatchNorm (gamma+beta before folding)
        self.macs = 0
        self.relu6_bounds = False

    def conv(
        self,
        x: str,
        name: str,
        cin: int,
        cout: int,
        k: int,
        stride: int,
        hw_out: int,
        *,
        group: int = 1,
        relu6: bool = True,
        bn: bool = True,
    ) -> str:
        fan_in = k * k * cin // group
        # He (Kaiming normal, fan_in) for ReLU layers; LeCun-ish for the linear classifier.
        std = np.sqrt((2.0 if relu6 else 1.0) / fan_in)
        w = (self.rng.standard_normal((cout, cin // group, k, k)) * std).astype(np.float32)
        b = (self.rng.standard_normal(cout) * 0.01).astype(np.float32)
        self.inits += [
            numpy_helper.from_array(w, f"{name}.weight"),
            numpy_helper.from_array(b, f"{name}.bias"),
        ]
        self.params += w.size + b.size
        self.bn_channels += cout if bn else 0
        self.macs += w.size * hw_out * hw_out
        pad = k // 2
        out = f"{name}.out"
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}.weight", f"{name}.bias"],
                [out],
                name=name,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
                group=group,
            )
        )
        if not relu6:
            return out
        # ReLU6 as Clip(0, 6): what TF-slim / TFLite / torch.onnx export emit.
        if not self.relu6_bounds:
            self.inits += [
                numpy_helper.from_array(np.array(0.0, np.float32), "relu6.min"),
                numpy_helper.from_array(np.array(6.0, np.float32), "relu6.max"),
            ]
            self.relu6_bounds = True
        act = f"{name}.relu6"
        clip = helper.make_node("Clip", [out, "relu6.min", "relu6.max"], [act], name=f"{name}/Relu6")
        self.nodes.append(clip)
        return act


def build_model(seed: int = SEED) -> tuple[onnx.ModelProto, dict[str, int]]:
    g = Graph(seed)
    hw = SIZE // 2
    x = g.conv(INPUT_NAME, "conv0", 3, 32, 3, 2, hw)
    c = 32
    for i, (stride, cout) in enumerate(BLOCKS, start=1):
        hw //= stride
        x = g.conv(x, f"block{i}.dw", c, c, 3, stride, hw, group=c)
        x = g.conv(x, f"block{i}.pw", c, cout, 1, 1, hw)
        c = cout
    assert hw == 7 and c == 1024, (hw, c)
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    x = g.conv("pool", "logits_conv", c, CLASSES, 1, 1, 1, relu6=False, bn=False)
    g.inits.append(numpy_helper.from_array(np.array([1, CLASSES], np.int64), "logits_shape"))
    g.nodes.append(helper.make_node("Reshape", [x, "logits_shape"], [OUTPUT_NAME], name="flatten"))

    graph = helper.make_graph(
        g.nodes,
        "mobilenet_v1_1.0_224_untrained",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, CLASSES])],
        g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="ivs zoo/mobilenet-v1",
        producer_version=VERSION,
        doc_string="MobileNet V1 1.0/224, UNTRAINED (random weights): latency measurement only",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    counts = {
        "params_folded": g.params,
        # unfolded: each folded bias stands for BN gamma+beta (one extra per channel)
        "params_paper": g.params + g.bn_channels,
        "bn_channels": g.bn_channels,
        "macs": g.macs,
    }
    return model, counts


def make_spec() -> dict[str, Any]:
    return {
        "name": NAME,
        "version": VERSION,
        "task": "benchmark",
        "description": (
            "MobileNet V1 1.0/224, UNTRAINED (random weights): latency comparison with the IMX500's 3.1 ms claim only"
        ),
        "notice": "untrained weights: outputs are meaningless; for latency measurement only",
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
        # Placeholders: the model is untrained, so its classes mean nothing.
        "labels": [f"class_{i}" for i in range(CLASSES)],
        "decoder": {"name": "classify", "params": {"softmax": True, "top_k": 1}},
        "assets": {},
        "upstream": {
            "package": "none (architecture from Howard et al. 2017, arXiv:1704.04861)",
            "weights": f"none: fixed-seed He initialisation (numpy default_rng({SEED}))",
            "licence": "Apache-2.0 (ivs)",
            "licence_file": "LICENSE.txt",
        },
        "quantize": {"per_channel": True, "nodes_to_exclude": []},
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_onnx(path: Path) -> dict[str, Any]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    (y,) = sess.run([OUTPUT_NAME], {INPUT_NAME: x})
    assert y.shape == (1, CLASSES), y.shape
    assert np.isfinite(y).all()
    return {
        "onnxruntime": ort.__version__,
        "output_shape": list(y.shape),
        "output_std": round(float(y.std()), 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "zoo" / "build" / NAME)
    ap.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime run check")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    model, counts = build_model()
    onnx_path = out / "model.fp32.onnx"
    onnx.save(model, onnx_path)
    print(f"build.py: wrote {onnx_path} (onnx {onnx.__version__}, opset {OPSET}, seed {SEED})")
    print(
        f"build.py: parameters {counts['params_paper']:,} as the paper/Keras count them "
        f"(BatchNorm gamma+beta, expected {PAPER_PARAMS:,}); "
        f"{counts['params_folded']:,} in the BN-folded graph"
    )
    print(f"build.py: multiply-adds {counts['macs']:,} ({counts['macs'] / 1e6:.1f} M; paper: 569 M)")
    if counts["params_paper"] != PAPER_PARAMS:
        raise SystemExit(f"parameter count {counts['params_paper']:,} != {PAPER_PARAMS:,}: not MobileNet V1")

    (out / "spec.json").write_text(json.dumps(make_spec(), indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(HERE / "LICENSE.txt", out / "LICENSE.txt")

    report: dict[str, Any] = {"onnx": onnx.__version__, "seed": SEED, **counts}
    report["onnx_sha256"] = sha256(onnx_path)
    if not args.no_check:
        report.update(check_onnx(onnx_path))
        print(f"build.py: ONNX Runtime {report['onnxruntime']}: output {report['output_shape']}")
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    (out / "checks.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"build.py: wrote {out} in {report['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
