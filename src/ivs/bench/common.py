"""What every part of `ivs bench` shares: its configuration, the machine, the sample frames,
latency statistics, memory readings."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from ivs.bench.results import Machine, Spread, Stats
from ivs.package.zoo import names as zoo_names

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
    tracking: bool = False
    """Part h: the whole sample video through the tracker, IDF1 and ID switches on the hand labels."""
    streams_s: float = 0.0
    """Part i: seconds of each trial of N camera streams (node and separate processes); 0: skip."""
    counts_events: int = 0
    """Part j: count events of 100 sensors over 30 days, queried hourly and pruned; 0: skip."""
    plant_stops: int = 0
    """Part k: stops through the person detector to a Modbus and an OPC UA client; 0: skip."""

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
            rss_runtimes=("auto", "onnxruntime", "openvino"), tracking=True, streams_s=60.0,
            counts_events=2_000_000, plant_stops=50,
        )  # fmt: skip


def latency_stats(samples_ms: Sequence[float]) -> Stats:
    """Median, p99 and spread (IQR and min/max) of timings in milliseconds."""
    if not samples_ms:
        raise ValueError("no samples")
    a = np.asarray(samples_ms, dtype=np.float64)
    q1, med, q3, p99 = (float(v) for v in np.percentile(a, [25, 50, 75, 99]))
    return Stats(
        n=len(a),
        median_ms=round(med, 4),
        p99_ms=round(p99, 4),
        q1_ms=round(q1, 4),
        q3_ms=round(q3, 4),
        iqr_ms=round(q3 - q1, 4),
        min_ms=round(float(a.min()), 4),
        max_ms=round(float(a.max()), 4),
        mean_ms=round(float(a.mean()), 4),
    )


def spread(values: Sequence[float]) -> Spread:
    """p50, p99 and max of `values` (ms); zeros for none."""
    a = np.asarray(values, np.float64)
    if not len(a):
        return Spread(p50_ms=0.0, p99_ms=0.0, max_ms=0.0)
    p50, p99 = (float(v) for v in np.percentile(a, [50, 99]))
    return Spread(p50_ms=round(p50, 3), p99_ms=round(p99, 3), max_ms=round(float(a.max()), 3))


def git_commit() -> str:
    """The checkout's commit (short), with "+changes" when the tree differs from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           check=False)  # fmt: skip
    return (head.stdout.strip() or "unknown") + ("+changes" if dirty.stdout.strip() else "")


def machine_info() -> Machine:
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
    return Machine(
        cpu=cpu,
        cpus_usable=affinity,
        cpu_count=os.cpu_count(),
        platform=platform.platform(),
        python=sys.version.split()[0],
        versions=versions,
    )


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
