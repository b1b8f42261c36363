"""`ivs bench` on a tiny configuration: the structure and sanity of its results, no timing thresholds."""

from __future__ import annotations

import io
import json
from pathlib import Path

import msgspec
import numpy as np
import pytest
from rich.console import Console

from ivs.bench import (
    ANCHORS_MS,
    BenchConfig,
    BenchResult,
    fp32_path,
    latency_ratios,
    latency_stats,
    markdown_report,
    read_results,
    run_bench,
)
from ivs.bench.results import HubMemory, SensorMemory

TINY = BenchConfig(
    models=("mobilenet-v1",),
    iterations=6,
    warmup=1,
    blocks=2,
    threads=(1, 2),
    runtimes=("onnxruntime",),
    row_budget_s=2.0,
    e2e_models=("mobilenet-v1",),
    e2e_sizes=("1080p",),
    e2e_frames=3,
    ledger_frames=3,
    stops=1,
    ingest_events=2_000,
    sustain_s=0.5,
    naive_frames=2,
    naive_blocks=1,
    rss_frames=5,
    rss_events=2_000,
    stop_outboxes=("full",),  # "normal" is the same code with one pragma; the delivery rows time both
    counts_events=3_000,
    plant_stops=2,
)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> BenchResult:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    console = Console(file=io.StringIO(), width=200)
    res = run_bench(True, out, console, config=TINY)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "model latency" in text and "not measured yet" in text
    assert read_results(out) == res
    return res


def test_a_results_file_reads_back_typed_and_a_wrong_one_says_what_is_wrong(result: BenchResult, tmp_path: Path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(msgspec.to_builtins(result)))
    assert read_results(good) == result
    doc = json.loads(good.read_text())
    doc["latency"][0]["median_ms"] = "fast"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(
        ValueError,
        match=r"not an ivs.bench/1 results file: Expected `float`, got `str` - at `\$.latency\[0\].median_ms`",
    ):
        read_results(bad)
    doc = json.loads(good.read_text())
    doc["schema"] = "ivs.bench/0"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="schema 'ivs.bench/0', expected 'ivs.bench/1'"):
        read_results(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        read_results(bad)


def test_stats_are_ordered():
    s = latency_stats([3.0, 1.0, 2.0, 10.0, 2.5])
    assert s.n == 5
    assert s.min_ms <= s.q1_ms <= s.median_ms <= s.q3_ms <= s.p99_ms <= s.max_ms
    assert s.median_ms == 2.5
    with pytest.raises(ValueError):
        latency_stats([])


def test_latency_rows_are_sane(result: BenchResult):
    rows = result.latency
    precisions = {"int8", "fp32"} if fp32_path("mobilenet-v1") else {"int8"}
    assert {(r.precision, r.threads) for r in rows} == {(p, t) for p in precisions for t in (1, 2)}
    for r in rows:
        assert r.model == "mobilenet-v1" and r.runtime == "onnxruntime"
        assert r.key == f"mobilenet-v1/onnxruntime/{r.precision}/t{r.threads}"
        assert 0 < r.min_ms <= r.median_ms <= r.p99_ms <= r.max_ms
        assert r.iqr_ms >= 0
        assert 1 <= r.n <= TINY.iterations
        for anchor, ms in ANCHORS_MS.items():
            assert r.vs_anchor[anchor] == pytest.approx(r.median_ms / ms, abs=1e-3)


def test_ratios_come_from_the_same_rows(result: BenchResult):
    by_key = {r.key: r for r in result.latency}
    ratios = result.ratios
    assert ratios == latency_ratios(result.latency)
    kinds = {r.kind for r in ratios}
    assert "1 thread/2 threads (thread scaling)" in kinds
    if fp32_path("mobilenet-v1"):
        assert "fp32/int8 (int8 speed-up)" in kinds
    for r in ratios:
        expected = by_key[r.numerator].median_ms / by_key[r.denominator].median_ms
        assert r.value == pytest.approx(expected, abs=1e-3)


def test_end_to_end_has_every_stage(result: BenchResult):
    (row,) = result.end_to_end
    assert row.frame == "1920x1080" and row.frames == 3 and row.tensors_per_frame == 1
    for stage in ("isp", "infer", "decode", "total"):
        s = row.stages[stage]
        assert s.n == 3 and s.median_ms > 0 and s.p99_ms >= s.median_ms
    assert row.stages["total"].max_ms >= row.stages["infer"].max_ms
    for frac in row.over_deadline.values():
        assert 0 <= frac <= 1
    assert row.over_deadline["16.7ms"] >= row.over_deadline["33.3ms"]


def test_data_reduction_and_memory(result: BenchResult, vtest: Path):
    red = result.data_reduction
    assert red is not None and red.frames == 3
    assert red.metadata_bytes > 0
    assert red.raw_bytes == 3 * 768 * 576 * 3
    assert red.raw_over_metadata == pytest.approx(red.raw_bytes / red.metadata_bytes, rel=1e-2)
    assert red.file_bytes == vtest.stat().st_size
    mem = result.memory
    assert 0 < mem.after_imports_mib <= mem.after_latency_mib <= mem.after_data_reduction_mib
    assert "peak resident set" in mem.what
    assert len(result.not_measured) == 1


def test_safety_stop_latency(result: BenchResult):
    safety = result.safety_stop
    if safety is None:
        assert any(s.startswith("d: ") for s in result.skipped)
        return
    assert safety.stops_sent >= 1 and safety.stops_received == safety.stops_sent
    lat = safety.latency
    assert 0 < lat.p50_ms <= lat.p99_ms <= lat.max_ms and lat.n == safety.stops_received
    assert safety.target_ms == 10.0
    assert set(safety.breakdown) >= {"sensor", "delivery", "infer"}
    assert safety.outbox_synchronous == "full"
    assert result.safety_stop_normal is None  # not asked for
    assert markdown_report(result).count("| person (tiles 1x1) |") == 1
    # the delivery half alone, for each durability: every stop arrives
    assert [r.synchronous for r in result.safety_delivery] == ["full", "normal"]
    for r in result.safety_delivery:
        assert r.received == r.pairs == 15 * TINY.stops
        assert 0 < r.p50_ms <= r.p99_ms <= r.max_ms


def test_hub_ingest(result: BenchResult):
    ingest = result.hub_ingest
    rows = ingest.rows
    assert [(r.path.split()[0], r.database.split()[0]) for r in rows] == [
        ("Store.ingest", "sqlite"),
        ("Store.ingest", "postgresql"),
        ("HTTP", "sqlite"),
        ("HTTP", "postgresql"),
        ("MQTT", "sqlite"),
        ("MQTT", "postgresql"),
        ("MQTT", "postgresql"),
        ("MQTT", "sqlite"),
        ("MQTT", "postgresql"),
        ("MQTT", "postgresql"),
    ]
    assert ["100 events per message" in r.path for r in rows] == [False] * 7 + [True] * 3
    for r in rows:  # make test installs PostgreSQL and Mosquitto: every row runs
        assert not r.absent, r
        assert r.events == r.accepted == 2_000 and r.events_per_s > 0
        assert r.batch == (5_000 if r.path.startswith("MQTT") else 1_000)
    for two in (rows[6], rows[9]):
        assert len(two.per_worker) == 2 and sum(two.per_worker) == 2_000 and min(two.per_worker) > 0
    assert markdown_report(result).count("| sqlite (file) |") == 5  # four ingest rows and the counts row


def test_counts_at_scale(result: BenchResult):
    assert [r.database.split()[0] for r in result.counts] == ["sqlite", "postgresql"]
    for r in result.counts:
        assert not r.absent, r
        assert (r.events, r.sensors, r.days) == (3_000, 100, 30)
        assert r.hourly_query_ms > 0 and r.raw_query_ms > 0
        # retention keeps a week of the 30 days' messages, and every count in the rollups
        assert r.messages_before == 3_000 and r.messages_after == round(3_000 * 7 / 30)
        assert r.rollup_total_before == r.rollup_total_after == 3_000
        assert r.hourly_unchanged
    # SQLite's data in use shrinks at once; PostgreSQL's files keep their size and are filled again
    assert result.counts[0].data_mib_after < result.counts[0].data_mib_before


def test_unknown_model_is_refused():
    bad = BenchConfig(("nope",), 1, 0, 1, (1,), ("onnxruntime",), 1.0, (), (), 1, 0)
    with pytest.raises(ValueError, match="unknown zoo models"):
        run_bench(True, None, None, config=bad)


def test_markdown_report_has_a_row_per_result(result: BenchResult):
    text = markdown_report(result)
    assert text.count("| mobilenet-v1 | onnxruntime |") == len(result.latency) + len(result.end_to_end)


def test_sustained_rows_account_for_every_frame(result: BenchResult):
    rows = result.sustained
    # 1080p frames and the sample video, each at 30 and 60 fps
    assert [(r.feed, r.fps_offered) for r in rows] == [
        (feed, fps) for feed in ("1080p", "vtest.avi") for fps in (30.0, 60.0)
    ]
    for r in rows:
        assert r.frames_offered == max(round(r.fps_offered * TINY.sustain_s), 10)
        # every frame the source offered was either turned into metadata or dropped
        assert r.frames_processed + r.dropped == r.frames_offered == r.records + r.dropped
        assert r.deadline_misses == r.late + r.dropped and 0 <= r.late <= r.frames_processed
        assert 0 < r.fps_sustained <= r.fps_offered + 1e-6
        assert r.deadline_ms == pytest.approx(1000 / r.fps_offered, abs=0.01)
        for st in (*r.stages.values(), r.to_metadata):
            assert 0 <= st.p50_ms <= st.p99_ms <= st.max_ms
        # capture to metadata covers the sensor's own stages
        assert r.to_metadata.max_ms >= r.stages["infer"].max_ms
    text = markdown_report(result)
    assert text.count("| mobilenet-v1 | vtest.avi | 768x576 |") == 2 + 1  # two rates, one naive row


def test_versus_naive_rows(result: BenchResult):
    rows = result.versus_naive
    assert [r.feed for r in rows] == ["1080p", "vtest.avi"]
    for r in rows:
        n = TINY.naive_frames * TINY.naive_blocks
        assert r.ivs.n == r.naive.n == n
        assert r.speedup == pytest.approx(r.naive.mean_ms / r.ivs.mean_ms, rel=0.01)
        assert r.ivs_over_naive == pytest.approx(r.ivs.mean_ms / r.naive.mean_ms, rel=0.01)
        assert r.naive_model


def test_process_memory(result: BenchResult):
    sensor, hub = result.memory.processes
    assert isinstance(sensor, SensorMemory) and isinstance(hub, HubMemory)
    assert sensor.process == "ivs run" and sensor.frames == 5 and sensor.messages >= 5
    assert sensor.runtime == "auto"
    assert hub.process == "ivs hub serve" and hub.accepted == hub.events == 2_000
    assert hub.exit_code == 0
    # a Python process with numpy and a model: tens of MiB at least; the peak never below idle
    assert sensor.peak_rss_mib > 50 and 30 < hub.peak_rss_idle_mib <= hub.peak_rss_mib
    assert "| ivs hub serve |" in markdown_report(result)


def test_naive_pipeline_finds_the_people_ivs_finds(vtest: Path):
    """The baseline does the same work: on a real frame, the naive pipeline (fp32 on OpenCV DNN,
    whole-frame resize) and ivs (int8, its ISP) find the same people, box for box."""
    from ivs.bench import naive_model_bytes
    from ivs.bench.naive import NaivePipeline
    from ivs.detections import box_iou
    from ivs.model import load_model
    from tests.conftest import read_frames

    frame = read_frames(vtest, {60})[60]
    model = load_model("person", runtime="onnxruntime", tiles=(1, 1))
    try:
        naive = NaivePipeline(model, *naive_model_bytes("person"))
        ours, theirs = model(frame), naive.detect(frame)
        doc = json.loads(naive(frame, 60))
    finally:
        model.close()
    assert len(ours) >= 3 and abs(len(ours) - len(theirs)) <= 1
    iou = box_iou(ours.xyxy, theirs.xyxy)
    assert (iou.max(axis=1) > 0.7).sum() >= len(ours) - 1
    assert len(doc["detections"]) == len(theirs) and doc["detections"][0]["label"] == "person"


def test_dequantized_model_computes_what_the_int8_model_does():
    """The fallback fp32 graph for a clean clone (no zoo/build): the package's QDQ model with its
    weights dequantised and each Q/DQ pair a Clip. Same outputs as the int8 model, up to the
    quantisation steps, and no quantisation operator left."""
    import onnx
    import onnxruntime as ort

    from ivs.bench.naive import dequantized_onnx
    from ivs.package.reader import read_package
    from ivs.package.zoo import resolve

    package = read_package(resolve("mobilenet-v1"))
    fp32 = dequantized_onnx(package.model_bytes)
    ops = {n.op_type for n in onnx.load_from_string(fp32).graph.node}
    assert not ops & {"QuantizeLinear", "DequantizeLinear"} and "Conv" in ops
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    name = package.manifest.input.name
    (q,) = ort.InferenceSession(package.model_bytes).run(None, {name: x})
    (f,) = ort.InferenceSession(fp32).run(None, {name: x})
    assert np.abs(q - f).max() < 0.05 * np.abs(q).max()
    with pytest.raises(ValueError, match="not a QDQ"):
        dequantized_onnx(fp32)


def test_isp_resize_row(result: BenchResult):
    rz = result.isp_resize
    assert len(rz.ms) == 3 and rz.runs == 10
    for st in rz.ms.values():
        assert 0 < st.p50_ms <= st.p99_ms <= st.max_ms
    # the fast anti-aliased path stays close to one INTER_AREA (a few grey levels at edges)
    assert 0 < rz.vs_single_area.mean_abs < 2 and rz.vs_single_area.p99_abs <= 12


def test_bench_report_prints_a_saved_run_without_measuring(result: BenchResult, tmp_path: Path):
    """`ivs bench --report FILE`: the tables of a results file, the same as the run printed."""
    from typer.testing import CliRunner

    from ivs import cli

    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps(msgspec.to_builtins(result)))
    runner = CliRunner()
    out = runner.invoke(cli.app, ["bench", "--report", str(saved), "--markdown"])
    assert out.exit_code == 0, out.output
    assert out.stdout == markdown_report(result) + "\n"
    saved.write_text('{"schema": "ivs.bench/1"}')
    out = runner.invoke(cli.app, ["bench", "--report", str(saved)])
    assert out.exit_code == 1 and "not an ivs.bench/1 results file" in out.output


def test_the_stop_at_plant_clients(result: BenchResult):
    rows = result.plant
    assert [(r.kind.split()[0], r.path.split()[0]) for r in rows] == [
        ("delivery", "Modbus"), ("delivery", "OPC"), ("end", "Modbus"), ("end", "OPC"),
    ]  # fmt: skip
    for r in rows:
        assert r.seen == r.stops > 0 and 0 < r.p50_ms <= r.p99_ms <= r.max_ms, r
