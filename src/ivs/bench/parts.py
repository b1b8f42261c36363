"""Parts b to j of `ivs bench` as the driver runs them: end to end, data reduction, the stop and
delivery latency, hub ingest, the naive pipeline and memory (each in its own module; here,
how the driver calls it and what it keeps)."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from typing import Literal

import cv2
import msgspec
import numpy as np
import numpy.typing as npt

from ivs.bench.common import (
    DEADLINES_MS,
    FRAME_SIZES,
    LEDGER_MODEL,
    ROOT,
    BenchConfig,
    current_rss_mib,
    fp32_path,
    latency_stats,
    media_dir,
)
from ivs.bench.results import (
    CountsRow,
    DataReduction,
    DeliveryRow,
    EndToEndRow,
    HubMemory,
    Ingest,
    NaiveRow,
    PlantRow,
    SafetyStop,
    SensorMemory,
    StreamsRow,
    SustainedRow,
    TrackIdentity,
)
from ivs.model import load_model
from ivs.package.reader import read_package
from ivs.package.zoo import resolve
from ivs.records import encode

# ---------------------------------------------------------------------------------------- part b


def _e2e_runtime(cfg: BenchConfig) -> str:
    """The first runtime asked for, or "auto": the fastest installed runner, picked at load time."""
    return cfg.runtimes[0] if cfg.runtimes else "auto"


def bench_end_to_end(
    model_name: str, cfg: BenchConfig, frames: Sequence[npt.NDArray[np.uint8]], log: Callable[[str], None]
) -> list[EndToEndRow]:
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
                EndToEndRow(
                    model=model_name,
                    runtime=model.runner.name,
                    threads=max(cfg.threads),
                    frame=f"{w}x{h}",
                    size=size,
                    tensors_per_frame=len(model.prepare(big[0])),
                    frames=cfg.e2e_frames,
                    stages={k: latency_stats(v) for k, v in stages.items()},
                    over_deadline={f"{d}ms": round(float((total > d).mean()), 4) for d in DEADLINES_MS},
                    detections_median=float(np.median(detections)),
                    rss_growth_on_load_mib=loaded,
                )
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


def bench_data_reduction(cfg: BenchConfig) -> DataReduction | None:
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
    return DataReduction(
        video=path.name,
        model=LEDGER_MODEL,
        frames=frames,
        frames_in_file=expected,
        frame=f"{source.width}x{source.height}",
        seconds=round(seconds, 2),
        metadata_bytes=metadata,
        metadata_bytes_per_frame=round(metadata / max(frames, 1), 1),
        raw_bytes=sensor.raw_bytes,
        compressed_bytes_read=source.compressed_bytes,
        file_bytes=file_bytes,
        file_bytes_for_frames=file_share,
        raw_over_metadata=round(sensor.raw_bytes / max(metadata, 1), 1),
        compressed_over_metadata=round(source.compressed_bytes / max(metadata, 1), 2),
        file_over_metadata=round(file_share / max(metadata, 1), 2),
        records="JSON FrameRecord per frame as the sensor sends it (ivs.records.encode), no ledger events",
    )


# ---------------------------------------------------------------------------------------- parts d, e


def bench_stop_part(
    cfg: BenchConfig, log: Callable[[str], None], skipped: list[str], synchronous: Literal["full", "normal"] = "full"
) -> SafetyStop | None:
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
    log(f"d. safety stop ({synchronous}): {result.stops_received}/{result.stops_sent} stops received")
    return result


def bench_delivery_part(cfg: BenchConfig, log: Callable[[str], None]) -> list[DeliveryRow]:
    """Part d's delivery alone (no model), per outbox durability: where the stop's time goes."""
    from ivs.bench.live import bench_delivery

    rows = [bench_delivery(cfg.stops * 15, sync) for sync in ("full", "normal")]
    log("d. delivery alone: " + ", ".join(f"{r.synchronous} p99 {r.p99_ms} ms" for r in rows))
    return rows


def bench_ingest_part(cfg: BenchConfig, log: Callable[[str], None], skipped: list[str]) -> Ingest | None:
    """Part e, or None with the reason in `skipped`; a row that could not run (no PostgreSQL
    server here, no Mosquitto) says why in its `absent` and in `skipped`."""
    if cfg.ingest_events <= 0:
        skipped.append("e: hub ingest not asked for (ingest_events=0)")
        return None
    from ivs.bench.ingest import bench_ingest

    result = bench_ingest(cfg.ingest_events)
    for r in result.rows:
        if r.absent:
            skipped.append(f"e: {r.path} into {r.database}: {r.absent}")
    measured = [r for r in result.rows if not r.absent]
    log("e. hub ingest: " + ", ".join(f"{r.path} {r.events_per_s} events/s" for r in measured))
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
) -> tuple[list[SustainedRow], list[NaiveRow]]:
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
    sustained: list[SustainedRow] = []
    versus: list[NaiveRow] = []
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


def bench_memory_part(
    cfg: BenchConfig, log: Callable[[str], None], skipped: list[str]
) -> list[SensorMemory | HubMemory]:
    """Part g: peak RSS of a real sensor process and a real hub process."""
    from ivs.bench.memory import hub_peak_rss, sensor_peak_rss

    rows: list[SensorMemory | HubMemory] = []
    video = media_dir() / "vtest.avi"
    if cfg.rss_frames == 0:
        skipped.append("g: sensor process RSS not asked for (rss_frames=0)")
    elif not video.is_file():
        skipped.append("g: vtest.avi not found: no sensor process RSS")
    else:
        for runtime in cfg.rss_runtimes:
            rows.append(sensor_peak_rss(video.resolve(), cfg.rss_frames, runtime))
            log(f"g. ivs run ({runtime}): peak RSS {rows[-1].peak_rss_mib} MiB")
    if cfg.rss_events <= 0:
        skipped.append("g: hub process RSS not asked for (rss_events=0)")
    else:
        rows.append(hub_peak_rss(cfg.rss_events))
        log(f"g. ivs hub serve: peak RSS {rows[-1].peak_rss_mib} MiB")
    return rows


# ---------------------------------------------------------------------------------------- part h


def bench_tracking_part(cfg: BenchConfig, log: Callable[[str], None], skipped: list[str]) -> TrackIdentity | None:
    """Part h, or None with the reason in `skipped`."""
    video = media_dir() / "vtest.avi"
    labels = ROOT / "tests" / "data" / "vtest_tracks.json"
    why = None
    if not cfg.tracking:
        why = "h: tracking metrics not asked for (the full run measures them)"
    elif not video.is_file():
        why = "h: vtest.avi not found (scripts/fetch-media.sh fetches it)"
    elif not labels.is_file():
        why = "h: tests/data/vtest_tracks.json not here (a source checkout has it)"
    elif importlib.util.find_spec("motmetrics") is None:
        why = "h: motmetrics not installed (it is in the dev extra: pip install -e '.[dev]')"
    if why is not None:
        skipped.append(why)
        return None
    from ivs.bench.tracking import bench_tracking

    result = bench_tracking(video, labels, _e2e_runtime(cfg), max(cfg.threads))
    log(f"h. tracking: IDF1 {result.idf1}, {result.id_switches} ID switches")
    return result


# ---------------------------------------------------------------------------------------- part i


def bench_streams_part(cfg: BenchConfig, log: Callable[[str], None], skipped: list[str]) -> list[StreamsRow]:
    """Part i, or nothing with the reason in `skipped`."""
    video = media_dir() / "vtest.avi"
    if cfg.streams_s <= 0:
        skipped.append("i: camera streams per box not asked for (the full run measures them)")
        return []
    if not video.is_file():
        skipped.append("i: vtest.avi not found (scripts/fetch-media.sh fetches it)")
        return []
    from ivs.bench.streams import bench_streams

    rows = bench_streams(video, cfg.streams_s, _e2e_runtime(cfg), log)
    log("i. streams: " + ", ".join(f"{r.how} {r.max_streams}" for r in rows))
    return rows


# ---------------------------------------------------------------------------------------- part j


def bench_counts_part(cfg: BenchConfig, log: Callable[[str], None], skipped: list[str]) -> list[CountsRow]:
    """Part j, or nothing with the reason in `skipped`."""
    if cfg.counts_events <= 0:
        skipped.append("j: counts at fleet scale not asked for (the full run measures 2,000,000 events)")
        return []
    from ivs.bench.counts import bench_counts_all

    return bench_counts_all(cfg.counts_events, log)


# ---------------------------------------------------------------------------------------- part k


def bench_plant_part(cfg: BenchConfig, log: Callable[[str], None], skipped: list[str]) -> list[PlantRow]:
    """Part k, or nothing with the reason in `skipped`."""
    video = media_dir() / "vtest.avi"
    if cfg.plant_stops <= 0:
        skipped.append("k: the stop at Modbus and OPC UA clients not asked for (the full run measures 50)")
        return []
    if not video.is_file():
        skipped.append("k: vtest.avi not found (scripts/fetch-media.sh fetches it)")
        return []
    from ivs.bench.plant import bench_plant_delivery, bench_plant_end_to_end

    rows = bench_plant_delivery(2 * cfg.plant_stops)
    rows += bench_plant_end_to_end(cfg.plant_stops, video, _e2e_runtime(cfg), max(cfg.threads))
    log("k. plant: " + ", ".join(f"{r.path.split()[0]} p99 {r.p99_ms} ms" for r in rows))
    return rows
