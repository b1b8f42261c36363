"""AdaRound for the classifier's int8 weights (Nagel et al. 2020, "Up or Down? Adaptive Rounding
for Post-Training Quantization"), run by build.py in the recipe venv (it needs torch).

Round-to-nearest is not the best int8 rounding of a layer: what matters is the error of the
layer's *output*, and rounding some weights the other way cancels errors that nearest rounding
lets add up. AdaRound learns, layer by layer, whether each weight rounds up or down by
minimising the squared error of the layer's output (after its ReLU6) on the calibration
images, with a regulariser that drives each soft rounding variable to 0 or 1.

Everything the packer decides stays the packer's: this script calls ivs's own quantizer
(src/ivs/package/quantize.py, same calibration images through the same ISP, same calibration
method) for the per-channel weight scales and the activation ranges, and only chooses floor or
ceiling of w / scale for each weight. The layers are processed in graph order with the input
of each taken from the quantized model so far (activations fake-quantized with the packer's
ranges, in 16 bits for those spec.json's `quantize.int16_activations` names, earlier layers
already rounded) and the target from the fp32 model ("asymmetric" reconstruction, as in the
AdaRound paper and BRECQ/QDrop), so each layer also absorbs part of the error of the
quantized layers before it.

Writes `adaround.npz` (int8 weights keyed by Conv/Gemm node name), which spec.json's
`quantize.rounded_weights` hands to the packer, `adaround-bits.npz` (the same rounding as one
bit per weight, 8x smaller: what the recipe ships) and `adaround.json` (per-layer output
error, nearest vs AdaRound). Deterministic: fixed seed, one thread. `--expand BITS` writes
`adaround.npz` from a saved `adaround-bits.npz` instead, on the packer's scales (about 17 s).

    python zoo/classifier/adaround.py --out zoo/build/classifier --calib .cache/calib
    python zoo/classifier/adaround.py --out zoo/build/classifier --expand zoo/classifier/adaround-bits.npz
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

from ivs.isp import InputSpec  # noqa: E402
from ivs.package.quantize import calibration_images, calibration_tensors, quantize_onnx  # noqa: E402

# AdaRound's rectified sigmoid stretch and the regulariser's schedule (the paper's values):
# no regularisation for the first 20% of the iterations, then beta annealed from 20 to 2.
ZETA, GAMMA = 1.1, -0.1
WARMUP = 0.2
BETA = (20.0, 2.0)
QMAX = 127  # onnxruntime's symmetric int8 weights use -127..127
# Images per step: all of them for small feature maps, fewer for the 112x112/56x56 layers so
# every step costs about the same.
PIXELS_PER_STEP = 16 * 28 * 28
# The rounding as the recipe ships it (zoo/classifier/adaround-bits.npz): one bit per weight.
BITS_FILE = "adaround-bits.npz"
QUIET = Path("/tmp/BENCH_QUIET")  # the project lead's benchmark flag: wait while it exists

Tensor = torch.Tensor


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _layer(node: onnx.NodeProto, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    a = _attrs(node)
    if node.op_type == "Gemm":
        assert a.get("transB", 0) == 1 and a.get("alpha", 1.0) == 1.0 and a.get("beta", 1.0) == 1.0
        return F.linear(x, w, b)
    p = a.get("pads", [0, 0, 0, 0])
    if any(p):  # ONNX pads are (top, left, bottom, right); TF "SAME" makes them asymmetric
        x = F.pad(x, (p[1], p[3], p[0], p[2]))
    return F.conv2d(
        x, w, b, stride=a.get("strides", [1, 1]), groups=a.get("group", 1), dilation=a.get("dilations", [1, 1])
    )


def _soft(v: Tensor) -> Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


def _recon(out: Tensor, target: Tensor) -> Tensor:
    return (out - target).pow(2).sum(1).mean()


def adaround_layer(
    node: onnx.NodeProto,
    x: Tensor,
    target: Tensor,
    w: Tensor,
    b: Tensor | None,
    scale: Tensor,
    post: Callable[[Tensor], Tensor],
    iters: int,
    lr: float,
    lam: float,
) -> tuple[Tensor, dict[str, float]]:
    """int8 weights (floor or ceiling of w / scale) minimising |post(layer(x)) - target|^2."""
    floor = torch.floor(w / scale)
    rest = w / scale - floor
    v = (-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1)).requires_grad_(True)  # soft(v) == rest
    opt = torch.optim.Adam([v], lr=lr)
    n = x.shape[0]
    pixels = x.shape[-1] * x.shape[-2] if x.dim() == 4 else 1
    batch = min(n, max(4, PIXELS_PER_STEP // pixels))
    warm = int(WARMUP * iters)
    for it in range(iters):
        idx = torch.randperm(n)[:batch]
        out = post(_layer(node, x[idx], scale * torch.clamp(floor + _soft(v), -QMAX, QMAX), b))
        loss = _recon(out, target[idx])
        if it >= warm:
            beta = BETA[0] + (BETA[1] - BETA[0]) * (it - warm) / max(1, iters - warm)
            loss = loss + lam * (1 - (2 * _soft(v) - 1).abs().pow(beta)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        q = torch.clamp(floor + (v >= 0).float(), -QMAX, QMAX)
        nearest = torch.clamp(torch.round(w / scale), -QMAX, QMAX)
        info = {
            "nearest": _recon(post(_layer(node, x, scale * nearest, b)), target).item(),
            "adaround": _recon(post(_layer(node, x, scale * q, b)), target).item(),
            "changed": (q != nearest).float().mean().item(),
        }
    return q, info


def adaround(
    fp32: onnx.ModelProto,
    qdq: onnx.ModelProto,
    calib: np.ndarray,
    *,
    iters: int,
    lr: float,
    lam: float,
    int16_activations: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Rounding for every quantized Conv/Gemm of `qdq` (ivs's QDQ model of `fp32`), with the
    activations `int16_activations` names ("*": all) quantized as the packer does with 16 bits
    (the same range in 65536 steps: scale / 257, zero point * 257)."""
    init = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in fp32.graph.initializer}
    for node in fp32.graph.node:
        if node.op_type == "Constant":
            init[node.output[0]] = torch.from_numpy(numpy_helper.to_array(node.attribute[0].t).copy())
    qinit = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    producer = {o: n for n in qdq.graph.node for o in n.output}
    outputs = {o.name for o in fp32.graph.output}
    # Activation ranges: the tensors the QDQ model quantizes (the packer fuses each ReLU6 into
    # the quantization of its output; an output's Q node reads "<name>_QuantizeLinear_Input").
    act: dict[str, tuple[float, int]] = {}
    for node in qdq.graph.node:
        if node.op_type == "QuantizeLinear":
            name = node.input[0].removesuffix("_QuantizeLinear_Input") if node.input[0] not in init else ""
            act[name] = (float(qinit[node.input[1]]), int(qinit[node.input[2]]))
    assert set(act) - {n for node in fp32.graph.node for n in node.output} <= {"input"}, "QDQ/fp32 tensor names differ"
    weight_scale = {}
    for node in qdq.graph.node:
        if node.op_type in ("Conv", "Gemm") and node.input[1] in producer:
            s = qinit[producer[node.input[1]].input[1]].astype(np.float32)
            weight_scale[node.name] = torch.from_numpy(s)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in fp32.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    uses = {name: len(c) for name, c in consumers.items()}

    wide = set(act) if int16_activations == ["*"] else set(int16_activations or [])
    assert wide <= set(act), sorted(wide - set(act))

    def fake_quant(x: Tensor, name: str) -> Tensor:
        if name not in act:
            return x
        s, zp = act[name]
        top = 255
        if name in wide:
            s, zp, top = s / 257, zp * 257, 65535
        return (torch.clamp(torch.round(x / s) + zp, 0, top) - zp) * s

    x0 = torch.from_numpy(calib)
    env_f: dict[str, Tensor] = {"input": x0}  # fp32 model
    env_q: dict[str, Tensor] = {"input": fake_quant(x0, "input")}  # int8 model so far
    rounding: dict[str, np.ndarray] = {}
    report: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for node in fp32.graph.node:
            while QUIET.exists():
                time.sleep(30)
            if node.op_type == "Constant":
                continue
            fin = [env_f[i] if i in env_f else init[i] for i in node.input]
            qin = [env_q[i] if i in env_q else init[i] for i in node.input]
            out = node.output[0]
            if node.op_type in ("Conv", "Gemm"):
                bias = fin[2] if len(fin) > 2 else None
                yf = _layer(node, fin[0], fin[1], bias)
                scale = weight_scale[node.name].reshape([-1] + [1] * (fin[1].dim() - 1))
                after = consumers.get(out, [])
                if len(after) == 1 and after[0].op_type == "Clip":  # reconstruct after the ReLU6
                    lo, hi = float(init[after[0].input[1]]), float(init[after[0].input[2]])
                    post: Callable[[Tensor], Tensor] = lambda t, lo=lo, hi=hi: torch.clamp(t, lo, hi)  # noqa: E731
                else:
                    post = lambda t: t  # noqa: E731
                with torch.enable_grad():
                    q, info = adaround_layer(node, qin[0], post(yf), fin[1], bias, scale, post, iters, lr, lam)
                rounding[node.name] = q.numpy().astype(np.int8)
                yq = _layer(node, qin[0], scale * q, bias)
                report.append({"node": node.name, **{k: round(v, 6) for k, v in info.items()}})
                log(
                    f"adaround: {len(report):2d} {node.name:36s} output error nearest {info['nearest']:.4g} "
                    f"-> {info['adaround']:.4g} ({100 * info['changed']:.1f}% rounded the other way) "
                    f"{time.perf_counter() - t0:.0f} s"
                )
            elif node.op_type == "Clip":
                yf = torch.clamp(fin[0], float(fin[1]), float(fin[2]))
                yq = torch.clamp(qin[0], float(qin[1]), float(qin[2]))
            elif node.op_type == "Add":
                yf, yq = fin[0] + fin[1], qin[0] + qin[1]
            elif node.op_type == "GlobalAveragePool":
                yf, yq = fin[0].mean(dim=(2, 3), keepdim=True), qin[0].mean(dim=(2, 3), keepdim=True)
            elif node.op_type in ("Reshape", "Flatten"):
                yf, yq = fin[0].flatten(1), qin[0].flatten(1)
            else:
                raise SystemExit(f"adaround: op {node.op_type} ({node.name}) is not supported")
            env_f[out], env_q[out] = yf, fake_quant(yq, out)
            for name in node.input:  # free what no later node reads
                uses[name] -= 1
                if uses[name] == 0 and name not in outputs:
                    env_f.pop(name, None)
                    env_q.pop(name, None)
    return rounding, report


def weight_floors(fp32: onnx.ModelProto, qdq: onnx.ModelProto) -> dict[str, np.ndarray]:
    """floor(w / scale) of every quantized Conv/Gemm, on the packer's per-channel scales (float32,
    as adaround_layer computes it): an AdaRound result is this plus 0 or 1 for each weight."""
    weights = {i.name: numpy_helper.to_array(i) for i in fp32.graph.initializer}
    qinit = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    producer = {o: n for n in qdq.graph.node for o in n.output}
    fp32_nodes = {n.name: n for n in fp32.graph.node}
    floors = {}
    for node in qdq.graph.node:
        if node.op_type in ("Conv", "Gemm") and node.input[1] in producer:
            w = weights[fp32_nodes[node.name].input[1]].astype(np.float32)
            scale = qinit[producer[node.input[1]].input[1]].astype(np.float32).reshape([-1] + [1] * (w.ndim - 1))
            floors[node.name] = np.floor(w / scale)
    return floors


def to_bits(rounding: dict[str, np.ndarray], floors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rounding as one bit per weight (1: rounded up), packed: 8x smaller than int8."""
    bits = {}
    for name, q in rounding.items():
        up = q.astype(np.float32) - floors[name]
        if not np.isin(up, (0, 1)).all():
            raise SystemExit(f"adaround: {name}: values that are not floor or floor + 1 of w / scale")
        bits[name] = np.packbits(up.astype(np.uint8).reshape(-1))
    return bits


def from_bits(bits: dict[str, np.ndarray], floors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """int8 weights back from to_bits' bits and the packer's scales."""
    rounding = {}
    for name, packed in bits.items():
        floor = floors[name]
        up = np.unpackbits(packed, count=floor.size).reshape(floor.shape)
        rounding[name] = np.clip(floor + up, -QMAX, QMAX).astype(np.int8)
    return rounding


PackerQdq = tuple[onnx.ModelProto, onnx.ModelProto, dict[str, Any], InputSpec, list[Path]]


def packer_qdq(out: Path, calib: Path) -> PackerQdq:
    """The fp32 model and ivs's own QDQ model of it (the packer's scales and activation ranges)."""
    spec = json.loads((out / "spec.json").read_text())
    qopts = spec["quantize"]
    input_spec = InputSpec.model_validate(spec["input"])
    images = calibration_images(calib)
    fp32_bytes = (out / "model.fp32.onnx").read_bytes()
    print(f"adaround: scales and ranges from ivs's quantizer on {len(images)} images in {calib}", flush=True)
    qdq = onnx.load_from_string(
        quantize_onnx(
            fp32_bytes,
            input_spec,
            images,
            per_channel=bool(qopts["per_channel"]),
            nodes_to_exclude=list(qopts["nodes_to_exclude"]),
            calibrate_method=str(qopts["calibrate_method"]),
        )
    )
    return onnx.load_from_string(fp32_bytes), qdq, qopts, input_spec, images


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the recipe's build folder (model.fp32.onnx, spec.json)")
    ap.add_argument("--calib", type=Path, default=REPO / ".cache" / "calib")
    ap.add_argument("--iters", type=int, default=int(os.environ.get("ADAROUND_ITERS", "500")))
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--lam", type=float, default=0.01, help="weight of the rounding regulariser")
    ap.add_argument(
        "--expand", type=Path, metavar="BITS", help=f"write adaround.npz from a saved {BITS_FILE} instead of running"
    )
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(1)
    fp32, qdq, qopts, input_spec, images = packer_qdq(args.out, args.calib)
    floors = weight_floors(fp32, qdq)
    if args.expand is not None:
        with np.load(args.expand, allow_pickle=False) as npz:
            rounding = from_bits({name: npz[name] for name in npz.files}, floors)
        np.savez_compressed(args.out / "adaround.npz", **rounding)
        print(f"adaround: wrote {args.out / 'adaround.npz'} from {args.expand} ({len(rounding)} layers)")
        return 0
    calib = np.concatenate(calibration_tensors(images, input_spec))
    rounding, report = adaround(
        fp32, qdq, calib, iters=args.iters, lr=args.lr, lam=args.lam,
        int16_activations=list(qopts.get("int16_activations", [])), log=lambda s: print(s, flush=True),
    )  # fmt: skip
    np.savez_compressed(args.out / "adaround.npz", **rounding)
    np.savez_compressed(args.out / BITS_FILE, **to_bits(rounding, floors))
    summary = {"images": len(images), "iters": args.iters, "lr": args.lr, "lam": args.lam, "layers": report}
    (args.out / "adaround.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"adaround: wrote {args.out / 'adaround.npz'} and {args.out / BITS_FILE} ({len(rounding)} layers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
