"""Quantize the untrained MobileNet V1 as ivs does and time it (fp32 and int8).

Run in ivs's main venv after build.py:

    .venv/bin/python zoo/mobilenet-v1/bench.py --model zoo/build/mobilenet-v1

int8: ivs's own quantize_onnx (QDQ, per-channel, min/max calibrated on .cache/calib images
through the ISP), written to <model>/model.int8.onnx. Timing: ivs's runtime runners
(onnxruntime, OpenVINO), one fixed input, warm-up then the median (and p90) of --runs calls.
Writes <model>/latency.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "src"))

from ivs.isp import InputSpec  # noqa: E402
from ivs.package.quantize import calibration_images, quantize_onnx  # noqa: E402
from ivs.runtime.onnxruntime import OnnxRuntimeRunner  # noqa: E402


def time_runner(runner: Any, x: np.ndarray[Any, Any], warmup: int, runs: int) -> dict[str, float]:
    for _ in range(warmup):
        runner.run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        runner.run(x)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 3),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 3),
        "min_ms": round(times[0], 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "zoo" / "build" / "mobilenet-v1")
    ap.add_argument("--calib", type=Path, default=REPO / ".cache" / "calib")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-openvino", action="store_true")
    args = ap.parse_args(argv)

    spec = json.loads((args.model / "spec.json").read_text())
    input_spec = InputSpec.model_validate(spec["input"])
    fp32 = (args.model / "model.fp32.onnx").read_bytes()
    images = calibration_images(args.calib)
    t0 = time.perf_counter()
    int8 = quantize_onnx(
        fp32,
        input_spec,
        images,
        per_channel=spec["quantize"]["per_channel"],
        nodes_to_exclude=spec["quantize"]["nodes_to_exclude"],
    )
    print(f"bench.py: quantized on {len(images)} images in {time.perf_counter() - t0:.1f} s")
    (args.model / "model.int8.onnx").write_bytes(int8)

    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, input_spec.height, input_spec.width))
    x = x.astype(np.float32)
    results: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "runs": args.runs,
        "warmup": args.warmup,
    }
    models = {"fp32": fp32, "int8": int8}
    outs: dict[str, np.ndarray[Any, Any]] = {}
    for precision, blob in models.items():
        for threads in args.threads:
            runner = OnnxRuntimeRunner(blob, input_spec.name, threads)
            outs[precision] = runner.run(x)["logits"]
            r = time_runner(runner, x, args.warmup, args.runs)
            runner.close()
            results[f"onnxruntime/{precision}/{threads}t"] = r
            print(f"onnxruntime {precision} {threads} thread(s): {r}", flush=True)
    if not args.no_openvino:
        from ivs.runtime.openvino import OpenVinoRunner

        for precision, blob in models.items():
            runner = OpenVinoRunner(blob, "onnx", input_spec.name, 2)
            r = time_runner(runner, x, args.warmup, args.runs)
            runner.close()
            results[f"openvino/{precision}/2t"] = r
            print(f"openvino {precision} 2 threads: {r}", flush=True)

    # Untrained weights: agreement is only a sanity check that int8 computes the same graph.
    a, b = outs["fp32"].ravel(), outs["int8"].ravel()
    results["int8_vs_fp32_corr"] = round(float(np.corrcoef(a, b)[0, 1]), 4)
    print(f"bench.py: int8 vs fp32 logits correlation {results['int8_vs_fp32_corr']}")
    (args.model / "latency.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
