"""`ivs node`: many sensors in one process (ivs.node, ivs.node_config).

The end-to-end test runs a real node process with four sensors (two video files, an RTSP
camera served by GStreamer's RTSP server, a synthetic scene) publishing to a real Mosquitto,
and a real hub storing what they send."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ivs import cli
from ivs.localnet import LocalMosquitto, free_port
from ivs.node_config import parse_node
from tests.processes import Proc, ivs
from tests.stream_server import make_clip
from tests.test_faults import metric, scrape, start_hub, stored
from tests.test_rtsp import rtsp_server
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent

SITE = """\
node:
  id: shop
defaults:
  model: {name: face, runtime: onnxruntime}
  sinks:
    - {type: mqtt, outbox: "boxes/{id}.sqlite"}
sensors:
  - id: door
    source: {url: "synthetic:320x240@10"}
  - id: till
    source: {url: "synthetic:320x240@10"}
    model: {name: person}
"""


def test_a_node_file_merges_its_defaults_into_each_sensor():
    cfg, problems, _ = parse_node(SITE)
    assert problems == [] and cfg is not None
    door, till = cfg.sensors
    assert (door.id, door.model.name, door.model.runtime) == ("door", "face", "onnxruntime")
    assert (till.model.name, till.model.runtime) == ("person", "onnxruntime")  # mappings merge key by key
    assert [s.sinks[0].outbox for s in cfg.sensors] == ["boxes/door.sqlite", "boxes/till.sqlite"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (("id: till", "id: door"), 10, "id 'door' is taken by sensor 'door'"),
        (
            ('outbox: "boxes/{id}.sqlite"', 'outbox: "boxes/all.sqlite"'),
            6,
            "taken by sensor 'door': expected one per sensor (put {id}",
        ),
        (
            ("runtime: onnxruntime", "runtime: tpu"),
            4,
            "'auto', 'onnxruntime', 'openvino', 'litert' or 'onnxruntime-cuda'",
        ),
        (("model: {name: person}", "model: {name: person, tiles: 3}"), 12, "tuple"),
        (("  - id: door\n", "  - id: door\n    colour: red\n"), 9, "unknown key 'colour'"),
    ],
)
def test_node_file_errors_name_their_line(change: tuple[str, str], line: int, message: str):
    """A value that came from `defaults` is reported on its line there."""
    text = SITE.replace(*change)
    assert text != SITE
    cfg, problems, _ = parse_node(text)
    assert cfg is None
    assert any(p.line == line and message in p.message for p in problems), [(p.line, p.message) for p in problems]


def test_config_check_reads_a_node_file(tmp_path: Path):
    path = tmp_path / "site.yaml"
    path.write_text(SITE.replace("boxes/", f"{tmp_path}/boxes/"))
    result = CliRunner().invoke(cli.app, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "node shop, 2 sensors: door, till" in result.output
    path.write_text(SITE.replace("model: {name: person}", "model: {name: nosuchmodel}"))
    result = CliRunner().invoke(cli.app, ["config", "check", str(path)])
    assert result.exit_code == 1
    assert f"{path}:12: sensors[1].model.name:" in result.output


# ------------------------------------------------------------------------------ end to end


def site_yaml(path: Path, broker: int, clip_url: str, vtest: Path, metrics: int) -> Path:
    boxes = path.parent / "boxes"
    path.write_text(
        f"node: {{id: site, metrics_port: {metrics}, restart_s: 1}}\n"
        "defaults:\n"
        "  model: {name: face, runtime: onnxruntime}\n"
        "  frames: true\n"
        f"  sinks: [{{type: mqtt, host: 127.0.0.1, port: {broker}, outbox: '{boxes}/{{id}}.sqlite'}}]\n"
        "sensors:\n"
        f"  - {{id: file-a, source: {{url: '{vtest}'}}}}\n"
        f"  - {{id: file-b, source: {{url: '{vtest}', fps: 10}}}}\n"
        f"  - {{id: camera, source: {{url: '{clip_url}', stall_s: 2, reconnect: {{first_s: 0.5, max_s: 1}}}}}}\n"
        "  - {id: synth, source: {url: 'synthetic:320x240@10'}}\n"
    )
    return path


def frames_of(db: Path, sensor: str) -> list[int]:
    return [frame for _, kind, frame in stored(db, sensor) if kind == "frame"]


def one_run(values: list[int]) -> bool:
    """Frame indices of one run of a sensor: strictly increasing (a restart begins at 0 again;
    a frame the sensor dropped while the machine was busy is a gap, not a restart)."""
    return bool(values) and all(a < b for a, b in itertools.pairwise(values))


def seqs_once_in_order(db: Path, sensor: str) -> bool:
    """Every message of the sensor stored once, its seq 1, 2, 3, ... with none missing."""
    seqs = [s for s, _, _ in stored(db, sensor)]
    return seqs == list(range(1, len(seqs) + 1))


@pytest.mark.slow
def test_four_sensors_in_one_node_keep_their_identity_and_isolation(
    vtest: Path, tmp_path: Path, procs: list[Proc]
) -> None:
    broker = LocalMosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        _four_sensors(vtest, tmp_path, procs, broker)
    finally:
        broker.stop()


def _four_sensors(vtest: Path, tmp_path: Path, procs: list[Proc], broker: LocalMosquitto) -> None:
    clip = make_clip(vtest, tmp_path / "clip.ts", frames=10_000, fps=10)
    rtsp_port = free_port()
    camera = rtsp_server(clip, rtsp_port, tmp_path / "rtsp.log")
    procs.append(camera)
    db, hub_port = tmp_path / "hub.sqlite", free_port()
    hub = start_hub(db, hub_port, tmp_path / "hub.log", "--mqtt", f"127.0.0.1:{broker.port}")
    procs.append(hub)
    metrics = free_port()
    site = site_yaml(tmp_path / "site.yaml", broker.port, f"rtsp://127.0.0.1:{rtsp_port}/clip", vtest, metrics)
    node = Proc(ivs("node", "--config", str(site), "--status-s", "5"), tmp_path / "node.log")
    procs.append(node)
    four = ("file-a", "file-b", "camera", "synth")
    wait_for(lambda: all(len(frames_of(db, s)) >= 30 for s in four), 90, "30 frames of each sensor at the hub",
             procs=[node.proc])  # fmt: skip

    # The camera goes away; the other three go on at their rate.
    camera.kill9()
    mark = {s: len(frames_of(db, s)) for s in four}
    wait_for(lambda: all(len(frames_of(db, s)) >= mark[s] + 50 for s in ("file-a", "file-b", "synth")), 60,
             "50 more frames of the others", procs=[node.proc])  # fmt: skip
    assert len(frames_of(db, "camera")) <= mark["camera"] + 20  # what was in flight, then nothing

    # A fifth sensor added to the file and SIGHUP: it starts; nobody else restarts.
    site.write_text(site.read_text() + "  - {id: late, source: {url: 'synthetic:320x240@10'}}\n")
    before = {s: len(frames_of(db, s)) for s in ("file-a", "file-b", "synth")}
    os.kill(node.proc.pid, signal.SIGHUP)
    wait_for(lambda: len(frames_of(db, "late")) >= 20, 60, "the fifth sensor's frames", procs=[node.proc])
    wait_for(lambda: all(len(frames_of(db, s)) >= before[s] + 20 for s in before), 60, "the others, after SIGHUP")
    for s in ("file-a", "file-b", "synth", "late"):
        frames = frames_of(db, s)
        assert one_run(frames), (s, frames[:5], len(frames))  # no restart
        assert seqs_once_in_order(db, s), s
    assert frames_of(db, "file-a")[0] == 0 and frames_of(db, "synth")[0] == 0
    assert "reloaded" in node.output() and "'added': ['late']" in node.output()

    # kill -9 of the node while the broker is down, then both back: every outbox delivers, seq goes on.
    broker.stop()
    waiting = 'ivs_sensor_outbox_depth{sensor="synth",sink="MqttSink#0"}'
    wait_for(lambda: metric(scrape(metrics), waiting) >= 20, 30, "messages waiting in the outbox", procs=[node.proc])
    node.kill9()
    last = {s: max(s_ for s_, _, _ in stored(db, s)) for s in ("file-a", "synth", "late")}
    broker.start()
    node2 = Proc(ivs("node", "--config", str(site), "--status-s", "5"), tmp_path / "node2.log")
    procs.append(node2)
    wait_for(lambda: all(max(s_ for s_, _, _ in stored(db, s)) >= last[s] + 30 for s in last), 90,
             "new messages of each sensor after the restart", procs=[node2.proc])  # fmt: skip
    for s in last:
        assert seqs_once_in_order(db, s), s  # the outbox's messages and the new ones: one seq line, nothing twice
    node2.interrupt()
    assert hub.alive()


def test_the_example_site_checks_clean():
    result = CliRunner().invoke(cli.app, ["config", "check", str(ROOT / "examples" / "node" / "site.yaml")])
    assert result.exit_code == 0, result.output
    assert "node shop-1, 2 sensors: entrance, floor" in result.output


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_the_systemd_unit_verifies(tmp_path: Path):
    """deploy/ivs-node.service as systemd itself reads it: no error and no warning. Its ExecStart
    points at this checkout's ivs (systemd checks that the program exists)."""
    unit = (ROOT / "deploy" / "ivs-node.service").read_text()
    assert "ExecStart=/opt/ivs/bin/ivs node --config /etc/ivs/site.yaml" in unit
    here = tmp_path / "ivs-node.service"
    here.write_text(unit.replace("/opt/ivs/bin/ivs", str(Path(sys.executable).parent / "ivs")))
    ok = subprocess.run(["systemd-analyze", "verify", str(here)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stderr.strip() == "", ok.stderr
    here.write_text(here.read_text().replace("Type=simple", "Type=simpel"))  # the check can fail
    bad = subprocess.run(["systemd-analyze", "verify", str(here)], capture_output=True, text=True, timeout=60)
    assert "simpel" in bad.stderr


def test_the_stream_count_search_finds_the_largest_that_drops_nothing():
    from ivs.bench.results import StreamsTrial
    from ivs.bench.streams import most_streams, streams_row

    def box(n: int, repeat: int) -> StreamsTrial:  # keeps up with 11 streams; 10 fail their third repeat
        late = 0 if n <= 9 or n == 11 or (n == 10 and repeat < 3) else 7
        return StreamsTrial(streams=n, repeat=repeat, dropped=0 if n <= 11 else 5 * (n - 11), late=late,
                            frames=100 * n, min_frames=100, min_fps=10.0 if n <= 11 else 8.0,
                            pss_mib=200.0 + 20 * n + repeat)  # fmt: skip

    trials = most_streams(box, repeats=3)
    assert [(t.streams, t.repeat) for t in trials] == [
        (1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (4, 1), (4, 2), (4, 3), (8, 1), (8, 2), (8, 3),
        (16, 1), (12, 1), (10, 1), (10, 2), (10, 3), (9, 1), (9, 2), (9, 3),
    ]  # fmt: skip
    row = streams_row("fake", trials)
    assert (row.max_streams, row.pss_mib_at_max) == (9, 383.0)  # 11 never tried: 10 failed a repeat


@pytest.mark.slow
def test_a_stream_trial_runs_a_real_node(vtest: Path):
    from ivs.bench.streams import node_trial

    t = node_trial(vtest, 2.0, "onnxruntime")(2, 1)
    assert (t.streams, t.frames, t.min_frames) == (2, 40, 20)
    assert t.pss_mib > 50 and t.min_fps > 0
