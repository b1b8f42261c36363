"""MQTT transport against a real Mosquitto: outages, crashes, last will, malformed input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ivs.consumer import Consumer
from ivs.model import load_model
from ivs.mqtt_client import MqttSettings
from ivs.outbox import Outbox
from ivs.sensor import Sensor
from ivs.sinks.mqtt import MqttSink
from ivs.sources.synthetic import SyntheticSource
from tests.waiting import wait_for


class Received:
    def __init__(self) -> None:
        self.messages: list = []
        self.lock = threading.Lock()

    def __call__(self, message) -> None:
        with self.lock:
            self.messages.append(message)

    def seqs(self, sensor: str) -> list[int]:
        with self.lock:
            return [m.seq for m in self.messages if m.sensor_id == sensor]


@pytest.fixture(scope="module")
def classifier():
    model = load_model("classifier", runtime="onnxruntime")
    yield model
    model.close()


def test_sensor_to_consumer_round_trip(broker, tmp_path: Path, classifier):
    got = Received()
    consumer = Consumer("127.0.0.1", broker.port, got)
    wait_for(consumer.connected.is_set, what="consumer connected")
    sink = MqttSink("cam1", Outbox(tmp_path / "o.sqlite"), MqttSettings(port=broker.port))
    Sensor(SyntheticSource(160, 120, frames=20), classifier, [sink], fps=0, sensor_id="cam1").run()
    wait_for(lambda: len(got.seqs("cam1")) == 20, what="20 messages")
    assert got.seqs("cam1") == list(range(1, 21))
    assert sink.outbox.depth() == 0  # all acknowledged
    consumer.close()


@pytest.mark.slow
def test_broker_outage_loses_nothing(broker, tmp_path: Path, classifier):
    got = Received()
    consumer = Consumer("127.0.0.1", broker.port, got, client_id="test-consumer")
    wait_for(consumer.connected.is_set, what="consumer connected")
    box = Outbox(tmp_path / "o.sqlite")
    sink = MqttSink("cam1", box, MqttSettings(port=broker.port))
    sensor = Sensor(SyntheticSource(160, 120, fps=20), classifier, [sink], sensor_id="cam1")
    runner = threading.Thread(target=sensor.run)
    runner.start()
    try:
        wait_for(lambda: len(got.seqs("cam1")) >= 20, what="traffic before the outage")
        broker.stop()
        # the sensor keeps streaming into its outbox while the broker is away
        wait_for(lambda: box.depth() > 50 and sensor.stats.frames_processed > 200, timeout=60, what="a backlog")
        assert not sink.connected.is_set()
        broker.start()
        wait_for(lambda: box.depth() < 5, timeout=60, what="the backlog to drain")
    finally:
        sensor.stop()
        runner.join(timeout=30)
    sink.close()
    total = sensor.stats.frames_processed
    wait_for(lambda: len(got.seqs("cam1")) >= total, timeout=60, what=f"all {total} messages")
    assert got.seqs("cam1") == list(range(1, total + 1))  # every one, once, in order
    consumer.close()


def sensor_config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "sensor.yaml"
    cfg.write_text(
        f"""id: crashy
source:
  url: synthetic:160x120@20
model:
  name: classifier
frames: true
sinks:
  - type: mqtt
    host: 127.0.0.1
    port: {port}
    outbox: {tmp_path / "outbox.sqlite"}
"""
    )
    return cfg


def availability(port: int, sensor: str) -> list[str]:
    """What a new subscriber gets on the sensor's availability topic (the retained value)."""
    seen: list[str] = []
    markers: list[bytes] = []
    marker = f"ivs/{sensor}/availability-marker"
    subacked = threading.Event()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    c.on_message = lambda cl, ud, m: markers.append(m.payload) if m.topic == marker else seen.append(m.payload.decode())
    c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe([(f"ivs/{sensor}/availability", 1), (marker, 1)])
    c.on_subscribe = lambda cl, ud, mid, rcs, pr: subacked.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    # The retained value is queued at the SUBACK, so it arrives before a marker published after it.
    wait_for(subacked.is_set, what="the SUBACK")
    c.publish(marker, b"x", qos=1)
    wait_for(lambda: markers, what="the marker after the retained availability")
    c.loop_stop()
    c.disconnect()
    return seen


@pytest.mark.slow
def test_kill_9_loses_nothing_seq_continues_and_last_will_says_offline(broker, tmp_path: Path):
    got = Received()
    consumer = Consumer("127.0.0.1", broker.port, got, client_id="crash-consumer")
    wait_for(consumer.connected.is_set, what="consumer connected")
    cfg = sensor_config(tmp_path, broker.port)
    cmd = [sys.executable, "-m", "ivs", "run", "--config", str(cfg), "-q"]
    first = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    wait_for(lambda: len(got.seqs("crashy")) >= 30, timeout=60, what="the first run's messages")
    assert availability(broker.port, "crashy")[-1] == "online"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    wait_for(lambda: availability(broker.port, "crashy")[-1:] == ["offline"], timeout=30, what="the last will")
    before = max(got.seqs("crashy"))
    pending = [p.seq for p in Outbox(tmp_path / "outbox.sqlite").pending(limit=100000)]

    second = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    wait_for(lambda: max(got.seqs("crashy")) >= before + 40, timeout=60, what="the second run's messages")
    second.send_signal(signal.SIGINT)
    second.communicate(timeout=60)
    assert second.returncode == 0
    wait_for(lambda: Outbox(tmp_path / "outbox.sqlite").depth() == 0, timeout=30, what="outbox empty")
    last = Outbox(tmp_path / "outbox.sqlite").last_seq()
    wait_for(lambda: max(got.seqs("crashy")) >= last, timeout=30, what=f"message {last}, the last sent")
    seqs = got.seqs("crashy")
    # Nothing lost: every seq from 1 to the last, once, in order; what was waiting in the
    # outbox at the crash arrived after the restart; the second run continued the sequence.
    assert seqs == list(range(1, max(seqs) + 1))
    assert set(pending) <= set(seqs)
    frames = [m for m in got.messages if m.sensor_id == "crashy"]
    restart = next(i for i in range(1, len(frames)) if frames[i].frame < frames[i - 1].frame)
    assert frames[restart].seq > before - len(pending)
    assert availability(broker.port, "crashy")[-1] == "offline"  # a clean stop says so too
    consumer.close()


def test_malformed_payloads_are_rejected_with_a_reason_and_counted(broker):
    got = Received()
    consumer = Consumer("127.0.0.1", broker.port, got)
    wait_for(consumer.connected.is_set, what="consumer connected")
    pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    good = {
        "kind": "stop", "schema": "ivs.event/1", "sensor_id": "s9", "seq": 1, "frame": 3, "time": 1.0,
        "t_capture_ns": 5, "t_source": 0.3, "app": "cell", "objects": 1, "labels": ["person"], "boxes": [[1, 2, 3, 4]],
    }  # fmt: skip
    bad_type = dict(good, seq="one")
    other_sensor = dict(good, sensor_id="s8", seq=2)
    for payload in [
        b"not json",
        json.dumps(bad_type).encode(),
        b'{"kind": "teleport"}',
        json.dumps(other_sensor).encode(),
    ]:
        pub.publish("ivs/s9/events/stop", payload, qos=1).wait_for_publish(5)
    pub.publish("ivs/s9/events/stop", json.dumps(good).encode(), qos=1).wait_for_publish(5)
    wait_for(lambda: len(got.messages) == 1, what="the good message")
    assert sum(consumer.rejected.values()) == 4
    reasons = " | ".join(consumer.rejected)
    assert "malformed payload" in reasons and "Expected `int`, got `str` - at `$.seq`" in reasons
    assert "does not match the topic's 's9'" in reasons
    assert got.messages[0].seq == 1 and type(got.messages[0]).__name__ == "Stop"
    pub.loop_stop()
    consumer.close()


def test_messages_written_just_before_close_are_committed_and_kept(tmp_path: Path):
    """`write` queues and the sink's sender commits: what was written right before `close`,
    with no broker to take it, is on disk for the next run, in order, none lost."""
    from ivs.events import Stop
    from ivs.localnet import free_port

    box = Outbox(tmp_path / "o.sqlite")
    sink = MqttSink("cam9", box, MqttSettings(port=free_port()))  # nothing listens there
    for seq in range(1, 51):
        sink.write(
            Stop(
                sensor_id="cam9", seq=seq, frame=seq, time=time.time(), t_capture_ns=time.monotonic_ns(),
                t_source=0.0, app="cell", objects=1, labels=["person"], boxes=[(1.0, 2.0, 3.0, 4.0)],
            )
        )  # fmt: skip
    assert not sink.flush(timeout=0.3)  # not acknowledged: no broker
    sink.close(timeout=0.1)
    assert sink.lost == 0 and sink.published == 0
    box.close()
    again = Outbox(tmp_path / "o.sqlite")
    assert [p.seq for p in again.pending(limit=100)] == list(range(1, 51)) and again.last_seq() == 50
    again.close()


def test_normal_synchronous_outbox_keeps_messages_across_reopen(tmp_path: Path):
    box = Outbox(tmp_path / "o.sqlite", synchronous="normal")
    assert box.put_many([("t", b"a", None), ("t", b"b", None)]) == [1, 2]
    assert box.ack([1]) == 1
    box.close()
    again = Outbox(tmp_path / "o.sqlite")
    assert [(p.seq, p.payload) for p in again.pending()] == [(2, b"b")]
    again.close()
    with pytest.raises(Exception, match="expected 'full' or 'normal'"):
        Outbox(tmp_path / "x.sqlite", synchronous="off")  # type: ignore[arg-type]
