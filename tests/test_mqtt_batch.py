"""Batched MQTT messages (`batch_linger_ms`) against a real Mosquitto: many events in one MQTT
message on ivs/S/batch, each still exactly once by (sensor_id, seq) at a consumer and in the
hub; a stop never waits for the linger; a broker outage loses nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ivs.consumer import Consumer, split_batch
from ivs.events import Stop
from ivs.hub.mqtt_ingest import MqttIngest
from ivs.hub.store import Store
from ivs.mqtt_client import MqttSettings
from ivs.outbox import Outbox
from ivs.sinks.mqtt import MqttSink, batch_payload
from tests.test_hub_mqtt import event
from tests.test_mqtt import Received
from tests.waiting import wait_for


class Topics:
    """Every MQTT message under ivs/<sensor>/ as it arrived: (topic, payload)."""

    def __init__(self, port: int, sensor: str) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_connect = lambda client, *a: client.subscribe(f"ivs/{sensor}/#", qos=1)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.seen.append((msg.topic, bytes(msg.payload)))

    def on(self, suffix: str) -> list[bytes]:
        with self.lock:
            return [p for t, p in self.seen if t.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stop(sensor: str, seq: int) -> Stop:
    t = 1_700_000_000.0 + seq
    return Stop(
        sensor_id=sensor, seq=seq, frame=seq, time=t, t_capture_ns=int(t * 1e9), t_source=0.0,
        app="press", objects=1, labels=["person"], boxes=[(1.0, 2.0, 3.0, 4.0)],
    )  # fmt: skip


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_a_lingering_sink_sends_batches_each_message_once_in_order(broker, tmp_path: Path, encoding: str) -> None:
    topics = Topics(broker.port, "cam1")
    got = Received()
    consumer = Consumer("127.0.0.1", broker.port, got)
    wait_for(lambda: consumer.connected.is_set() and topics.subscribed.is_set(), what="subscribers")
    sink = MqttSink(
        "cam1",
        Outbox(tmp_path / "o.sqlite"),
        MqttSettings(port=broker.port, encoding=encoding),
        batch_linger_s=0.2,
        batch_max=50,
    )
    try:
        wait_for(sink.connected.is_set, what="the sink connected")
        for seq in range(1, 201):
            sink.write(event("cam1", seq))
        wait_for(lambda: len(got.seqs("cam1")) >= 200, what="200 messages")
        assert got.seqs("cam1") == list(range(1, 201))
        assert consumer.duplicates == 0 and not consumer.rejected
        batches = topics.on("/batch")
        assert topics.on("/events/count") == [] and topics.on("/events/zone_enter") == []
        assert 4 <= len(batches) < 200  # at most 50 per batch: at least 4, and far fewer than one each
        assert all(len(split_batch(b)) <= 50 for b in batches)
        assert sum(len(split_batch(b)) for b in batches) == 200
        assert sink.flush(10) and sink.outbox.depth() == 0  # every batch acknowledged and removed
    finally:
        sink.close()
        consumer.close()
        topics.close()


def test_a_stop_does_not_wait_for_the_linger_and_takes_what_is_pending(broker, tmp_path: Path) -> None:
    got = Received()
    consumer = Consumer("127.0.0.1", broker.port, got)
    wait_for(consumer.connected.is_set, what="consumer connected")
    # a linger of ten minutes: without the stop, nothing would arrive within this test
    sink = MqttSink("cam1", Outbox(tmp_path / "o.sqlite"), MqttSettings(port=broker.port), batch_linger_s=600)
    try:
        wait_for(sink.connected.is_set, what="the sink connected")
        sink.write(event("cam1", 1))
        sink.write(event("cam1", 2))
        wait_for(lambda: sink.outbox.depth() == 2, what="two messages committed")
        assert got.seqs("cam1") == []  # held by the linger
        sink.write(stop("cam1", 3))
        wait_for(lambda: got.seqs("cam1") == [1, 2, 3], timeout=30, what="the stop and what was pending before it")
        assert type(got.messages[-1]) is Stop
    finally:
        sink.close()
        consumer.close()


def test_batched_messages_survive_a_broker_outage_once_each(broker, tmp_path: Path) -> None:
    got = Received()
    consumer = Consumer("127.0.0.1", broker.port, got, client_id="batch-consumer")
    wait_for(consumer.connected.is_set, what="consumer connected")
    box = Outbox(tmp_path / "o.sqlite")
    sink = MqttSink("cam1", box, MqttSettings(port=broker.port), batch_linger_s=0.05, batch_max=20)
    try:
        wait_for(sink.connected.is_set, what="the sink connected")
        for seq in range(1, 51):
            sink.write(event("cam1", seq))
        wait_for(lambda: len(got.seqs("cam1")) == 50, what="the first 50")
        broker.stop()
        wait_for(lambda: not sink.connected.is_set(), what="the sink to see the outage")
        for seq in range(51, 151):
            sink.write(event("cam1", seq))
        wait_for(lambda: box.depth() == 100, what="100 kept in the outbox")
        broker.start()
        wait_for(lambda: box.depth() == 0, timeout=60, what="the backlog to drain")
        wait_for(lambda: len(set(got.seqs("cam1"))) == 150, timeout=30, what="all 150")
        assert sorted(set(got.seqs("cam1"))) == list(range(1, 151))
    finally:
        sink.close()
        consumer.close()


def test_the_hub_stores_a_batch_once_and_refuses_only_its_bad_messages(broker, db_url: str) -> None:
    store = Store(db_url)
    worker = MqttIngest(store, "127.0.0.1", broker.port)
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        assert worker.wait_connected(10)
        good = [msgspec.json.encode(event("cam-a", seq)) for seq in range(1, 101)]
        client.publish("ivs/cam-a/batch", batch_payload(good, "json"), qos=1).wait_for_publish(10)
        wait_for(lambda: store.message_count() == 100, what="the batch stored")
        # the same batch again (a resend after a lost PUBACK), with one bad and one foreign message
        bad = [*good[:10], b'{"schema": "ivs.event/1", "kind": "count"}', msgspec.json.encode(event("cam-b", 1))]
        client.publish("ivs/cam-a/batch", batch_payload(bad, "json"), qos=1).wait_for_publish(10)
        client.publish("ivs/cam-a/batch", b"[1, 2", qos=1).wait_for_publish(10)
        wait_for(lambda: sum(worker.rejected.values()) == 3, what="three refusals")
        assert worker.rejected == {"schema": 2, "sensor_mismatch": 1}
        wait_for(lambda: worker.consumer.duplicates == 10, what="the ten resent seen as duplicates")
        assert store.message_count() == 100
        assert {s.sensor_id: s.last_seq for s in store.sensors()} == {"cam-a": 100}
    finally:
        client.disconnect()
        client.loop_stop()
        worker.close()
        store.close()


def test_split_batch_says_what_it_expected() -> None:
    with pytest.raises(msgspec.DecodeError, match="expected a batch"):
        split_batch(b'{"schema": "ivs.event/1"}')
    with pytest.raises(msgspec.DecodeError, match="array of messages"):
        split_batch(b"[1, 2")
    one = msgspec.msgpack.encode(event("c", 1))
    assert split_batch(batch_payload([one] * 17, "msgpack")) == [one] * 17  # an array 16 header
