"""Part a of `ivs bench`: model latency per runtime, precision and thread count, and the ratios
between them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from ivs.bench.common import (
    ANCHORS_MS,
    BenchConfig,
    fp32_path,
    latency_stats,
    tflite_path,
)
from ivs.bench.results import LatencyRow, Ratio
from ivs.isp import Isp
from ivs.package.reader import read_package
from ivs.package.zoo import resolve
from ivs.runtime import available, create
from ivs.runtime.base import Runner

# ---------------------------------------------------------------------------------------- part a


@dataclass
class _Row:
    model: str
    runtime: str
    precision: str
    threads: int
    runner: Runner
    samples: list[float]

    @property
    def key(self) -> str:
        return f"{self.model}/{self.runtime}/{self.precision}/t{self.threads}"


def _time_run(runner: Runner, tensor: npt.NDArray[Any]) -> float:
    t0 = time.perf_counter()
    runner.run(tensor)
    return (time.perf_counter() - t0) * 1e3


def bench_model_latency(
    model: str, cfg: BenchConfig, frame: npt.NDArray[np.uint8], log: Callable[[str], None]
) -> tuple[list[LatencyRow], list[str]]:
    """Latency rows for one model: every (runtime, precision, threads), their runs interleaved
    in blocks so that a change in the machine's load hits all rows alike."""
    package = read_package(resolve(model))
    m = package.manifest
    tensor = Isp(m.input).process(frame).tensor
    variants: list[tuple[str, bytes, str, bytes | None]] = [("int8", package.model_bytes, m.model.format, None)]
    if m.model.weights:
        variants[0] = ("int8", package.model_bytes, m.model.format, package.members[m.model.weights])
    skipped: list[str] = []
    fp32 = fp32_path(model)
    if fp32 is not None:
        variants.append(("fp32", fp32.read_bytes(), "onnx", None))
    else:
        skipped.append(f"{model}: no fp32 rows (zoo/build/{model}/model.fp32.onnx not here)")
    tfl = tflite_path(model)
    if tfl is not None:
        variants.append(("tflite-src", tfl.read_bytes(), "tflite", None))
    rows: list[_Row] = []
    try:
        for precision, data, fmt, weights in variants:
            runtimes = [r for r in available(fmt) if cfg.runtimes is None or r in cfg.runtimes]
            if precision == "tflite-src":
                runtimes = [r for r in runtimes if r == "litert"]
                if not runtimes:
                    skipped.append(f"{model}: build-time .tflite found but LiteRT is not installed")
            for rt in runtimes:
                for threads in cfg.threads:
                    try:
                        runner = create(rt, data, fmt, m.input.name, threads, weights)
                    except Exception as err:  # one runner failing to load must not end the bench
                        skipped.append(f"{model}/{rt}/{precision}/t{threads}: cannot load ({err})")
                        continue
                    for _ in range(cfg.warmup):
                        runner.run(tensor)
                    rows.append(_Row(model, rt, precision, threads, runner, []))
        per_block = max(1, -(-cfg.iterations // cfg.blocks))
        for _ in range(cfg.blocks):
            for row in rows:
                if len(row.samples) >= cfg.iterations:
                    continue
                runner = row.runner
                runner.run(tensor)  # re-warm after the other rows ran (caches, thread pools)
                t_start = time.perf_counter()
                budget = cfg.row_budget_s / cfg.blocks
                for _ in range(min(per_block, cfg.iterations - len(row.samples))):
                    row.samples.append(_time_run(runner, tensor))
                    if time.perf_counter() - t_start > budget and len(row.samples) >= 10:
                        break
        log(f"a. {model}: {len(rows)} rows")
    finally:
        for row in rows:
            row.runner.close()
    out = []
    for row in rows:
        stats = latency_stats(row.samples)
        anchored = row.model == "mobilenet-v1"
        out.append(
            LatencyRow(
                **msgspec.structs.asdict(stats),
                key=row.key,
                model=row.model,
                runtime=row.runtime,
                precision=row.precision,
                threads=row.threads,
                input=f"{m.input.width}x{m.input.height}",
                vs_anchor={a: round(stats.median_ms / v, 3) for a, v in ANCHORS_MS.items()} if anchored else None,
            )
        )
    return out, skipped


def latency_ratios(rows: Sequence[LatencyRow]) -> list[Ratio]:
    """Ratios between rows of the same run: int8 speed-up, thread scaling, runner against runner."""
    by_key = {r.key: r for r in rows}
    out: list[Ratio] = []

    def add(kind: str, num: str, den: str) -> None:
        if num in by_key and den in by_key and num != den:
            value = by_key[num].median_ms / by_key[den].median_ms
            out.append(Ratio(kind=kind, numerator=num, denominator=den, value=round(value, 3)))

    for r in rows:
        m, rt, p, t = r.model, r.runtime, r.precision, r.threads
        if p == "int8":
            add("fp32/int8 (int8 speed-up)", f"{m}/{rt}/fp32/t{t}", r.key)
            if rt == "onnxruntime":
                add("openvino/onnxruntime", f"{m}/openvino/int8/t{t}", r.key)
            if rt == "litert":
                add("tflite-src/int8 (int8 speed-up, float .tflite)", f"{m}/litert/tflite-src/t{t}", r.key)
                add("openvino/litert", f"{m}/openvino/int8/t{t}", r.key)
                if m.endswith("-litert"):  # the same network packaged as ONNX, e.g. face
                    base = m.removesuffix("-litert")
                    add("int8 TFLite on litert/int8 ONNX on onnxruntime", r.key, f"{base}/onnxruntime/int8/t{t}")
        if t == 1:
            add("1 thread/2 threads (thread scaling)", r.key, f"{m}/{rt}/{p}/t2")
    return out
