"""`ivs bench`: what this machine does with the zoo, measured in one run, ratios taken in that run.

Parts measured here (the letters follow the benchmark plan in docs/benchmarks.md):

a. model latency: `runner.run` on a prepared tensor, per runner, precision and thread count;
b. frame to metadata, end to end, for 4K and 1080p frames and the sample video: ISP, inference
   and decode timed apart, then the real Sensor paced at 30 and 60 fps, sustained, with drops
   and deadline misses counted (`ivs.bench.pipeline`);
c. the naive pipeline (OpenCV DNN fp32, whole-frame INTER_AREA, json.dumps) on the same frames,
   and ivs / naive (`ivs.bench.naive`);
d. safety stop latency: capture to a `stop` event at an MQTT subscriber, through a real Mosquitto;
e. hub ingest: events per second into SQLite and PostgreSQL through `Store.ingest`, the HTTP API and MQTT;
f. data reduction: bytes of metadata records against raw frames and the compressed file;
g. memory: the peak resident set of the bench process, and of a real `ivs run` and a real
   `ivs hub serve` process (`ivs.bench.memory`).

Absolute times depend on the machine and on whatever else runs on it; compare rows as ratios
measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import msgspec
import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from ivs.isp import Isp
from ivs.model import load_model
from ivs.package.reader import read_package
from ivs.package.zoo import names as zoo_names
from ivs.package.zoo import resolve
from ivs.records import encode
from ivs.runtime import available, create
from ivs.runtime.base import Runner

ROOT = Path(__file__).resolve().parents[3]
"""The source checkout (where `zoo/build` and `.cache/media` live when ivs runs from one)."""

ANCHORS_MS: dict[str, float] = {"imx500": 3.1, "coral": 2.4}
"""Published MobileNet V1 per-frame latencies (docs/design PRODUCT.md): Sony IMX500, Coral Edge TPU."""

DEADLINES_MS = (33.3, 16.7)
"""Frame periods at 30 and 60 fps."""

FRAME_SIZES: dict[str, tuple[int, int]] = {"4k": (3840, 2160), "1080p": (1920, 1080)}

QUICK_MODELS = ("mobilenet-v1", "person", "face", "face-litert")
E2E_MODELS = ("person", "mobilenet-v1")
LEDGER_MODEL = "person"

NOTES = {
    "mobilenet-v1": "untrained weights: latency only, its outputs mean nothing",
    "litert": "face-litert is the zoo's TFLite package (int8, AI Edge Quantizer): LiteRT and OpenVINO run it; "
    "the other packages are ONNX, which LiteRT cannot read; tflite-src rows are the float upstream .tflite "
    "(zoo/build/<name>/model.tflite) on LiteRT",
    "fp32": "fp32 rows only where the unpacked float model zoo/build/<name>/model.fp32.onnx exists "
    "(a source checkout that built the zoo); packages carry int8 only",
    "timing": "absolute times depend on the machine and its load; compare rows as ratios taken in the same run",
}


@dataclass(frozen=True)
class BenchConfig:
    """What to measure; `quick()` and `full()` are the two presets `ivs bench` offers."""

    models: tuple[str, ...]
    iterations: int
    """Timed runs per latency row (part a), split into `blocks` interleaved across rows."""
    warmup: int
    blocks: int
    threads: tuple[int, ...]
    runtimes: tuple[str, ...] | None
    """None: every runner installed that reads the format."""
    row_budget_s: float
    """A latency row stops early (keeping at least 10 runs) when it has used this much time."""
    e2e_models: tuple[str, ...]
    e2e_sizes: tuple[str, ...]
    e2e_frames: int
    ledger_frames: int | None
    """Frames of vtest.avi for part f; None: the whole file; 0: skip part f."""
    stops: int = 0
    """Stop events for part d (the walker enters the zone this many times); 0: skip part d."""
    ingest_events: int = 0
    """Events for part e, per path (Store.ingest, HTTP); 0: skip part e."""
    sustain_s: float = 0.0
    """Part b, sustained: seconds of frames per model, feed and rate (30, 60 fps); 0: skip."""
    naive_frames: int = 0
    """Part c: frames per block through ivs and through the naive pipeline; 0: skip part c."""
    naive_blocks: int = 2
    rss_frames: int | None = 0
    """Part g: frames of vtest.avi for the `ivs run` process; None: the whole file; 0: skip."""
    rss_events: int = 0
    """Part g: events posted to the `ivs hub serve` process; 0: skip it."""
    rss_runtimes: tuple[str, ...] = ("auto",)
    """Part g: one `ivs run` per runtime (what each costs in memory)."""
    stop_outboxes: tuple[Literal["full", "normal"], ...] = ("full", "normal")
    """Part d: one safety stop run per outbox durability ("full" is the sensor's default)."""

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(
            QUICK_MODELS, 60, 3, 3, (1, 2), None, 2.0, E2E_MODELS, tuple(FRAME_SIZES), 30, 120, 3, 5_000,
            sustain_s=1.0, naive_frames=3, rss_frames=30, rss_events=5_000, stop_outboxes=("full",),
        )  # fmt: skip

    @classmethod
    def full(cls) -> BenchConfig:
        return cls(
            tuple(zoo_names()), 100, 10, 4, (1, 2), None, 12.0, E2E_MODELS, tuple(FRAME_SIZES), 60, None, 20, 50_000,
            sustain_s=5.0, naive_frames=12, naive_blocks=3, rss_frames=None, rss_events=50_000,
            rss_runtimes=("auto", "onnxruntime", "openvino"),
        )  # fmt: skip


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """Median, p99 and spread (IQR and min/max) of timings in milliseconds."""
    if not samples_ms:
        raise ValueError("no samples")
    a = np.asarray(samples_ms, dtype=np.float64)
    q1, med, q3, p99 = (float(v) for v in np.percentile(a, [25, 50, 75, 99]))
    return {
        "n": len(a),
        "median_ms": round(med, 4),
        "p99_ms": round(p99, 4),
        "q1_ms": round(q1, 4),
        "q3_ms": round(q3, 4),
        "iqr_ms": round(q3 - q1, 4),
        "min_ms": round(float(a.min()), 4),
        "max_ms": round(float(a.max()), 4),
        "mean_ms": round(float(a.mean()), 4),
    }


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str] = {}
    for module in ("onnxruntime", "openvino", "ai_edge_litert", "numpy", "cv2"):
        try:
            versions[module] = str(getattr(__import__(module), "__version__", "?"))
        except ImportError:
            continue
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cpus_usable": affinity,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": versions,
    }


def peak_rss_mib() -> float:
    """`ru_maxrss` of this process: the most memory it has held resident so far (Linux: KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / (1024 * 1024) if sys.platform == "darwin" else kib / 1024, 1)


def current_rss_mib() -> float | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def media_dir() -> Path:
    """Where the sample media are: $IVS_MEDIA, ./.cache/media, or the checkout's .cache/media."""
    env = os.environ.get("IVS_MEDIA")
    candidates = [Path(env)] if env else []
    candidates += [Path.cwd() / ".cache" / "media", ROOT / ".cache" / "media"]
    for c in candidates:
        if (c / "vtest.avi").is_file():
            return c
    return candidates[-1]


def fp32_path(model: str) -> Path | None:
    for base in (Path.cwd(), ROOT):
        p = base / "zoo" / "build" / model / "model.fp32.onnx"
        if p.is_file():
            return p
    return None


def tflite_path(model: str) -> Path | None:
    for base in (Path.cwd(), ROOT):
        p = base / "zoo" / "build" / model / "model.tflite"
        if p.is_file():
            return p
    return None


def sample_frames(count: int) -> tuple[list[npt.NDArray[np.uint8]], str]:
    """Real-image RGB frames (spread over vtest.avi) and where they came from; a synthetic
    scene where the video is missing."""
    path = media_dir() / "vtest.avi"
    if path.is_file():
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            total = int(stream.frames) or 700
            want = {int(i) for i in np.linspace(0, max(total - 1, 0) * 0.9, count)}
            frames = []
            for i, vf in enumerate(container.decode(stream)):
                if i in want:
                    frames.append(np.ascontiguousarray(vf.to_ndarray(format="rgb24"), dtype=np.uint8))
                if len(frames) == len(want):
                    break
        if frames:
            return frames, f"{path.name} ({frames[0].shape[1]}x{frames[0].shape[0]})"
    from ivs.sources.synthetic import SyntheticSource

    source = SyntheticSource()
    it = source.frames()
    frames = [next(it).pixels for _ in range(count)]
    source.close()
    return frames, "synthetic scene (vtest.avi not found)"


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
) -> tuple[list[dict[str, Any]], list[str]]:
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
        entry: dict[str, Any] = {
            "key": row.key,
            "model": row.model,
            "runtime": row.runtime,
            "precision": row.precision,
            "threads": row.threads,
            "input": f"{m.input.width}x{m.input.height}",
            **latency_stats(row.samples),
        }
        if row.model == "mobilenet-v1":
            entry["vs_anchor"] = {a: round(entry["median_ms"] / v, 3) for a, v in ANCHORS_MS.items()}
        out.append(entry)
    return out, skipped


def latency_ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ratios between rows of the same run: int8 speed-up, thread scaling, runner against runner."""
    by_key = {r["key"]: r for r in rows}
    out: list[dict[str, Any]] = []

    def add(kind: str, num: str, den: str) -> None:
        if num in by_key and den in by_key and num != den:
            value = by_key[num]["median_ms"] / by_key[den]["median_ms"]
            out.append({"kind": kind, "numerator": num, "denominator": den, "value": round(value, 3)})

    for r in rows:
        m, rt, p, t = r["model"], r["runtime"], r["precision"], r["threads"]
        if p == "int8":
            add("fp32/int8 (int8 speed-up)", f"{m}/{rt}/fp32/t{t}", r["key"])
            if rt == "onnxruntime":
                add("openvino/onnxruntime", f"{m}/openvino/int8/t{t}", r["key"])
            if rt == "litert":
                add("tflite-src/int8 (int8 speed-up, float .tflite)", f"{m}/litert/tflite-src/t{t}", r["key"])
                add("openvino/litert", f"{m}/openvino/int8/t{t}", r["key"])
                if m.endswith("-litert"):  # the same network packaged as ONNX, e.g. face
                    base = m.removesuffix("-litert")
                    add("int8 TFLite on litert/int8 ONNX on onnxruntime", r["key"], f"{base}/onnxruntime/int8/t{t}")
        if t == 1:
            add("1 thread/2 threads (thread scaling)", r["key"], f"{m}/{rt}/{p}/t2")
    return out


# ---------------------------------------------------------------------------------------- part b


def _e2e_runtime(cfg: BenchConfig) -> str:
    """The first runtime asked for, or "auto": the fastest installed runner, picked at load time."""
    return cfg.runtimes[0] if cfg.runtimes else "auto"


def bench_end_to_end(
    model_name: str, cfg: BenchConfig, frames: Sequence[npt.NDArray[np.uint8]], log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Frame to detections for big frames, stage by stage, through `Model.prepare/infer/decode`."""
    rss_before = current_rss_mib()
    model = load_model(model_name, runtime=_e2e_runtime(cfg), threads=max(cfg.threads))
    rss_after = current_rss_mib()
    loaded = round(rss_after - rss_before, 1) if rss_before is not None and rss_after is not None else None
    out = []
    try:
        for size in cfg.e2e_sizes:
            w, h = FRAME_SIZES[size]
            stages: dict[str, list[float]] = {"isp": [], "infer": [], "decode": [], "total": []}
            detections = []
            big = [np.asarray(cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC), np.uint8) for f in frames[:4]]
            model(big[0])  # warm-up
            for i in range(cfg.e2e_frames):
                pixels = big[i % len(big)]
                t0 = time.perf_counter()
                inputs = model.prepare(pixels)
                t1 = time.perf_counter()
                raw = model.infer(inputs)
                t2 = time.perf_counter()
                det = model.decode(raw, inputs)
                t3 = time.perf_counter()
                for name, dt in (("isp", t1 - t0), ("infer", t2 - t1), ("decode", t3 - t2), ("total", t3 - t0)):
                    stages[name].append(dt * 1e3)
                detections.append(len(det))
            total = np.asarray(stages["total"])
            out.append(
                {
                    "model": model_name,
                    "runtime": model.runner.name,
                    "threads": max(cfg.threads),
                    "frame": f"{w}x{h}",
                    "size": size,
                    "tensors_per_frame": len(model.prepare(big[0])),
                    "frames": cfg.e2e_frames,
                    "stages": {k: latency_stats(v) for k, v in stages.items()},
                    "over_deadline": {f"{d}ms": round(float((total > d).mean()), 4) for d in DEADLINES_MS},
                    "detections_median": float(np.median(detections)),
                    "rss_growth_on_load_mib": loaded,
                }
            )
            del big
            log(f"b. {model_name} {size}: done")
    finally:
        model.close()
    return out


# ---------------------------------------------------------------------------------------- part f


class _ListSink:
    def __init__(self) -> None:
        self.records: list[msgspec.Struct] = []

    def write(self, record: msgspec.Struct) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass


def bench_data_reduction(cfg: BenchConfig) -> dict[str, Any] | None:
    """Metadata bytes for the person model over vtest.avi against raw and compressed video."""
    path = media_dir() / "vtest.avi"
    if not path.is_file() or cfg.ledger_frames == 0:
        return None
    from ivs.sensor import Sensor
    from ivs.sources.video import VideoSource

    model = load_model(LEDGER_MODEL, runtime=_e2e_runtime(cfg), threads=max(cfg.threads))
    source = VideoSource(str(path))
    expected = source.expected_frames
    sink = _ListSink()
    sensor = Sensor(source, model, [sink], fps=0, max_frames=cfg.ledger_frames)
    t0 = time.perf_counter()
    try:
        stats = sensor.run()
    finally:
        model.close()
    seconds = time.perf_counter() - t0
    frames = stats.frames_processed
    metadata = sum(len(encode(r)) for r in sink.records)
    file_bytes = path.stat().st_size
    whole_file = cfg.ledger_frames is None or (expected is not None and frames >= expected)
    # The file's bytes for the frames processed: all of it, or its share when only part was read.
    file_share = file_bytes if whole_file or not expected else round(file_bytes * frames / expected)
    return {
        "video": path.name,
        "model": LEDGER_MODEL,
        "frames": frames,
        "frames_in_file": expected,
        "frame": f"{source.width}x{source.height}",
        "seconds": round(seconds, 2),
        "metadata_bytes": metadata,
        "metadata_bytes_per_frame": round(metadata / max(frames, 1), 1),
        "raw_bytes": sensor.raw_bytes,
        "compressed_bytes_read": source.compressed_bytes,
        "file_bytes": file_bytes,
        "file_bytes_for_frames": file_share,
        "raw_over_metadata": round(sensor.raw_bytes / max(metadata, 1), 1),
        "compressed_over_metadata": round(source.compressed_bytes / max(metadata, 1), 2),
        "file_over_metadata": round(file_share / max(metadata, 1), 2),
        "records": "JSON FrameRecord per frame as the sensor sends it (ivs.records.encode), no ledger events",
    }


# ---------------------------------------------------------------------------------------- parts d, e


def bench_stop_part(
    cfg: BenchConfig, log: Callable[[str], None], skipped: list[str], synchronous: Literal["full", "normal"] = "full"
) -> dict[str, Any] | None:
    """Part d, or None with the reason in `skipped` (no Mosquitto, no vtest.avi, or stops=0).

    synchronous: the outbox's durability; "full" is the sensor's default."""
    from ivs.bench.live import bench_safety_stop
    from ivs.localnet import mosquitto_path

    video = media_dir() / "vtest.avi"
    why = None
    if cfg.stops <= 0:
        why = "d: safety stop latency not asked for (stops=0)"
    elif mosquitto_path() is None:
        why = "d: mosquitto not found (scripts/install-system-deps.sh installs it)"
    elif not video.is_file():
        why = "d: vtest.avi not found (scripts/fetch-media.sh fetches it): the walker is cut from it"
    if why is not None:
        if synchronous == "full":  # said once
            skipped.append(why)
        return None
    result = bench_safety_stop(cfg.stops, video, _e2e_runtime(cfg), max(cfg.threads), synchronous)
    log(f"d. safety stop ({synchronous}): {result['stops_received']}/{result['stops_sent']} stops received")
    return result


def bench_delivery_part(cfg: BenchConfig, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Part d's delivery alone (no model), per outbox durability: where the stop's time goes."""
    from ivs.bench.live import bench_delivery

    rows = [bench_delivery(cfg.stops * 15, sync) for sync in ("full", "normal")]
    log("d. delivery alone: " + ", ".join(f"{r['synchronous']} p99 {r.get('p99_ms')} ms" for r in rows))
    return rows


def bench_ingest_part(cfg: BenchConfig, log: Callable[[str], None], skipped: list[str]) -> dict[str, Any] | None:
    """Part e, or None with the reason in `skipped`; a row that could not run (no PostgreSQL
    server here, no Mosquitto) says why in its `absent` and in `skipped`."""
    if cfg.ingest_events <= 0:
        skipped.append("e: hub ingest not asked for (ingest_events=0)")
        return None
    from ivs.bench.ingest import bench_ingest

    result = bench_ingest(cfg.ingest_events)
    for r in result["rows"]:
        if r.get("absent"):
            skipped.append(f"e: {r['path']} into {r['database']}: {r['absent']}")
    measured = [r for r in result["rows"] if not r.get("absent")]
    log("e. hub ingest: " + ", ".join(f"{r['path']} {r['events_per_s']} events/s" for r in measured))
    return result


# ---------------------------------------------------------------------------------------- parts b, c, g


def naive_model_bytes(model: str) -> tuple[bytes, str]:
    """The fp32 ONNX model for the naive pipeline: the build-time file, else the package's int8
    model dequantised back to fp32 (same graph, same cost to OpenCV DNN)."""
    path = fp32_path(model)
    if path is not None:
        return path.read_bytes(), f"zoo/build/{model}/model.fp32.onnx"
    from ivs.bench.naive import dequantized_onnx

    package = read_package(resolve(model))
    if package.manifest.model.format != "onnx":
        raise ValueError(f"{model}: the package model is {package.manifest.model.format}, not ONNX")
    return dequantized_onnx(package.model_bytes), "int8 package dequantised to fp32 (no zoo/build here)"


def bench_pipeline_parts(
    cfg: BenchConfig,
    frames: Sequence[npt.NDArray[np.uint8]],
    frames_from: str,
    log: Callable[[str], None],
    skipped: list[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Part b sustained and part c, for every model of part b."""
    from ivs.bench.pipeline import bench_pipeline, make_feeds

    if cfg.sustain_s <= 0 and cfg.naive_frames <= 0:
        skipped.append("b (sustained) and c: not asked for (sustain_s=0, naive_frames=0)")
        return [], []
    video = media_dir() / "vtest.avi"
    if not video.is_file():
        skipped.append("b/c: vtest.avi not found (scripts/fetch-media.sh fetches it): no sample-video rows")
    sizes = {k: FRAME_SIZES[k] for k in cfg.e2e_sizes}
    feeds = make_feeds(frames, frames_from, video if video.is_file() else None, sizes)
    sustained: list[dict[str, Any]] = []
    versus: list[dict[str, Any]] = []
    for name in cfg.e2e_models:
        naive: tuple[bytes, str] | None = None
        if cfg.naive_frames > 0:
            try:
                naive = naive_model_bytes(name)
            except Exception as err:  # no fp32 model to be had: say so, keep the rest
                skipped.append(f"c: {name}: no fp32 model for the naive pipeline ({err})")
        s, v = bench_pipeline(
            name,
            feeds,
            runtime=_e2e_runtime(cfg),
            threads=max(cfg.threads),
            sustain_s=cfg.sustain_s,
            naive_fp32=naive,
            naive_frames=cfg.naive_frames,
            naive_blocks=cfg.naive_blocks,
            log=log,
        )
        sustained += s
        versus += v
    del feeds
    return sustained, versus


def bench_memory_part(cfg: BenchConfig, log: Callable[[str], None], skipped: list[str]) -> list[dict[str, Any]]:
    """Part g: peak RSS of a real sensor process and a real hub process."""
    from ivs.bench.memory import hub_peak_rss, sensor_peak_rss

    rows = []
    video = media_dir() / "vtest.avi"
    if cfg.rss_frames == 0:
        skipped.append("g: sensor process RSS not asked for (rss_frames=0)")
    elif not video.is_file():
        skipped.append("g: vtest.avi not found: no sensor process RSS")
    else:
        for runtime in cfg.rss_runtimes:
            rows.append(sensor_peak_rss(video.resolve(), cfg.rss_frames, runtime))
            log(f"g. ivs run ({runtime}): peak RSS {rows[-1]['peak_rss_mib']} MiB")
    if cfg.rss_events <= 0:
        skipped.append("g: hub process RSS not asked for (rss_events=0)")
    else:
        rows.append(hub_peak_rss(cfg.rss_events))
        log(f"g. ivs hub serve: peak RSS {rows[-1]['peak_rss_mib']} MiB")
    return rows


# ---------------------------------------------------------------------------------------- driver


def run_bench(
    quick: bool,
    out_json: Path | None,
    console: Console | None = None,
    *,
    config: BenchConfig | None = None,
) -> dict[str, Any]:
    """Run the benchmark, print tables on `console` (None: quiet), write `out_json`, return the results.

    quick: the short preset (two models, fewer runs and frames; about a minute on 2 cores);
    config: an explicit configuration instead of the preset (tests use a tiny one).
    """
    cfg = config or (BenchConfig.quick() if quick else BenchConfig.full())
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        if console is not None:
            console.log(msg)

    memory: dict[str, Any] = {
        "what": "ru_maxrss: the peak resident set of the whole bench process so far (Python, numpy, "
        "OpenCV, onnxruntime, OpenVINO and whatever runners and frames it held; part a holds every runner "
        "of one model at once), not the footprint of one model; see end_to_end[].rss_growth_on_load_mib",
        "after_imports_mib": peak_rss_mib(),
    }
    frames, frames_from = sample_frames(8)
    known = set(zoo_names())
    missing = [m for m in (*cfg.models, *cfg.e2e_models) if m not in known]
    if missing:
        raise ValueError(f"unknown zoo models {missing}: expected some of {sorted(known)}")

    latency: list[dict[str, Any]] = []
    notes = dict(NOTES)
    skipped: list[str] = []
    for i, name in enumerate(cfg.models):
        rows, why = bench_model_latency(name, cfg, frames[i % len(frames)], log)
        latency += rows
        skipped += why
    memory["after_latency_mib"] = peak_rss_mib()

    e2e: list[dict[str, Any]] = []
    for name in cfg.e2e_models:
        e2e += bench_end_to_end(name, cfg, frames, log)
    from ivs.bench.pipeline import bench_area_resize

    isp_resize = bench_area_resize(frames, max(cfg.e2e_frames, 10))
    memory["after_end_to_end_mib"] = peak_rss_mib()
    sustained, versus = bench_pipeline_parts(cfg, frames, frames_from, log, skipped)

    safety = bench_stop_part(cfg, log, skipped)
    safety_normal = bench_stop_part(cfg, log, skipped, "normal") if "normal" in cfg.stop_outboxes else None
    delivery = bench_delivery_part(cfg, log) if safety is not None else []
    ingest = bench_ingest_part(cfg, log, skipped)

    reduction = bench_data_reduction(cfg)
    if reduction is None:
        skipped.append("f: vtest.avi not found (scripts/fetch-media.sh fetches it) or skipped")
    memory["after_data_reduction_mib"] = peak_rss_mib()
    memory["current_rss_mib"] = current_rss_mib()
    memory["processes"] = bench_memory_part(cfg, log, skipped)

    result: dict[str, Any] = {
        "schema": "ivs.bench/1",
        "quick": quick,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "config": {
            "models": list(cfg.models),
            "iterations": cfg.iterations,
            "warmup": cfg.warmup,
            "blocks": cfg.blocks,
            "threads": list(cfg.threads),
            "e2e_frames": cfg.e2e_frames,
            "ledger_frames": cfg.ledger_frames,
            "stops": cfg.stops,
            "ingest_events": cfg.ingest_events,
            "sustain_s": cfg.sustain_s,
            "naive_frames": cfg.naive_frames,
            "naive_blocks": cfg.naive_blocks,
            "rss_frames": cfg.rss_frames,
            "rss_events": cfg.rss_events,
            "rss_runtimes": list(cfg.rss_runtimes),
        },
        "frames_from": frames_from,
        "anchors_ms": {
            "imx500_mobilenet_v1": ANCHORS_MS["imx500"],
            "coral_mobilenet_v1_224": ANCHORS_MS["coral"],
        },
        "latency": latency,
        "ratios": latency_ratios(latency),
        "end_to_end": e2e,
        "isp_resize": isp_resize,
        "sustained": sustained,
        "versus_naive": versus,
        "safety_stop": safety,
        "safety_stop_normal": safety_normal,
        "safety_delivery": delivery,
        "hub_ingest": ingest,
        "data_reduction": reduction,
        "memory": memory,
        "not_measured": [
            "g: RSS over a long run is the soak's (python -m ivs.bench.soak --minutes 30; docs/reliability.md)",
        ],
        "notes": notes,
        "skipped": skipped,
        "seconds": 0.0,
    }
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(result, indent=2) + "\n")
    if console is not None:
        print_report(result, console)
    return result


def _fmt(v: float) -> str:
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def print_report(result: dict[str, Any], console: Console) -> None:
    m = result["machine"]
    console.print(f"[bold]ivs bench[/] on {m['cpu']} ({m['cpus_usable']} usable CPUs); {result['seconds']} s")
    t = Table(title="a. model latency: runner.run on a prepared tensor (ms)")
    for col in ("model", "runtime", "prec", "thr", "median", "p99", "IQR", "min-max", "n", "vs IMX500", "vs Coral"):
        t.add_column(col, justify="left" if col in ("model", "runtime", "prec") else "right")
    for r in result["latency"]:
        anchor = r.get("vs_anchor", {})
        t.add_row(
            r["model"],
            r["runtime"],
            r["precision"],
            str(r["threads"]),
            _fmt(r["median_ms"]),
            _fmt(r["p99_ms"]),
            _fmt(r["iqr_ms"]),
            f"{_fmt(r['min_ms'])}-{_fmt(r['max_ms'])}",
            str(r["n"]),
            f"{anchor['imx500']:.2f}x" if anchor else "",
            f"{anchor['coral']:.2f}x" if anchor else "",
        )
    console.print(t)
    if result["ratios"]:
        rt = Table(title="ratios of medians, same run")
        for col in ("ratio", "numerator", "denominator", "value"):
            rt.add_column(col, justify="right" if col == "value" else "left")
        for r in result["ratios"]:
            rt.add_row(r["kind"], r["numerator"], r["denominator"], f"{r['value']:.2f}")
        console.print(rt)
    if result["end_to_end"]:
        et = Table(title="b. frame to detections (ms, median / p99)")
        for col in ("model", "runtime", "frame", "tensors", "isp", "infer", "decode", "total", ">33.3", ">16.7"):
            et.add_column(col, justify="left" if col in ("model", "runtime", "frame") else "right")
        for r in result["end_to_end"]:
            s = r["stages"]
            et.add_row(
                r["model"],
                r["runtime"],
                r["frame"],
                str(r["tensors_per_frame"]),
                *(f"{_fmt(s[k]['median_ms'])} / {_fmt(s[k]['p99_ms'])}" for k in ("isp", "infer", "decode", "total")),
                f"{r['over_deadline']['33.3ms']:.0%}",
                f"{r['over_deadline']['16.7ms']:.0%}",
            )
        console.print(et)
    rz = result.get("isp_resize")
    if rz is not None:
        console.print(
            f"[bold]b. ISP resize[/] ({rz['crop']}, ms p50 / p99): "
            + "; ".join(f"{k} {_fmt(v['p50_ms'])} / {_fmt(v['p99_ms'])}" for k, v in rz["ms"].items())
            + f"; ivs vs one INTER_AREA: mean {rz['vs_single_area']['mean_abs']} grey levels, "
            f"p99 {rz['vs_single_area']['p99_abs']}"
        )
    _print_sustained(result.get("sustained") or [], console)
    _print_naive(result.get("versus_naive") or [], console)
    for safety in (result.get("safety_stop"), result.get("safety_stop_normal")):
        if safety is None:
            continue
        lat = safety["latency"]
        line = (
            f"[bold]d. safety stop[/] ({safety['model']} tiles 1x1, {safety['runtime']}, outbox "
            f"synchronous={safety.get('outbox_synchronous', 'full')}): "
            f"{safety['stops_received']}/{safety['stops_sent']} stops received"
        )
        if lat is not None:
            line += (
                f", capture to subscriber p50 {_fmt(lat['p50_ms'])} ms, p99 {_fmt(lat['p99_ms'])} ms, "
                f"max {_fmt(lat['max_ms'])} ms (target {safety['target_ms']:.0f} ms)"
            )
        console.print(line)
        for stage, st in safety.get("breakdown", {}).items():
            console.print(f"   {stage}: p50 {_fmt(st['p50_ms'])} / p99 {_fmt(st['p99_ms'])} ms")
    for r in result.get("safety_delivery") or []:
        if r["received"]:
            console.print(
                f"[bold]d. delivery alone[/] (MqttSink.write to subscriber, outbox synchronous={r['synchronous']}): "
                f"{r['received']}/{r['pairs']} stops, p50 {_fmt(r['p50_ms'])} ms, p99 {_fmt(r['p99_ms'])} ms"
            )
    ingest = result.get("hub_ingest")
    if ingest is not None:
        for r in ingest["rows"]:
            if r.get("absent"):
                console.print(f"[bold]e. hub ingest[/] {r['path']} into {r['database']}: absent: {r['absent']}")
                continue
            console.print(
                f"[bold]e. hub ingest[/] {r['path']} into {r['database']}: {r['events']:,} events in batches of "
                f"{r['batch']:,}, {r['events_per_s']:,} events/s (target {ingest['target_events_per_s']:,.0f})"
            )
    red = result["data_reduction"]
    if red is not None:
        console.print(
            f"[bold]f. data reduction[/] ({red['model']} on {red['video']}, {red['frames']} frames "
            f"{red['frame']}): metadata {red['metadata_bytes']:,} B ({red['metadata_bytes_per_frame']} B/frame); "
            f"raw {red['raw_bytes']:,} B = {red['raw_over_metadata']:,}x; compressed read "
            f"{red['compressed_bytes_read']:,} B = {red['compressed_over_metadata']}x; file share "
            f"{red['file_bytes_for_frames']:,} B = {red['file_over_metadata']}x"
        )
    mem = result["memory"]
    growth = {r["model"]: r["rss_growth_on_load_mib"] for r in result["end_to_end"]}
    if growth:
        console.print(
            "[bold]g. memory[/]: resident set growth while loading a model for part b: "
            + ", ".join(f"{k} {v} MiB" for k, v in growth.items())
        )
    console.print(
        f"[bold]g. memory[/]: peak RSS of the bench process {mem['after_imports_mib']} MiB after imports, "
        f"{mem['after_latency_mib']} MiB after part a, {mem['after_end_to_end_mib']} MiB after part b, "
        f"{mem['after_data_reduction_mib']} MiB at the end (whole process, not one model)"
    )
    for p in mem.get("processes", []):
        idle = f" ({p['peak_rss_idle_mib']} MiB idle after start)" if "peak_rss_idle_mib" in p else ""
        console.print(f"[bold]g. memory[/]: {p['process']} peak RSS {p['peak_rss_mib']} MiB{idle}: {p['what']}")
    for key in ("mobilenet-v1", "litert", "fp32", "timing"):
        console.print(f"[dim]note ({key}): {result['notes'][key]}[/]")
    for s in result["skipped"]:
        console.print(f"[dim]skipped: {s}[/]")
    console.print("[dim]not measured yet: " + "; ".join(result["not_measured"]) + "[/]")


def _sustained_cells(r: dict[str, Any]) -> list[str]:
    s = r["stages"]
    return [
        r["model"],
        r["feed"],
        r["frame"],
        f"{r['fps_offered']:.0f}",
        f"{r['fps_sustained']:.1f}",
        *(f"{_fmt(s[k]['p50_ms'])} / {_fmt(s[k]['p99_ms'])}" for k in ("queue", "isp", "infer", "decode")),
        f"{_fmt(r['to_metadata']['p50_ms'])} / {_fmt(r['to_metadata']['p99_ms'])}",
        f"{r['dropped']}",
        f"{r['late']}",
        f"{r['deadline_misses']} / {r['frames_offered']}",
    ]


_SUSTAINED_COLS = (
    "model", "feed", "frame", "fps", "sustained", "queue", "isp", "infer", "decode", "to metadata",
    "dropped", "late", "misses / frames",
)  # fmt: skip


def _naive_cells(r: dict[str, Any]) -> list[str]:
    return [
        r["model"],
        r["feed"],
        r["frame"],
        r.get("ivs_tiles", ""),
        f"{_fmt(r['ivs']['mean_ms'])} ({_fmt(r['ivs']['p50_ms'])} / {_fmt(r['ivs']['p99_ms'])})",
        f"{_fmt(r['naive']['mean_ms'])} ({_fmt(r['naive']['p50_ms'])} / {_fmt(r['naive']['p99_ms'])})",
        f"{r['ivs_over_naive']:.3f}",
        f"{r['speedup']:.1f}×",
    ]


_NAIVE_COLS = ("model", "feed", "frame", "ivs tiles", "ivs ms/frame", "naive ms/frame", "ivs / naive", "speed-up")


def _print_sustained(rows: list[dict[str, Any]], console: Console) -> None:
    if not rows:
        return
    t = Table(title="b. the Sensor paced at 30/60 fps, sustained (ms p50 / p99; misses = late + dropped)")
    for col in _SUSTAINED_COLS:
        t.add_column(col, justify="left" if col in ("model", "feed", "frame") else "right")
    for r in rows:
        t.add_row(*_sustained_cells(r))
    console.print(t)


def _print_naive(rows: list[dict[str, Any]], console: Console) -> None:
    if not rows:
        return
    t = Table(title="c. ivs against the naive pipeline, same frames (ms per frame: mean (p50 / p99))")
    for col in _NAIVE_COLS:
        t.add_column(col, justify="left" if col in ("model", "feed", "frame", "ivs tiles") else "right")
    for r in rows:
        t.add_row(*_naive_cells(r))
    console.print(t)
    models = sorted({f"{r['model']}: {r['naive_model']}" for r in rows})
    console.print(f"[dim]naive fp32 models: {', '.join(models)}[/]")


def _markdown_rows(cols: Sequence[str], rows: list[list[str]], left: int = 3) -> list[str]:
    return [
        "",
        "| " + " | ".join(cols) + " |",
        "| " + " | ".join("---" if i < left else "---:" for i in range(len(cols))) + " |",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _markdown_memory(mem: dict[str, Any]) -> list[str]:
    procs = mem.get("processes") or []
    if not procs:
        return []
    rows = [
        [
            p["process"],
            p["what"],
            f"{p.get('peak_rss_idle_mib') or ''}",
            f"{p.get('rss_running_mib') or ''}",
            f"{p['peak_rss_mib']}",
        ]
        for p in procs
    ]
    cols = ("process", "run", "peak RSS idle MiB", "RSS running MiB", "peak RSS MiB")
    return _markdown_rows(cols, rows, left=2)


def markdown_report(result: dict[str, Any]) -> str:
    """The results as Markdown tables (what docs/benchmarks.md shows)."""
    lines = [
        "| model | runtime | precision | threads | median ms | p99 ms | IQR ms | min–max ms | n "
        "| ÷ IMX500 3.1 | ÷ Coral 2.4 |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["latency"]:
        a = r.get("vs_anchor")
        anchors = f"{a['imx500']:.2f}× | {a['coral']:.2f}×" if a else " | "
        lines.append(
            f"| {r['model']} | {r['runtime']} | {r['precision']} | {r['threads']} | {_fmt(r['median_ms'])} | "
            f"{_fmt(r['p99_ms'])} | {_fmt(r['iqr_ms'])} | {_fmt(r['min_ms'])}–{_fmt(r['max_ms'])} | {r['n']} | "
            f"{anchors} |"
        )
    lines += ["", "| ratio of medians | numerator | denominator | value |", "| --- | --- | --- | ---: |"]
    lines += [f"| {r['kind']} | {r['numerator']} | {r['denominator']} | {r['value']:.2f} |" for r in result["ratios"]]
    lines += [
        "",
        "| model | runtime | frame | tensors | ISP ms | infer ms | decode ms | total ms | > 33.3 ms | > 16.7 ms |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["end_to_end"]:
        s = r["stages"]
        cells = " | ".join(
            f"{_fmt(s[k]['median_ms'])} / {_fmt(s[k]['p99_ms'])}" for k in ("isp", "infer", "decode", "total")
        )
        lines.append(
            f"| {r['model']} | {r['runtime']} | {r['frame']} | {r['tensors_per_frame']} | {cells} | "
            f"{r['over_deadline']['33.3ms']:.0%} | {r['over_deadline']['16.7ms']:.0%} |"
        )
    rz = result.get("isp_resize")
    if rz is not None:
        resize_rows = [[k, _fmt(v["p50_ms"]), _fmt(v["p99_ms"])] for k, v in rz["ms"].items()]
        lines += _markdown_rows((f"resize: {rz['crop']}", "p50 ms", "p99 ms"), resize_rows, left=1)
    if result.get("sustained"):
        lines += _markdown_rows(_SUSTAINED_COLS, [_sustained_cells(r) for r in result["sustained"]])
    if result.get("versus_naive"):
        lines += _markdown_rows(_NAIVE_COLS, [_naive_cells(r) for r in result["versus_naive"]], left=4)
    lines += _markdown_safety(result.get("safety_stop"), result.get("safety_stop_normal"))
    delivered = [r for r in result.get("safety_delivery") or [] if r["received"]]
    if delivered:
        rows = [
            [r["synchronous"], f"{r['received']} / {r['pairs']}", *(_fmt(r[k]) for k in ("p50_ms", "p99_ms", "max_ms"))]
            for r in delivered
        ]
        lines += _markdown_rows(("delivery alone: outbox", "stops", "p50 ms", "p99 ms", "max ms"), rows, left=1)
    lines += _markdown_ingest(result.get("hub_ingest"))
    lines += _markdown_memory(result["memory"])
    return "\n".join(lines) + "\n"


def _markdown_safety(*runs: dict[str, Any] | None) -> list[str]:
    """One row per outbox durability, then the stage breakdown of each, side by side."""
    done = [r for r in runs if r is not None and r["latency"] is not None]
    if not done:
        return []
    lines = [
        "",
        "| model | runtime | outbox | stops sent / received | p50 ms | p99 ms | max ms | target ms | within target |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for safety in done:
        lat = safety["latency"]
        lines.append(
            f"| {safety['model']} (tiles 1x1) | {safety['runtime']} | {safety.get('outbox_synchronous', 'full')} | "
            f"{safety['stops_sent']} / {safety['stops_received']} | {_fmt(lat['p50_ms'])} | {_fmt(lat['p99_ms'])} | "
            f"{_fmt(lat['max_ms'])} | {safety['target_ms']:.0f} | {safety['within_target']:.0%} |"
        )
    with_breakdown = [r for r in done if r.get("breakdown")]
    if with_breakdown:
        head = " | ".join(f"{r.get('outbox_synchronous', 'full')}: p50 / p99 / max ms" for r in with_breakdown)
        lines += ["", f"| stop frame: stage | {head} |", "| --- |" + " ---: |" * len(with_breakdown)]
        for k in with_breakdown[0]["breakdown"]:
            cells = " | ".join(
                f"{_fmt(v['p50_ms'])} / {_fmt(v['p99_ms'])} / {_fmt(v['max_ms'])}"
                for v in (r["breakdown"][k] for r in with_breakdown)
            )
            lines.append(f"| {k} | {cells} |")
    return lines


def _markdown_ingest(ingest: dict[str, Any] | None) -> list[str]:
    if ingest is None:
        return []
    target = ingest["target_events_per_s"]
    lines = [
        "",
        f"| path | database | events | batch | seconds | events/s | ÷ target {target:,.0f} |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in ingest["rows"]:
        if r.get("absent"):
            lines.append(f"| {r['path']} | {r['database']} | absent: {r['absent']} | | | | |")
            continue
        eps = r["events_per_s"] or 0
        lines.append(
            f"| {r['path']} | {r['database']} | {r['events']:,} | {r['batch']:,} | {r['seconds']} | "
            f"{eps:,} | {eps / target:.2f}× |"
        )
    return lines
