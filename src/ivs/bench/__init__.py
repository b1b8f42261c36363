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
   `ivs hub serve` process (`ivs.bench.memory`);
h. tracking: IDF1 and ID switches on the hand-labelled tracks of the sample video
   (`ivs.bench.tracking`);
i. camera streams per box, a node against separate processes (`ivs.bench.streams`);
j. counts at fleet scale: 2,000,000 count events of 100 sensors over 30 days, the hourly query
   from the rollups, and retention (`ivs.bench.counts`);
k. the stop at a plant's clients: capture to a Modbus coil a client polls and to an OPC UA data
   change at a subscribed client (`ivs.bench.plant`).

Absolute times depend on the machine and on whatever else runs on it; compare rows as ratios
measured in the same run.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from ivs.bench.common import (
    ANCHORS_MS,
    NOTES,
    ROOT,
    BenchConfig,
    current_rss_mib,
    fp32_path,
    latency_stats,
    machine_info,
    peak_rss_mib,
    sample_frames,
)
from ivs.bench.latency import bench_model_latency, latency_ratios
from ivs.bench.parts import (
    bench_counts_part,
    bench_data_reduction,
    bench_delivery_part,
    bench_end_to_end,
    bench_ingest_part,
    bench_memory_part,
    bench_pipeline_parts,
    bench_plant_part,
    bench_stop_part,
    bench_streams_part,
    bench_tracking_part,
    naive_model_bytes,
)
from ivs.bench.report import markdown_report, print_report
from ivs.bench.results import (
    SCHEMA,
    BenchResult,
    EndToEndRow,
    LatencyRow,
    Memory,
    RunConfig,
    read_results,
    write_results,
)
from ivs.package.zoo import names as zoo_names

# ---------------------------------------------------------------------------------------- driver


def run_bench(
    quick: bool,
    out_json: Path | None,
    console: Console | None = None,
    *,
    config: BenchConfig | None = None,
) -> BenchResult:
    """Run the benchmark, print tables on `console` (None: quiet), write `out_json`, return the results.

    quick: the short preset (two models, fewer runs and frames; about a minute on 2 cores);
    config: an explicit configuration instead of the preset (tests use a tiny one).
    """
    cfg = config or (BenchConfig.quick() if quick else BenchConfig.full())
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        if console is not None:
            console.log(msg)

    memory = Memory(
        what="ru_maxrss: the peak resident set of the whole bench process so far (Python, numpy, "
        "OpenCV, onnxruntime, OpenVINO and whatever runners and frames it held; part a holds every runner "
        "of one model at once), not the footprint of one model; see end_to_end[].rss_growth_on_load_mib",
        after_imports_mib=peak_rss_mib(),
    )
    frames, frames_from = sample_frames(8)
    known = set(zoo_names())
    missing = [m for m in (*cfg.models, *cfg.e2e_models) if m not in known]
    if missing:
        raise ValueError(f"unknown zoo models {missing}: expected some of {sorted(known)}")

    latency: list[LatencyRow] = []
    notes = dict(NOTES)
    skipped: list[str] = []
    for i, name in enumerate(cfg.models):
        rows, why = bench_model_latency(name, cfg, frames[i % len(frames)], log)
        latency += rows
        skipped += why
    memory.after_latency_mib = peak_rss_mib()

    e2e: list[EndToEndRow] = []
    for name in cfg.e2e_models:
        e2e += bench_end_to_end(name, cfg, frames, log)
    from ivs.bench.pipeline import bench_area_resize

    isp_resize = bench_area_resize(frames, max(cfg.e2e_frames, 10))
    memory.after_end_to_end_mib = peak_rss_mib()
    sustained, versus = bench_pipeline_parts(cfg, frames, frames_from, log, skipped)

    safety = bench_stop_part(cfg, log, skipped)
    safety_normal = bench_stop_part(cfg, log, skipped, "normal") if "normal" in cfg.stop_outboxes else None
    delivery = bench_delivery_part(cfg, log) if safety is not None else []
    ingest = bench_ingest_part(cfg, log, skipped)

    reduction = bench_data_reduction(cfg)
    if reduction is None:
        skipped.append("f: vtest.avi not found (scripts/fetch-media.sh fetches it) or skipped")
    tracking = bench_tracking_part(cfg, log, skipped)
    streams = bench_streams_part(cfg, log, skipped)
    counts = bench_counts_part(cfg, log, skipped)
    plant = bench_plant_part(cfg, log, skipped)
    memory.after_data_reduction_mib = peak_rss_mib()
    memory.current_rss_mib = current_rss_mib()
    memory.processes = bench_memory_part(cfg, log, skipped)

    result = BenchResult(
        schema=SCHEMA,
        quick=quick,
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        machine=machine_info(),
        config=_config_summary(cfg),
        frames_from=frames_from,
        anchors_ms={
            "imx500_mobilenet_v1": ANCHORS_MS["imx500"],
            "coral_mobilenet_v1_224": ANCHORS_MS["coral"],
        },
        latency=latency,
        ratios=latency_ratios(latency),
        end_to_end=e2e,
        isp_resize=isp_resize,
        sustained=sustained,
        versus_naive=versus,
        safety_stop=safety,
        safety_stop_normal=safety_normal,
        safety_delivery=delivery,
        hub_ingest=ingest,
        data_reduction=reduction,
        memory=memory,
        tracking=tracking,
        streams=streams,
        counts=counts,
        plant=plant,
        not_measured=[
            "g: RSS over a long run is the soak's (python -m ivs.bench.soak --minutes 30; docs/reliability.md)",
        ],
        notes=notes,
        skipped=skipped,
        seconds=round(time.perf_counter() - t_start, 1),
    )
    if out_json is not None:
        write_results(result, out_json)
    if console is not None:
        print_report(result, console)
    return result


def _config_summary(cfg: BenchConfig) -> RunConfig:
    """What the run measured with, as the results file records it."""
    return RunConfig(
        models=list(cfg.models),
        iterations=cfg.iterations,
        warmup=cfg.warmup,
        blocks=cfg.blocks,
        threads=list(cfg.threads),
        e2e_frames=cfg.e2e_frames,
        ledger_frames=cfg.ledger_frames,
        stops=cfg.stops,
        ingest_events=cfg.ingest_events,
        sustain_s=cfg.sustain_s,
        naive_frames=cfg.naive_frames,
        naive_blocks=cfg.naive_blocks,
        rss_frames=cfg.rss_frames,
        rss_events=cfg.rss_events,
        rss_runtimes=list(cfg.rss_runtimes),
        streams_s=cfg.streams_s,
        counts_events=cfg.counts_events,
        plant_stops=cfg.plant_stops,
    )


__all__ = [
    "ANCHORS_MS",
    "ROOT",
    "BenchConfig",
    "BenchResult",
    "fp32_path",
    "latency_ratios",
    "latency_stats",
    "markdown_report",
    "naive_model_bytes",
    "print_report",
    "read_results",
    "run_bench",
]
