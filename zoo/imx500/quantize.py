"""Quantize a zoo model for the IMX500 with Sony's Model Compression Toolkit (MCT).

Run in the MCT venv (zoo/imx500/requirements-mct.txt):

    .venv-imx500-mct/bin/python zoo/imx500/quantize.py classifier --out OUTDIR

imx500-converter compiles only networks that MCT quantized (its ONNX carries MCT's quantizer
ops), not onnxruntime QDQ models like the ones in ivs packages. So this starts again from the
PyTorch source of the package's network: post-training quantization with the "imx500" target
platform capabilities, calibrated on the same images the zoo's int8 packages use (`.cache/calib`,
through the package's own preprocessing), then MCT's ONNX export.

Writes OUTDIR/model.mct.onnx and OUTDIR/quantize.json (versions, calibration, top-1 of the
quantized model against fp32 on the calibration images, seconds).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CALIB = REPO / ".cache" / "calib"
# Zoo models with a PyTorch source this recipe can quantize: name -> recipe module.
SOURCES = {"classifier": REPO / "zoo" / "classifier" / "build.py"}


def recipe(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"zoo_{name}_build", SOURCES[name])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plain_convolutions(model: Any) -> int:
    """Replace each `Conv2dStaticSamePadding` by its ZeroPad2d and a plain `nn.Conv2d`, same weights.

    The upstream module calls `F.conv2d` in its own forward, so torch.fx traces it as a function
    call, which MCT cannot fold BatchNorm into (it fails with KeyError 'groups'); torch.nn's own
    Conv2d is a leaf it understands. The computation is the same (checked below). Returns the count.
    """
    import torch
    from torch import nn

    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ != "Conv2dStaticSamePadding":
                continue
            conv = nn.Conv2d(
                child.in_channels, child.out_channels, child.kernel_size, child.stride, 0,
                child.dilation, child.groups, child.bias is not None,
            )  # fmt: skip
            with torch.no_grad():
                conv.weight.copy_(child.weight)
                if child.bias is not None:
                    conv.bias.copy_(child.bias)
            setattr(parent, name, nn.Sequential(child.static_padding, conv))
            swapped += 1
    return swapped


def calibration(build: ModuleType, limit: int) -> list[np.ndarray]:
    import cv2

    files = sorted(p for p in CALIB.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:limit]
    if not files:
        sys.exit(f"quantize.py: no calibration images in {CALIB} (run `make zoo` or scripts/fetch-media.sh)")
    out = []
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        out.append(build.preprocess(bgr[..., ::-1].copy()))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", choices=sorted(SOURCES))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--images", type=int, default=40, help="calibration images to use")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")  # MCT and torch.onnx are chatty about deprecations

    import model_compression_toolkit as mct
    import torch

    t0 = time.perf_counter()
    build = recipe(args.model)
    build.ensure_upstream(allow_install=False)
    model = build.load_model()
    images = calibration(build, args.images)
    with torch.no_grad():
        before = model(torch.from_numpy(images[0]))
        swapped = plain_convolutions(model)
        diff = float((model(torch.from_numpy(images[0])) - before).abs().max())
    print(f"quantize.py: {swapped} same-padding convolutions made plain (max logit change {diff:.1e})")
    if diff > 1e-4:
        sys.exit(f"quantize.py: the plain convolutions changed the model's output by {diff}")

    def representative() -> Any:
        for x in images:
            yield [torch.from_numpy(x)]

    tpc = mct.get_target_platform_capabilities("pytorch", "imx500", target_platform_version="v1")
    print(f"quantize.py: MCT {mct.__version__} post-training quantization on {len(images)} images", flush=True)
    quantized, _ = mct.ptq.pytorch_post_training_quantization(
        in_module=model, representative_data_gen=representative, target_platform_capabilities=tpc
    )
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "model.mct.onnx"
    # MCT 2.2 calls torch.onnx.export without `dynamo`; torch 2.13 then picks the dynamo exporter,
    # which needs onnxscript and does not know MCT's quantizer ops. The TorchScript exporter does.
    export = torch.onnx.export
    torch.onnx.export = functools.partial(export, dynamo=False)  # type: ignore[assignment]
    mct.exporter.pytorch_export_model(model=quantized, save_model_path=str(onnx_path), repr_dataset=representative)

    agree = 0
    with torch.no_grad():
        for x in images:
            t = torch.from_numpy(x)
            q = quantized(t)
            q = q[0] if isinstance(q, list | tuple) else q
            agree += int(int(model(t).argmax()) == int(q.argmax()))
    report = {
        "model": args.model,
        "mct": mct.__version__,
        "torch": torch.__version__,
        "target_platform": "imx500 v1",
        "calibration_images": len(images),
        "top1_agreement_with_fp32_on_calibration": f"{agree}/{len(images)}",
        "onnx": onnx_path.name,
        "onnx_bytes": onnx_path.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (args.out / "quantize.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"quantize.py: wrote {onnx_path} ({report['onnx_bytes']} bytes) in {report['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
