"""Parts b and c of `ivs bench`: frame to metadata through the real `Sensor`, sustained and paced,
and the same frames through the naive pipeline (`ivs.bench.naive`).

b. A source delivers raw frames at 30 or 60 fps like a camera (the sensor's capture thread
   paces it; a frame's capture time is when it is handed over) for a few seconds; the Sensor
   runs the model and sends a JSON frame record per frame to a sink. Reported: the rate it
   sustained, each stage's p50/p99 from the sensor's own timings, the frames it dropped, and
   the deadline misses: frames whose capture-to-metadata time passed one frame period, plus
   the dropped ones (each a frame that never got metadata).
c. Unpaced, the same frames through ivs (the Sensor with `fps=0`, every frame processed) and
   through the naive pipeline, taking turns in blocks so that the machine's load hits both
   alike; ivs / naive is the ratio of their mean time per frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from ivs.bench.common import spread
from ivs.bench.results import FrameTimes, IspResize, NaiveRow, ResizeDiff, SensorRun, SustainedRow
from ivs.detections import Detections
from ivs.frame import Frame
from ivs.model import Model
from ivs.records import FrameRecord
from ivs.sources.base import Source

RATES = (30.0, 60.0)


class LoopSource(Source):
    """Pre-made raw frames, handed over in a loop: a camera with no decode cost.

    `t_capture_ns` is stamped when the sensor's capture thread takes the frame (on its pacing
    schedule), as a camera driver stamps a frame when it is ready.
    """

    live = False

    def __init__(self, frames: Sequence[npt.NDArray[np.uint8]], fps: float, count: int, source_id: str) -> None:
        if not frames:
            raise ValueError("LoopSource needs at least one frame")
        self._frames, self.fps, self.count, self.id = list(frames), fps, count, source_id

    def frames(self) -> Iterator[Frame]:
        for i in range(self.count):
            yield Frame(self._frames[i % len(self._frames)], i, time.monotonic_ns(), time.time(), self.id)

    def close(self) -> None:
        pass


class CountingSink:
    """Takes the sensor's records (the sensor encodes each one to JSON before it gets here)."""

    def __init__(self) -> None:
        self.messages = 0

    def write(self, record: msgspec.Struct) -> None:
        self.messages += 1

    def close(self) -> None:
        pass


@dataclass
class Feed:
    """Where frames come from for one row: pre-made frames, or a video file."""

    name: str
    frame: str
    """WxH."""
    pixels: list[npt.NDArray[np.uint8]]
    video: Path | None = None

    def source(self, fps: float, count: int) -> Any:
        if self.video is not None:
            from ivs.sources.video import VideoSource

            return VideoSource(str(self.video), loop=True)
        return LoopSource(self.pixels, fps, count, self.name)


def run_sensor(model: Model, feed: Feed, fps: float, frames: int) -> tuple[SensorRun, list[float], list[float]]:
    """One Sensor run over `frames` frames of `feed` at `fps` (0: unpaced, every frame).

    Returns the sensor's stats, each record's capture-to-metadata time (ms), and the time each
    record reached its sink (perf_counter seconds)."""
    from ivs.sensor import STAGES, Sensor

    latencies: list[float] = []
    done_at: list[float] = []

    def on_record(record: FrameRecord, det: Detections) -> None:
        # The record has been encoded and written to the sink: metadata exists now.
        now = time.monotonic_ns()
        done_at.append(time.perf_counter())
        latencies.append((now - record.t_capture_ns) / 1e6 + record.timings_ms.read)

    sink = CountingSink()
    sensor = Sensor(
        feed.source(fps or 30.0, frames),
        model,
        [sink],
        sensor_id="bench",
        fps=fps,
        max_frames=frames,
        emit_frames=True,
        on_record=on_record,
    )
    t0 = time.perf_counter()
    stats = sensor.run()
    seconds = time.perf_counter() - t0
    stages = {s: spread(list(stats.timings[s])) for s in STAGES if s not in ("classify",)}
    out = SensorRun(
        frames_offered=stats.frames_read,
        frames_processed=stats.frames_processed,
        dropped=stats.dropped,
        seconds=round(seconds, 3),
        stages=stages,
        records=sink.messages,
    )
    return out, latencies, done_at


def bench_sustained(model: Model, feed: Feed, seconds: float, rates: Sequence[float] = RATES) -> list[SustainedRow]:
    """Part b for one model and one feed: a paced run per rate."""
    rows = []
    for fps in rates:
        frames = max(round(fps * seconds), 10)
        run, latencies, _ = run_sensor(model, feed, fps, frames)
        period_ms = 1e3 / fps
        late = int(sum(v > period_ms for v in latencies))
        offered = run.frames_offered
        misses = late + run.dropped
        rows.append(
            SustainedRow(
                **msgspec.structs.asdict(run),
                model=model.manifest.name,
                runtime=model.runner.name,
                tensors_per_frame=len(model.isp.tile_rects(*_wh(feed.frame))),
                feed=feed.name,
                frame=feed.frame,
                fps_offered=fps,
                # Frames that got metadata over the time the source offered them.
                fps_sustained=round(run.frames_processed / max(offered / fps, 1e-9), 2),
                deadline_ms=round(period_ms, 2),
                to_metadata=spread(latencies),
                late=late,
                deadline_misses=misses,
                miss_fraction=round(misses / max(offered, 1), 4),
            )
        )
    return rows


def _wh(frame: str) -> tuple[int, int]:
    w, h = frame.split("x")
    return int(w), int(h)


def bench_versus_naive(
    model: Model,
    naive: Callable[[npt.NDArray[np.uint8], int], str],
    feed: Feed,
    frames_per_block: int,
    blocks: int,
) -> NaiveRow:
    """Part c for one model and one feed: per-frame time of ivs and of the naive pipeline.

    ivs: the Sensor unpaced over the feed (capture thread, ISP, inference, decode, JSON record
    to a sink); its time per frame is the gap between consecutive records. naive: a plain loop
    over the same frames."""
    pixels = feed.pixels
    ivs_ms: list[float] = []
    naive_ms: list[float] = []
    ivs_total = naive_total = 0.0
    ivs_frames = naive_frames = 0
    naive(pixels[0], 0)  # warm-up (OpenCV DNN allocates on its first forward)
    for _ in range(blocks):
        # Pre-made frames for both, whatever the feed (no video decode in either).
        _, _, done_at = run_sensor(model, Feed(feed.name, feed.frame, pixels), 0, frames_per_block + 1)
        # The first record also carries the thread start; time the ones after it.
        gaps = np.diff(np.asarray(done_at)) * 1e3
        ivs_ms += gaps.tolist()
        ivs_total += float(done_at[-1] - done_at[0])
        ivs_frames += len(gaps)
        t0 = time.perf_counter()
        for i in range(frames_per_block):
            t = time.perf_counter()
            naive(pixels[i % len(pixels)], i)
            naive_ms.append((time.perf_counter() - t) * 1e3)
        naive_total += time.perf_counter() - t0
        naive_frames += frames_per_block
    ivs_mean = ivs_total / max(ivs_frames, 1) * 1e3
    naive_mean = naive_total / max(naive_frames, 1) * 1e3
    return NaiveRow(
        model=model.manifest.name,
        runtime=model.runner.name,
        feed=feed.name,
        frame=feed.frame,
        ivs=FrameTimes(mean_ms=round(ivs_mean, 3), **msgspec.structs.asdict(spread(ivs_ms)), n=ivs_frames),
        naive=FrameTimes(mean_ms=round(naive_mean, 3), **msgspec.structs.asdict(spread(naive_ms)), n=naive_frames),
        ivs_over_naive=round(ivs_mean / naive_mean, 3) if naive_mean else None,
        speedup=round(naive_mean / ivs_mean, 2) if ivs_mean else None,
    )


def make_feeds(
    frames: Sequence[npt.NDArray[np.uint8]], frames_from: str, video: Path | None, sizes: dict[str, tuple[int, int]]
) -> list[Feed]:
    """Raw frames at each size (real frames scaled up: real people, a 4K frame's pixel count, but
    not a 4K scene's detail), and the sample video itself (decoded by the sensor's capture thread
    in part b) where it is here."""
    import cv2

    feeds = []
    for name, (w, h) in sizes.items():
        big = [np.asarray(cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC), np.uint8) for f in frames[:4]]
        feeds.append(Feed(name, f"{w}x{h}", big))
    if video is not None:
        h0, w0 = frames[0].shape[:2]
        feeds.append(Feed(video.name, f"{w0}x{h0}", list(frames[:8]), video))
    return feeds


def bench_pipeline(
    model_name: str,
    feeds: Sequence[Feed],
    *,
    runtime: str,
    threads: int,
    sustain_s: float,
    naive_fp32: tuple[bytes, str] | None,
    naive_frames: int,
    naive_blocks: int,
    log: Callable[[str], None],
) -> tuple[list[SustainedRow], list[NaiveRow]]:
    """Parts b (sustained, paced) and c (against the naive pipeline) for one model."""
    from ivs.bench.naive import NaivePipeline
    from ivs.model import load_model

    model = load_model(model_name, runtime=runtime, threads=threads)
    sustained: list[SustainedRow] = []
    versus: list[NaiveRow] = []
    try:
        model(feeds[0].pixels[0])  # warm-up
        if sustain_s > 0:
            for feed in feeds:
                sustained += bench_sustained(model, feed, sustain_s)
                log(f"b. {model_name} {feed.name}: sustained at {', '.join(f'{r:.0f}' for r in RATES)} fps")
        if naive_fp32 is not None and naive_frames > 0:
            naive = NaivePipeline(model, *naive_fp32)
            # A tiled model does more work per frame than the naive single pass: time it as
            # shipped, and in one pass over the whole frame too (the same work as the naive one).
            variants = [(model, "as shipped")]
            if model.isp.tiles != (1, 1):
                variants.append((load_model(model_name, runtime=runtime, threads=threads, tiles=(1, 1)), "one pass"))
            try:
                for feed in feeds:
                    for m, how in variants:
                        row = bench_versus_naive(m, naive, feed, naive_frames, naive_blocks)
                        row.naive_model = naive_fp32[1]
                        row.ivs_tiles = f"{m.isp.tiles[0]}x{m.isp.tiles[1]} ({how})"
                        versus.append(row)
                        log(f"c. {model_name} {feed.name} {how}: ivs {row.speedup}x faster than the naive one")
            finally:
                for m, _ in variants[1:]:
                    m.close()
    finally:
        model.close()
    return sustained, versus


def bench_area_resize(frames: Sequence[npt.NDArray[np.uint8]], runs: int) -> IspResize:
    """The ISP's anti-aliased shrink of a 4K centre crop to 224x224 (MobileNet V1's input) against
    one `cv2.resize(INTER_AREA)` and against `INTER_LINEAR` (fast, aliased), taking turns on the
    same frames; and how far the ISP's output is from the single INTER_AREA's (grey levels)."""
    import cv2

    from ivs.isp import _resize

    big = [np.asarray(cv2.resize(f, (3840, 2160), interpolation=cv2.INTER_CUBIC), np.uint8) for f in frames[:2]]
    crops = [b[:, 840:3000] for b in big]
    ways: dict[str, Callable[[npt.NDArray[np.uint8]], Any]] = {
        "ivs (2x2 averages, then INTER_AREA)": lambda c: _resize(c, 224, 224, "area"),
        "cv2.resize INTER_AREA": lambda c: cv2.resize(c, (224, 224), interpolation=cv2.INTER_AREA),
        "cv2.resize INTER_LINEAR (aliased)": lambda c: cv2.resize(c, (224, 224), interpolation=cv2.INTER_LINEAR),
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    for i in range(runs):
        crop = crops[i % len(crops)]
        for name, fn in ways.items():
            t = time.perf_counter()
            fn(crop)
            times[name].append((time.perf_counter() - t) * 1e3)
    diffs = [
        np.abs(_resize(c, 224, 224, "area").astype(np.int16) - cv2.resize(c, (224, 224), interpolation=cv2.INTER_AREA))
        for c in crops
    ]
    d = np.concatenate([x.ravel() for x in diffs])
    return IspResize(
        crop="2160x2160 centre of 3840x2160 -> 224x224",
        runs=runs,
        ms={k: spread(v) for k, v in times.items()},
        vs_single_area=ResizeDiff(
            mean_abs=round(float(d.mean()), 3), p99_abs=float(np.percentile(d, 99)), max_abs=int(d.max())
        ),
    )
