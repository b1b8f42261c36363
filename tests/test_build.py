"""The composition root: `build_sensor` makes a runnable sensor from a `SensorConfig`, and
`ivs run`'s flags become the same `SensorConfig` a YAML file gives."""

from __future__ import annotations

import json
from pathlib import Path

from ivs.build import RunOptions, build_sensor
from ivs.cli.run import _run_config
from ivs.config import SensorConfig, parse


def test_a_config_builds_a_sensor_that_runs_and_closes(tmp_path: Path, vtest: Path) -> None:
    out = tmp_path / "out.jsonl"
    cfg, problems, _ = parse(
        f"id: door\nsource: {{url: '{vtest}', fps: 0, max_frames: 30}}\nmodel: {{name: person, runtime: onnxruntime}}\n"
        "frames: true\napps:\n  - {type: line, name: door, p1: [384, 0], p2: [384, 576]}\n"
        f"sinks:\n  - {{type: jsonl, path: '{out}'}}\n"
    )
    assert cfg is not None, problems
    built = build_sensor(cfg, RunOptions(watch=False, ledger_period_s=None))
    try:
        stats = built.sensor.run()
    finally:
        built.close()
    assert stats.frames_processed == 30 and built.watcher is None and built.agent is None
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    records = [r for r in lines if r["schema"] == "ivs.frame/1"]
    assert [r["frame"] for r in records] == list(range(30))
    (beat,) = [r for r in lines if r.get("kind") == "heartbeat"]  # with the first frame; 30 s to the next
    assert (beat["frame"], beat["model"], beat["period_s"]) == (0, "person", 30.0)
    assert {r["model"]["runtime"] for r in records} == {"onnxruntime"} and records[0]["sensor_id"] == "door"
    assert [a.name for a in built.sensor.apps] == ["door"] and built.sensor.tracker is not None


def test_the_flags_make_the_config_a_file_would(tmp_path: Path) -> None:
    flags, out = _run_config(
        None, "synthetic:160x120@20:10", "classifier", "10,10,100,80", (None, None), 0.0, 10, "-", "onnxruntime", 2, None,
        "cam-1", None,
    )  # fmt: skip
    yaml = tmp_path / "cam-1.yaml"
    yaml.write_text(
        "id: cam-1\nsource: {url: 'synthetic:160x120@20:10', fps: 0, max_frames: 10}\n"
        "model: {name: classifier, runtime: onnxruntime, roi: [10, 10, 100, 80], threads: 2}\n"
        "frames: true\nheartbeat_s: null\nsinks:\n  - {type: jsonl, path: '-'}\n"
    )
    from_file, out_file = _run_config(yaml, None, None, None, (None, None), None, None, None, "auto", None, None,
                                      "ivs", None)  # fmt: skip
    assert isinstance(flags, SensorConfig) and flags == from_file and out == out_file == "-"
