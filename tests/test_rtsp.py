"""RTSP against a real RTSP server on loopback: GStreamer's gst-rtsp-server (tests/rtsp_server.py,
Debian's gir1.2-gst-rtsp-server-1.0 through python3-gi, installed by
scripts/install-system-deps.sh) serving the sample street video (vtest.avi, all 795 frames, as
MPEG-4 in MPEG-TS at 40 fps so a run takes 20 s, not 80).

The sensor runs as a user runs it, `ivs run --config`, and pulls the stream over RTSP (TCP
interleaved, as ivs asks for). What it must show: a record for every frame the server sent,
the same answers as on the file; the server killed and started again on the same port gives a
reconnect and exactly one `gap` event; a server that keeps the session up but sends nothing
(a hung camera) is detected after `stall_s` and reopened.
"""

from __future__ import annotations

import json
import signal
import subprocess
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from ivs.localnet import free_port
from tests.processes import Proc, ivs
from tests.stream_server import make_clip
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, which python3-gi belongs to; the venv cannot import gi
FPS = 40

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clip(vtest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    check = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"], capture_output=True, text=True
    )
    if check.returncode != 0:
        pytest.fail(
            f"the RTSP tests need GStreamer's RTSP server for {SYSTEM_PYTHON} ({check.stderr.strip()[-200:]}): "
            "expected it installed by scripts/install-system-deps.sh (make test runs it)"
        )
    return make_clip(vtest, tmp_path_factory.mktemp("rtsp") / "vtest.ts", frames=10_000, fps=FPS)


def rtsp_server(clip: Path, port: int, log: Path, *extra: str) -> Proc:
    server = Proc([SYSTEM_PYTHON, str(ROOT / "tests" / "rtsp_server.py"), str(clip), str(port), *extra], log)
    wait_for(lambda: "listening" in server.output(), what="the RTSP server to listen", procs=[server.proc])
    return server


def sensor_config(path: Path, url: str, out: Path, source: str = "", model: str = "person") -> Path:
    path.write_text(
        f"id: street\nsource:\n  url: '{url}'\n{source}model:\n  name: {model}\n  runtime: onnxruntime\n"
        f"frames: true\nsinks:\n  - {{type: jsonl, path: '{out}'}}\n"
    )
    return path


def lines(out: Path) -> list[dict[str, Any]]:
    """The complete lines written so far (the last may be half written)."""
    text = out.read_text().split("\n") if out.exists() else []
    return [json.loads(x) for x in text[:-1]]


def test_every_frame_of_an_rtsp_stream_gets_its_record_with_the_files_answers(
    clip: Path, tmp_path: Path, procs: list[Proc]
) -> None:
    port = free_port()
    procs.append(rtsp_server(clip, port, tmp_path / "server.log"))
    # fps 0: every frame processed, none dropped for a busy model; reconnect off: the end of
    # the stream is the end of the run.
    live = tmp_path / "rtsp.jsonl"
    cfg = sensor_config(
        tmp_path / "rtsp.yaml", f"rtsp://127.0.0.1:{port}/clip", live, "  fps: 0\n  reconnect: {enabled: false}\n"
    )
    run = subprocess.run(ivs("run", "--config", str(cfg), "-q"), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    filed = tmp_path / "file.jsonl"
    cfg = sensor_config(tmp_path / "file.yaml", str(clip), filed, "  fps: 0\n")
    run = subprocess.run(ivs("run", "--config", str(cfg), "-q"), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]

    over_rtsp = [m for m in lines(live) if m["schema"] == "ivs.frame/1"]
    from_file = [m for m in lines(filed) if m["schema"] == "ivs.frame/1"]
    assert [m["frame"] for m in over_rtsp] == list(range(795)), "a record for each of the 795 frames, in order"
    assert [m["frame"] for m in from_file] == list(range(795))
    assert all(m["dropped"] == 0 for m in over_rtsp) and over_rtsp[-1]["dropped_total"] == 0
    assert (over_rtsp[0]["width"], over_rtsp[0]["height"], over_rtsp[0]["source"]) == (
        384,
        288,
        f"rtsp://127.0.0.1:{port}/clip",
    )
    # RTP carries the clip's timestamps: 1/40 s apart from the first.
    start = over_rtsp[0]["pts"]
    assert [round(m["pts"] - start, 3) for m in over_rtsp] == [round(i / FPS, 3) for i in range(795)]
    # The stream is the file's own bitstream, not re-encoded: the same frames, the same answers.
    assert [m["detections"] for m in over_rtsp] == [m["detections"] for m in from_file]
    assert sum(len(m["detections"]) for m in over_rtsp) > 795, "people walk through the street"


def test_the_server_going_away_and_back_gives_a_reconnect_and_one_gap(
    clip: Path, tmp_path: Path, procs: list[Proc]
) -> None:
    port = free_port()
    server = rtsp_server(clip, port, tmp_path / "server.log")
    procs.append(server)
    out = tmp_path / "out.jsonl"
    reconnect = "  reconnect: {first_s: 0.3, max_s: 1}\n"
    cfg = sensor_config(tmp_path / "s.yaml", f"rtsp://127.0.0.1:{port}/clip", out, reconnect, model="classifier")
    sensor = Proc(ivs("-v", "run", "--config", str(cfg), "-q"), tmp_path / "sensor.log")
    procs.append(sensor)
    wait_for(lambda: len(lines(out)) >= 40, timeout=60, what="records before the server goes", procs=[sensor.proc])

    server.kill9()  # the camera's RTSP server dies: the connection drops
    # It comes back after the sensor tried, and failed, to reopen it at least twice.
    wait_for(lambda: sensor.output().count("reopen failed") >= 2, what="two failed reopens", procs=[sensor.proc])
    procs.append(rtsp_server(clip, port, tmp_path / "server2.log"))  # the same port
    wait_for(lambda: any(m.get("kind") == "gap" for m in lines(out)), what="the gap event", procs=[sensor.proc])
    n = len(lines(out))
    wait_for(lambda: len(lines(out)) >= n + 40, timeout=60, what="records after the gap", procs=[sensor.proc])
    sensor.proc.send_signal(signal.SIGINT)
    assert sensor.proc.wait(60) == 0, sensor.output()[-3000:]

    messages = lines(out)
    gaps = [m for m in messages if m.get("kind") == "gap"]
    assert len(gaps) == 1, gaps
    (gap,) = gaps
    frames = [m for m in messages if m["schema"] == "ivs.frame/1"]
    indices = [f["frame"] for f in frames]
    assert all(b > a for a, b in pairwise(indices)), "indices continue across the outage, none reused"
    assert len(frames) + frames[-1]["dropped_total"] == indices[-1] + 1, "each index processed or counted dropped"
    assert gap["app"] == "source" and gap["attempts"] >= 3, "two failed attempts, then the one that worked"
    assert gap["duration_s"] >= 0.3 + 0.6, "at least the first two backoff waits"
    assert frames[-1]["frame"] > gap["frame"] >= 40
    pts = [f["pts"] for f in frames]
    assert all(b > a for a, b in pairwise(pts)), "the stream clock continues, though the server restarted at 0"
    assert "stream lost after frame" in sensor.output()


def test_a_stream_that_stalls_with_its_session_up_is_reopened_after_stall_s(
    clip: Path, tmp_path: Path, procs: list[Proc]
) -> None:
    port = free_port()
    # Each session: 60 frames, then nothing, the connection kept up.
    procs.append(rtsp_server(clip, port, tmp_path / "server.log", "--stall-after", "60"))
    out = tmp_path / "out.jsonl"
    source = "  fps: 0\n  stall_s: 2\n  reconnect: {first_s: 0.2}\n"
    cfg = sensor_config(tmp_path / "s.yaml", f"rtsp://127.0.0.1:{port}/clip", out, source, model="classifier")
    sensor = Proc(ivs("run", "--config", str(cfg), "-q"), tmp_path / "sensor.log")
    procs.append(sensor)
    gap = wait_for(
        lambda: next((m for m in lines(out) if m.get("kind") == "gap"), None),
        timeout=90,
        what="the stall to be detected and the stream reopened",
        procs=[sensor.proc],
    )
    sensor.proc.send_signal(signal.SIGINT)
    assert sensor.proc.wait(60) == 0, sensor.output()[-3000:]

    frames = [m for m in lines(out) if m["schema"] == "ivs.frame/1"]
    before = [f for f in frames if f["frame"] < gap["frame"]]
    assert 40 <= len(before) <= 60, "the frames the session sent before it hung"
    assert [f["frame"] for f in frames] == list(range(len(frames))), "fps 0: every frame, across the stall"
    assert gap["reason"] == "stalled: nothing received for 2 s"
    assert gap["duration_s"] >= 2.0, "not given up on before stall_s"
    assert "stream lost after frame" in sensor.output() and "stalled: nothing received for 2 s" in sensor.output()
