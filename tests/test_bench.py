"""`ivs bench` on a tiny configuration: the structure and sanity of its results, no timing thresholds."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from ivs.bench import ANCHORS_MS, BenchConfig, fp32_path, latency_ratios, latency_stats, markdown_report, run_bench

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
)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    console = Console(file=io.StringIO(), width=200)
    res = run_bench(True, out, console, config=TINY)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "model latency" in text and "not measured yet" in text
    assert json.loads(out.read_text()) == res
    return res


def test_stats_are_ordered():
    s = latency_stats([3.0, 1.0, 2.0, 10.0, 2.5])
    assert s["n"] == 5
    assert s["min_ms"] <= s["q1_ms"] <= s["median_ms"] <= s["q3_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert s["median_ms"] == 2.5
    with pytest.raises(ValueError):
        latency_stats([])


def test_latency_rows_are_sane(result: dict):
    rows = result["latency"]
    precisions = {"int8", "fp32"} if fp32_path("mobilenet-v1") else {"int8"}
    assert {(r["precision"], r["threads"]) for r in rows} == {(p, t) for p in precisions for t in (1, 2)}
    for r in rows:
        assert r["model"] == "mobilenet-v1" and r["runtime"] == "onnxruntime"
        assert r["key"] == f"mobilenet-v1/onnxruntime/{r['precision']}/t{r['threads']}"
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["iqr_ms"] >= 0
        assert 1 <= r["n"] <= TINY.iterations
        for anchor, ms in ANCHORS_MS.items():
            assert r["vs_anchor"][anchor] == pytest.approx(r["median_ms"] / ms, abs=1e-3)


def test_ratios_come_from_the_same_rows(result: dict):
    by_key = {r["key"]: r for r in result["latency"]}
    ratios = result["ratios"]
    assert ratios == latency_ratios(result["latency"])
    kinds = {r["kind"] for r in ratios}
    assert "1 thread/2 threads (thread scaling)" in kinds
    if fp32_path("mobilenet-v1"):
        assert "fp32/int8 (int8 speed-up)" in kinds
    for r in ratios:
        expected = by_key[r["numerator"]]["median_ms"] / by_key[r["denominator"]]["median_ms"]
        assert r["value"] == pytest.approx(expected, abs=1e-3)


def test_end_to_end_has_every_stage(result: dict):
    (row,) = result["end_to_end"]
    assert row["frame"] == "1920x1080" and row["frames"] == 3 and row["tensors_per_frame"] == 1
    for stage in ("isp", "infer", "decode", "total"):
        s = row["stages"][stage]
        assert s["n"] == 3 and s["median_ms"] > 0 and s["p99_ms"] >= s["median_ms"]
    assert row["stages"]["total"]["max_ms"] >= row["stages"]["infer"]["max_ms"]
    for frac in row["over_deadline"].values():
        assert 0 <= frac <= 1
    assert row["over_deadline"]["16.7ms"] >= row["over_deadline"]["33.3ms"]


def test_data_reduction_and_memory(result: dict, vtest: Path):
    red = result["data_reduction"]
    assert red is not None and red["frames"] == 3
    assert red["metadata_bytes"] > 0
    assert red["raw_bytes"] == 3 * 768 * 576 * 3
    assert red["raw_over_metadata"] == pytest.approx(red["raw_bytes"] / red["metadata_bytes"], rel=1e-2)
    assert red["file_bytes"] == vtest.stat().st_size
    mem = result["memory"]
    assert 0 < mem["after_imports_mib"] <= mem["after_latency_mib"] <= mem["after_data_reduction_mib"]
    assert "peak resident set" in mem["what"]
    assert len(result["not_measured"]) == 2


def test_safety_stop_latency(result: dict):
    safety = result["safety_stop"]
    if safety is None:
        assert any(s.startswith("d: ") for s in result["skipped"])
        return
    assert safety["stops_sent"] >= 1 and safety["stops_received"] == safety["stops_sent"]
    lat = safety["latency"]
    assert 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"] and lat["n"] == safety["stops_received"]
    assert safety["target_ms"] == 10.0
    assert set(safety["breakdown"]) >= {"sensor", "delivery", "infer"}
    assert "| person (tiles 1x1) |" in markdown_report(result)


def test_hub_ingest(result: dict):
    ingest = result["hub_ingest"]
    assert [r["path"].split()[0] for r in ingest["rows"]] == ["Store.ingest", "HTTP"]
    for r in ingest["rows"]:
        assert r["events"] == r["accepted"] == 2_000 and r["batch"] == 1_000
        assert r["events_per_s"] > 0
    assert "e: PostgreSQL: no PostgreSQL server here yet" in result["skipped"]
    assert markdown_report(result).count("| sqlite (file) |") == 2


def test_unknown_model_is_refused():
    bad = BenchConfig(("nope",), 1, 0, 1, (1,), ("onnxruntime",), 1.0, (), (), 1, 0)
    with pytest.raises(ValueError, match="unknown zoo models"):
        run_bench(True, None, None, config=bad)


def test_markdown_report_has_a_row_per_result(result: dict):
    text = markdown_report(result)
    assert text.count("| mobilenet-v1 | onnxruntime |") == len(result["latency"]) + len(result["end_to_end"])
