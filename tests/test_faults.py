"""Faults survived, each with real processes: a broker and a hub killed and restarted under a
running sensor, a sensor killed and restarted, the outbox's disk filling up, a network camera
that drops and comes back, a damaged video, and malformed MQTT traffic at the hub.

docs/reliability.md lists each fault, what ivs does about it, and the test here that shows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ivs.consumer import Consumer, Message
from ivs.errors import SourceError
from ivs.events import Count, Stop
from ivs.localnet import LocalMosquitto, free_port
from ivs.model import Model
from ivs.mqtt_client import MqttSettings
from ivs.outbox import Outbox
from ivs.sensor import Sensor
from ivs.sinks.mqtt import MqttSink
from ivs.sources.camera import CameraSource
from ivs.sources.reconnect import Outages, Reconnect, reopen
from ivs.sources.synthetic import SyntheticSource
from ivs.sources.video import VideoSource
from tests.processes import Proc, ivs
from tests.stream_server import make_clip
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent


def sensor_yaml(path: Path, sensor: str, sinks: str, source: str = "synthetic:160x120@20", extra: str = "") -> Path:
    path.write_text(
        f"id: {sensor}\nsource:\n  url: '{source}'\nmodel:\n  name: classifier\nframes: true\n{extra}sinks:\n{sinks}"
    )
    return path


def read_only(db: Path) -> sqlite3.Connection:
    """A read-only look at a database another process is writing (WAL: readers never block it)."""
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def outbox_state(db: Path) -> tuple[list[int], int]:
    """(the seqs waiting in an outbox, its last seq handed out)."""
    if not db.exists():
        return [], 0
    with contextlib.closing(read_only(db)) as c:
        try:
            waiting = [int(r[0]) for r in c.execute("SELECT seq FROM outbox ORDER BY seq")]
            last = int(c.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])
        except sqlite3.OperationalError:  # the sensor is still creating it
            return [], 0
    return waiting, last


def stored(db: Path, sensor: str) -> list[tuple[int, str, int]]:
    """(seq, kind, frame) of every message a hub stored for a sensor, by seq."""
    if not db.exists():
        return []
    with contextlib.closing(read_only(db)) as c:
        try:
            rows = c.execute("SELECT seq, kind, frame FROM messages WHERE sensor_id = ? ORDER BY seq", (sensor,))
            return [(int(s), str(k), int(f)) for s, k, f in rows]
        except sqlite3.OperationalError:  # the table is not there yet
            return []


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def listening(port: int) -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def drained(broker: LocalMosquitto, got: Received) -> None:
    """Wait until everything published to the broker so far reached the consumer behind `got`:
    a marker message published now arrives after it (the broker forwards in order), so an
    assertion that something more did *not* arrive is made after the path was shown live."""
    n = len(got.seqs("marker"))
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.publish("ivs/marker/events/count", msgspec.json.encode(count_event("marker", n + 1)), qos=1)
        wait_for(lambda: len(got.seqs("marker")) > n, what="the marker published after the rest")
    finally:
        client.loop_stop()
        client.disconnect()


class Received:
    """What a consumer accepted (after its deduplication by (sensor_id, seq))."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    def __call__(self, message: Message) -> None:
        with self.lock:
            self.messages.append(message)

    def seqs(self, sensor: str) -> list[int]:
        with self.lock:
            return [m.seq for m in self.messages if m.sensor_id == sensor]


# 1. The broker killed and restarted under a running sensor


@pytest.mark.slow
def test_broker_kill_9_and_restart_loses_nothing_and_duplicates_nothing(
    broker: LocalMosquitto, tmp_path: Path, procs: list[Proc]
) -> None:
    got = Received()
    consumer = Consumer("127.0.0.1", broker.port, got, client_id="faults-consumer")  # a persistent session
    try:
        wait_for(consumer.connected.is_set, what="the consumer to connect")
        outbox = tmp_path / "outbox.sqlite"
        sink = f"  - {{type: mqtt, host: 127.0.0.1, port: {broker.port}, outbox: '{outbox}'}}\n"
        cfg = sensor_yaml(tmp_path / "s.yaml", "brk", sink)
        sensor = Proc(ivs("run", "--config", str(cfg), "-q"), tmp_path / "sensor.log")
        procs.append(sensor)
        wait_for(lambda: len(got.seqs("brk")) >= 20, timeout=60, what="messages before the crash")

        assert broker.proc is not None
        os.kill(broker.proc.pid, signal.SIGKILL)  # no goodbye, no saving
        broker.proc.wait(10)
        broker.stop()
        # The sensor kept committing to its outbox while the broker was away.
        wait_for(lambda: len(outbox_state(outbox)[0]) >= 20, timeout=60, what="a backlog", procs=[sensor.proc])
        before = max(got.seqs("brk"))

        broker.start()  # the same port
        wait_for(lambda: max(got.seqs("brk")) > before + 40, timeout=60, what="traffic after the restart")
        assert sensor.interrupt() == 0, sensor.output()
        waiting, last = outbox_state(outbox)
        assert waiting == [], "a clean stop delivers everything"
        wait_for(lambda: len(got.seqs("brk")) >= last, timeout=30, what=f"all {last} messages")
        drained(broker, got)
        seqs = got.seqs("brk")
        assert sorted(seqs) == list(range(1, last + 1)), "every message arrived, each once after deduplication"
        assert "MQTT connection lost" in sensor.output()
    finally:
        consumer.close()


# 2. The hub killed during HTTP ingest, and 3. the sensor killed and restarted


def start_hub(db: Path, port: int, log: Path, *extra: str) -> Proc:
    """`ivs hub serve` on SQLite (reads open: these tests are about faults, not roles), listening."""
    hub = Proc(ivs("hub", "serve", "--db", f"sqlite:///{db}", "--port", str(port), "--open-read", *extra), log)
    try:
        wait_for(lambda: listening(port), timeout=60, what="the hub to listen", procs=[hub.proc])
    except AssertionError:
        hub.close()
        raise AssertionError(f"the hub did not start: {hub.output()}") from None
    return hub


def device_token(db: Path, name: str) -> str:
    out = subprocess.run(ivs("hub", "device", "add", name, "--db", f"sqlite:///{db}"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("token ", 1)[1].split()[0]


def http_sink(port: int, outbox: Path) -> str:
    return (
        f"  - {{type: http, url: 'http://127.0.0.1:{port}/api/v1/ingest', token_env: IVS_HUB_TOKEN, "
        f"outbox: '{outbox}', batch_wait_s: 0.1}}\n"
    )


@pytest.mark.slow
def test_hub_kill_9_during_ingest_and_restart_stores_every_message_once(tmp_path: Path, procs: list[Proc]) -> None:
    db, port, outbox = tmp_path / "hub.sqlite", free_port(), tmp_path / "outbox.sqlite"
    token = device_token(db, "cam-h")
    hub = start_hub(db, port, tmp_path / "hub.log")
    procs.append(hub)
    cfg = sensor_yaml(tmp_path / "s.yaml", "cam-h", http_sink(port, outbox))
    sensor = Proc(ivs("run", "--config", str(cfg), "-q"), tmp_path / "sensor.log", env={"IVS_HUB_TOKEN": token})
    procs.append(sensor)
    wait_for(lambda: len(stored(db, "cam-h")) >= 30, timeout=60, what="messages stored before the crash")

    hub.kill9()  # mid-stream: batches in flight are never answered
    at_crash = len(stored(db, "cam-h"))
    # The sensor sees the hub gone and keeps committing to its outbox meanwhile.
    wait_for(lambda: "no answer" in sensor.output(), timeout=30, what="the hub's absence noticed", procs=[sensor.proc])
    wait_for(lambda: len(outbox_state(outbox)[0]) >= 20, timeout=60, what="a backlog", procs=[sensor.proc])
    hub = start_hub(db, port, tmp_path / "hub2.log")  # the same port and database
    procs.append(hub)
    wait_for(lambda: len(stored(db, "cam-h")) > at_crash + 40, timeout=60, what="ingest after the restart")
    assert sensor.interrupt() == 0, sensor.output()

    waiting, last = outbox_state(outbox)
    assert waiting == [], "every message was acknowledged by the hub"
    rows = stored(db, "cam-h")
    assert [seq for seq, _, _ in rows] == list(range(1, last + 1)), "every message stored, each exactly once"
    assert "no answer" in sensor.output(), "the sensor saw the hub go away"


@pytest.mark.slow
def test_sensor_kill_9_keeps_its_outbox_and_continues_its_sequence(tmp_path: Path, procs: list[Proc]) -> None:
    db, port, outbox = tmp_path / "hub.sqlite", free_port(), tmp_path / "outbox.sqlite"
    token = device_token(db, "cam-k")
    cfg = sensor_yaml(tmp_path / "s.yaml", "cam-k", http_sink(port, outbox))
    env = {"IVS_HUB_TOKEN": token}
    # The hub is not up yet: everything the first run produces waits in its outbox.
    first = Proc(ivs("run", "--config", str(cfg), "-q"), tmp_path / "first.log", env=env)
    procs.append(first)
    wait_for(lambda: len(outbox_state(outbox)[0]) >= 40, timeout=60, what="a backlog")
    first.kill9()
    committed, last_before = outbox_state(outbox)
    assert committed == list(range(1, last_before + 1)), "the outbox holds every message of the first run"

    procs.append(start_hub(db, port, tmp_path / "hub.log"))
    second = Proc(ivs("run", "--config", str(cfg), "-q"), tmp_path / "second.log", env=env)
    procs.append(second)
    wait_for(lambda: len(stored(db, "cam-k")) >= last_before + 40, timeout=90, what="the backlog and new messages")
    assert second.interrupt() == 0, second.output()

    waiting, last = outbox_state(outbox)
    assert waiting == []
    rows = stored(db, "cam-k")
    seqs = [seq for seq, _, _ in rows]
    assert set(committed) <= set(seqs), "what was committed before the kill was delivered after the restart"
    assert seqs == list(range(1, last + 1)), "nothing lost, nothing stored twice"
    frame_of = {seq: frame for seq, kind, frame in rows if kind == "frame"}
    # The second run starts at frame 0 with the seq after the first run's last: no seq reused.
    assert frame_of[last_before + 1] == 0
    assert all(frame_of[s] > 0 for s in range(2, last_before + 1) if s in frame_of)


# 4. The outbox's disk fills up


@pytest.fixture()
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB filesystem (tmpfs) to fill up. Mounting needs root with CAP_SYS_ADMIN (CI
    runs as root); where that is refused, the test is skipped and the max_page_count test below
    still takes SQLite through the same "database or disk is full" path."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): test_full_outbox_database_... covers it")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path) -> Path:
    """Write a file until the filesystem has no space left."""
    filler = mnt / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    # the last partial block may still fit: take it too
    with contextlib.suppress(OSError), filler.open("ab") as f:
        while True:
            f.write(b"\0" * 512)
            f.flush()
    return filler


@pytest.mark.slow
def test_disk_full_under_the_outbox_is_said_counted_and_recovered_from(
    broker: LocalMosquitto, small_fs: Path, tmp_path: Path, procs: list[Proc]
) -> None:
    got = Received()
    consumer = Consumer("127.0.0.1", broker.port, got)
    try:
        wait_for(consumer.connected.is_set, what="the consumer to connect")
        outbox, metrics_port = small_fs / "outbox.sqlite", free_port()
        sink = f"  - {{type: mqtt, host: 127.0.0.1, port: {broker.port}, outbox: '{outbox}'}}\n"
        cfg = sensor_yaml(tmp_path / "s.yaml", "full", sink)
        sensor = Proc(
            ivs("run", "--config", str(cfg), "-q", "--metrics-port", str(metrics_port)), tmp_path / "sensor.log"
        )
        procs.append(sensor)
        wait_for(lambda: len(got.seqs("full")) >= 20, timeout=60, what="messages before the disk fills")

        filler = fill(small_fs)
        lost = "ivs_sensor_outbox_write_failures_total"
        wait_for(lambda: metric(scrape(metrics_port), lost) >= 20, timeout=30, what="failed writes to be counted")
        assert sensor.alive(), sensor.output()
        assert "database or disk is full" in sensor.output()

        filler.unlink()  # space returns
        seen = max(got.seqs("full"))
        wait_for(lambda: max(got.seqs("full")) > seen + 40, timeout=30, what="delivery after space returned")
        failures = metric(scrape(metrics_port), lost)
        assert sensor.interrupt() == 0, sensor.output()
        log = " ".join(sensor.output().split())
        assert "cannot store a message (database or disk is full): expected a writable file with free space" in log

        with contextlib.closing(read_only(outbox)) as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        waiting, last = outbox_state(outbox)
        assert waiting == []
        wait_for(lambda: len(got.seqs("full")) >= last - failures, timeout=20, what="every committed message")
        drained(broker, got)
        seqs = set(got.seqs("full"))
        missing = set(range(1, last + 1)) - seqs
        # Exactly the messages that could not be committed are missing, and they were counted:
        # everything committed, before and after the disk was full, arrived.
        assert len(missing) == failures > 0
    finally:
        consumer.close()


def test_full_outbox_database_is_survived_in_process(broker: LocalMosquitto, tmp_path: Path, classifier: Model) -> None:
    """The same SQLITE_FULL path without mounting anything: SQLite's max_page_count caps the
    outbox's file, so this runs wherever the tests run. The broker is away meanwhile, as when a
    long outage is what filled the disk: the backlog can only grow."""
    got = Received()
    consumer = Consumer("127.0.0.1", broker.port, got, client_id="capped-consumer")
    wait_for(consumer.connected.is_set, what="the consumer to connect")
    box = Outbox(tmp_path / "outbox.sqlite")
    sink = MqttSink("capped", box, MqttSettings(port=broker.port))
    db = box._db  # the outbox's own connection: max_page_count is per connection

    def on_record(record: Any, det: Any) -> None:
        if record.frame == 10:
            wait_for(lambda: box.depth() == 0, what="the first messages delivered")
            broker.stop()
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages}")  # no page more: "full" once the free space is used
        if record.frame == 60:
            db.execute("PRAGMA max_page_count = 1000000")  # space returns
            broker.start()

    sensor = Sensor(SyntheticSource(160, 120, frames=80), classifier, [sink], fps=0, sensor_id="capped",
                    on_record=on_record)  # fmt: skip
    sensor.run()  # closes the sink: waits for the outbox to empty
    try:
        lost = sensor.messages_lost.get(0, 0) + sink.lost  # lost in the sensor's loop or the sink's thread
        assert lost > 0, "the capped outbox refused messages"
        assert box._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert box.depth() == 0
        last = box.last_seq()
        wait_for(lambda: len(got.seqs("capped")) >= last - lost, what="every committed message")
        drained(broker, got)
        missing = set(range(1, last + 1)) - set(got.seqs("capped"))
        assert len(missing) == lost
        assert min(missing) > 11 and max(missing) <= 61, "only messages of the full window are missing"
    finally:
        consumer.close()
        box.close()


@pytest.fixture(scope="module")
def classifier() -> Iterator[Model]:
    from ivs.model import load_model

    model = load_model("classifier", runtime="onnxruntime")
    yield model
    model.close()


# 5. A network camera that drops and comes back


def test_backoff_is_exponential_bounded_and_configurable() -> None:
    assert list(islice(Reconnect(first_s=0.5, max_s=4.0).delays(), 7)) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert list(islice(Reconnect(first_s=1.0, max_s=9.0, factor=3.0).delays(), 4)) == [1.0, 3.0, 9.0, 9.0]
    with pytest.raises(Exception, match="expected 0 < first_s <= max_s"):
        Reconnect(first_s=2.0, max_s=1.0)
    # The schedule on a clock that only the waits advance: exact, whatever the machine's load.
    now = [0.0]

    class Waits(Outages):
        def wait(self, seconds: float) -> bool:
            now[0] += seconds
            return False

    calls: list[float] = []

    def never() -> None:
        calls.append(now[0])
        return None

    policy = Reconnect(first_s=0.05, max_s=0.2, give_up_s=0.8)
    assert reopen(never, policy, Waits(), "test", clock=lambda: now[0]) is None
    assert calls == pytest.approx([0.05, 0.15, 0.35, 0.55, 0.75, 0.8]), "waits double up to max_s"
    assert calls[-1] == pytest.approx(0.8), "and it gave up at give_up_s, with a last attempt then"
    # The real clock too, with a margin of whole seconds: it gives up, it does not hang.
    t0 = time.monotonic()
    assert reopen(never, Reconnect(first_s=0.05, max_s=0.2, give_up_s=0.8), Outages(), "test") is None
    assert 0.8 <= time.monotonic() - t0 < 5.0


def test_a_stream_that_never_comes_back_gives_up_with_a_clear_error(tmp_path: Path, vtest: Path) -> None:
    clip = make_clip(vtest, tmp_path / "clip.ts", frames=20)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.stream_server", str(clip), str(port), "2"], cwd=ROOT)
    try:
        wait_for(lambda: listening(port), what="the stream server")
        src = VideoSource(f"tcp://127.0.0.1:{port}", reconnect=Reconnect(first_s=0.1, max_s=0.4, give_up_s=1.5))
        server.kill()
        server.wait(10)
        got = []
        with pytest.raises(SourceError, match=r"not back after 1.5 s of reconnecting: expected the stream to return"):
            for f in src.frames():
                got.append(f.index)
        assert got == list(range(len(got))) and len(got) > 0
        assert src.outages.disconnects == 1 and src.outages.take() == []
    finally:
        server.kill()
        server.wait(10)


def test_a_camera_that_drops_is_reopened_and_the_gap_recorded(tmp_path: Path, vtest: Path) -> None:
    """No camera here: a short video file stands in for the device (OpenCV opens both alike), and
    its end is the camera going away; reopening it is the camera coming back."""
    clip = make_clip(vtest, tmp_path / "clip.ts", frames=15)
    cam = CameraSource(0, device=str(clip), reconnect=Reconnect(first_s=0.2, max_s=0.4))
    try:
        indices = [f.index for f in islice(cam.frames(), 40)]
    finally:
        cam.close()
    assert indices == list(range(40)), "frame indices continue across the outage"
    gaps = cam.outages.take()
    assert len(gaps) >= 2 and cam.outages.disconnects == len(gaps)
    assert all(g.end - g.start >= 0.2 and g.attempts == 1 for g in gaps), gaps
    assert all(g.frames_lost == round((g.end - g.start) * cam.fps) - 1 for g in gaps if cam.fps)


@pytest.mark.slow
def test_a_network_stream_that_drops_is_reopened_and_the_gap_reported(
    tmp_path: Path, vtest: Path, procs: list[Proc]
) -> None:
    clip = make_clip(vtest, tmp_path / "clip.ts", frames=600)
    port = free_port()
    serve = [sys.executable, "-m", "tests.stream_server", str(clip), str(port), "60"]
    server = Proc(serve, tmp_path / "server.log")
    procs.append(server)
    wait_for(lambda: listening(port), what="the stream server")
    out = tmp_path / "out.jsonl"
    sensor = Proc(
        ivs("-v", "run", "--source", f"tcp://127.0.0.1:{port}", "--model", "classifier", "--out", str(out), "-q"),
        tmp_path / "sensor.log",
    )
    procs.append(sensor)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []

    wait_for(lambda: len(lines()) >= 20, timeout=60, what="frames before the drop")
    server.kill9()  # the camera's server dies: the connection drops
    # It comes back only after the sensor tried, and failed, to reopen it twice (backoff 0.5 s, 1 s).
    wait_for(
        lambda: sensor.output().count("reopen failed") >= 2, timeout=30, what="two failed reopens", procs=[sensor.proc]
    )
    server = Proc(serve, tmp_path / "server2.log")  # ... and comes back on the same port
    procs.append(server)
    wait_for(lambda: any(m.get("kind") == "gap" for m in lines()), timeout=30, what="the gap event")
    n = len(lines())
    wait_for(lambda: len(lines()) >= n + 20, timeout=30, what="frames after the gap")
    assert sensor.interrupt() == 0, sensor.output()

    messages = lines()
    (gap,) = [m for m in messages if m.get("kind") == "gap"]
    frames = [m for m in messages if m["schema"] == "ivs.frame/1"]
    indices = [f["frame"] for f in frames]
    # Indices continue across the gap: each one was processed or dropped (the model busy), none reused.
    assert all(b > a for a, b in pairwise(indices))
    assert len(frames) + frames[-1]["dropped_total"] == indices[-1] + 1
    assert gap["app"] == "source" and gap["reason"] == "end of stream"
    assert gap["duration_s"] >= 1.5 and gap["end"] - gap["start"] == pytest.approx(gap["duration_s"], abs=0.01)
    assert abs(gap["frames_lost"] - (gap["duration_s"] * 10 - 1)) <= 1, "lost frames at the stream's 10 fps"
    assert gap["attempts"] >= 3, "it took a few attempts, with backoff, while the server was down"
    after = next(f for f in frames if f["frame"] == gap["frame"])
    assert after["time"] == gap["time"] >= gap["end"], "sent with the first frame processed after the outage"
    pts = [f["pts"] for f in frames]
    assert all(b > a for a, b in pairwise(pts)), "the stream clock continues too"
    assert "1 source outages" in " ".join(sensor.output().split())


# 6. A damaged video


def corrupt_copy(vtest: Path, out: Path) -> Path:
    """vtest.avi with 20 KB of garbage written at a third, a half and two thirds of the file."""
    data = bytearray(vtest.read_bytes())
    rng = random.Random(1)
    for at in (len(data) // 3, len(data) // 2, 2 * len(data) // 3):
        data[at : at + 20_000] = bytes(rng.randrange(256) for _ in range(20_000))
    out.write_bytes(bytes(data))
    return out


@pytest.mark.slow
def test_a_video_with_garbage_in_the_middle_plays_to_the_end_and_counts_what_was_skipped(
    vtest: Path, tmp_path: Path
) -> None:
    bad = corrupt_copy(vtest, tmp_path / "damaged.avi")
    out = tmp_path / "out.jsonl"
    cfg = sensor_yaml(tmp_path / "s.yaml", "dmg", f"  - {{type: jsonl, path: '{out}'}}\n", source=str(bad), extra="")
    r = subprocess.run(ivs("run", "--config", str(cfg), "--fps", "0", "-q"), capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    messages = [json.loads(x) for x in out.read_text().splitlines()]
    frames = [m for m in messages if m["schema"] == "ivs.frame/1"]
    ledger = [m for m in messages if m.get("kind") == "ledger"][-1]  # the last: at the end of the video
    assert 700 < len(frames) < 795 and frames[-1]["frame"] == len(frames) - 1, "it kept going to the end"
    assert ledger["frames_skipped"] == 795 - len(frames) > 0, "what the header promised = decoded + skipped"
    assert f"skipped {795 - len(frames)} undecodable" in " ".join(r.stderr.split())


# 7. Malformed MQTT at the hub's ingest


def count_event(sensor: str, seq: int) -> Count:
    return Count(sensor_id=sensor, seq=seq, frame=seq, time=1.7e9 + seq, t_capture_ns=seq, t_source=0.0, app="door",
                 track_id=seq, class_id=0, label="person", direction="in", anchor_from=(0.0, 0.0),
                 anchor_to=(0.0, 1.0), totals={"in": {"person": seq}})  # fmt: skip


def test_the_hubs_mqtt_ingest_rejects_and_counts_malformed_traffic_and_keeps_going(
    broker: LocalMosquitto, tmp_path: Path, procs: list[Proc]
) -> None:
    db, port = tmp_path / "hub.sqlite", free_port()
    hub = start_hub(db, port, tmp_path / "hub.log", "--mqtt", f"127.0.0.1:{broker.port}")
    procs.append(hub)
    pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        enc = msgspec.json.encode
        # the hub subscribes once its MQTT client is up: send a first good message until it is stored
        wait_for(
            lambda: pub.publish("ivs/cam-m/events/count", enc(count_event("cam-m", 1)), qos=1) and stored(db, "cam-m"),
            timeout=30,
            what="the hub's subscription",
        )
        stop = Stop(sensor_id="cam-m", seq=3, frame=3, time=1.7e9, t_capture_ns=3, t_source=0.0, app="cell",
                    objects=1, labels=["person"], boxes=[(1.0, 2.0, 3.0, 4.0)])  # fmt: skip
        bad = [
            ("ivs/cam-m/events/count", b"\x00\xff garbage \x13\x37", "schema"),
            ("ivs/cam-m/events/count", b'{"schema": "ivs.event/1", "kind": "count", "seq": 2}', "schema"),
            (
                "ivs/cam-m/events/count",
                enc({**msgspec.to_builtins(count_event("cam-m", 2)), "schema": "ivs.event/9"}),
                "schema",
            ),
            ("ivs/cam-x/events/count", enc(count_event("cam-m", 2)), "sensor_mismatch"),
            ("ivs/cam-m/events/count", b"[" + b"1," * (3 * 1024 * 1024) + b"1]", "too_large"),
            ("ivs/cam-m/events", enc(stop), "topic"),  # no kind in the topic
            ("ivs/cam-m/events/stop/now", enc(stop), "topic"),  # a level too many
            ("ivs/cam m!/events/stop", enc(stop), "topic"),  # not a sensor name
        ]
        for topic, payload, _ in bad:
            pub.publish(topic, payload, qos=1).wait_for_publish(10)
        pub.publish("ivs/cam-m/events/count", enc(count_event("cam-m", 2)), qos=1).wait_for_publish(10)
        pub.publish("ivs/cam-m/events/stop", enc(stop), qos=1).wait_for_publish(10)
        wait_for(lambda: len(stored(db, "cam-m")) == 3, what="the good messages after the bad ones")

        expected: dict[str, int] = {}
        for _, _, reason in bad:
            expected[reason] = expected.get(reason, 0) + 1
        name = "ivs_hub_messages_rejected_total"

        def rejected() -> dict[str, float]:
            text = scrape(port)
            return {r: metric(text, f'{name}{{reason="{r}"}}') for r in expected}

        wait_for(lambda: rejected() == expected, timeout=10, what=f"rejections {expected}")
        assert [seq for seq, _, _ in stored(db, "cam-m")] == [1, 2, 3]
        assert hub.alive()
    finally:
        pub.loop_stop()
        pub.disconnect()
