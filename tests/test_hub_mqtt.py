"""The hub's MQTT ingest against a real Mosquitto: two workers on one shared subscription split
one stream and store every event exactly once; availability and state reach the sensors table."""

from __future__ import annotations

import json

import msgspec
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ivs.events import Count, ZoneEnter, kind_of
from ivs.hub.metrics import HubMetrics
from ivs.hub.mqtt_ingest import MqttIngest
from ivs.hub.store import Store
from tests.waiting import wait_for

SENSORS = ("cam-a", "cam-b", "cam-c")


def event(sensor: str, seq: int):
    t = 1_700_000_000.0 + seq
    common = {"sensor_id": sensor, "seq": seq, "frame": seq, "time": t, "t_capture_ns": int(t * 1e9), "t_source": 0.0}
    if seq % 2:
        return Count(
            **common,
            app="door",
            track_id=seq,
            class_id=0,
            label="person",
            direction="in",
            anchor_from=(0.0, 0.0),
            anchor_to=(0.0, 1.0),
            totals={"in": {"person": seq}},
        )
    return ZoneEnter(**common, app="shelf", track_id=seq, label="person", anchor=(1.0, 2.0), occupancy=1)


@pytest.fixture()
def publisher(broker):
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


@pytest.fixture()
def store(db_url: str):
    """On SQLite and on PostgreSQL (`db_url`): the tests that use it run on both."""
    s = Store(db_url)
    yield s
    s.close()


def test_two_workers_split_a_stream_and_store_every_event_once(broker, publisher, store: Store) -> None:
    metrics = HubMetrics(store)
    workers = [MqttIngest(store, "127.0.0.1", broker.port, group="hub", metrics=metrics) for _ in range(2)]
    try:
        for w in workers:
            assert w.wait_connected(10), "a worker did not connect and subscribe (SUBACK)"
        infos = []
        for i in range(500):
            sensor, seq = SENSORS[i % 3], i // 3 + 1
            message = event(sensor, seq)
            infos.append(
                publisher.publish(f"ivs/{sensor}/events/{kind_of(message)}", msgspec.json.encode(message), qos=1)
            )
        for info in infos:
            info.wait_for_publish(10)
        wait_for(lambda: store.message_count() >= 500 and all(w.pending() == 0 for w in workers), what="500 stored")
        # exactly 500: the store's key is (sensor_id, seq), so a redelivery can never add a row
        assert store.message_count() == 500
        for n, sensor in enumerate(SENSORS):
            expected = len(range(n, 500, 3))
            seqs = [json.loads(p)["seq"] for p in store.events(sensor=sensor, limit=10_000, after_seq=0)]
            assert seqs == list(range(1, expected + 1)), sensor
        assert sum(w.stored for w in workers) == 500
        assert all(w.stored > 0 for w in workers), [w.stored for w in workers]
        assert sum(w.duplicates for w in workers) == 0
        assert {s.sensor_id: s.last_seq for s in store.sensors()} == {"cam-a": 167, "cam-b": 167, "cam-c": 166}
        assert "ivs_hub_messages_accepted_total 500.0" in metrics.render().decode()

        # a redelivery (the sensor resending after a reconnect) is stored once
        again = event("cam-a", 1)
        publisher.publish("ivs/cam-a/events/count", msgspec.json.encode(again), qos=1).wait_for_publish(10)
        fresh = event("cam-a", 500)
        publisher.publish("ivs/cam-a/events/count", msgspec.json.encode(fresh), qos=1).wait_for_publish(10)
        # the redelivery is seen (counted as a duplicate) and not stored: waited for, not slept on
        wait_for(lambda: store.message_count() == 501, what="the fresh message")
        wait_for(lambda: sum(w.duplicates + w.consumer.duplicates for w in workers) == 1, what="the redelivery seen")
        assert store.message_count() == 501
    finally:
        for w in workers:
            w.close()


def test_rejects_are_counted_and_good_messages_keep_flowing(broker, publisher, store: Store) -> None:
    metrics = HubMetrics(store)
    worker = MqttIngest(store, "127.0.0.1", broker.port, metrics=metrics)
    try:
        assert worker.wait_connected(10), "the worker did not connect and subscribe (SUBACK)"
        publisher.publish("ivs/cam-a/events/count", b"not json", qos=1)
        publisher.publish("ivs/cam-a/events/count", b'{"schema": "ivs.event/1", "kind": "count"}', qos=1)
        publisher.publish("ivs/cam-b/events/count", msgspec.json.encode(event("cam-a", 1)), qos=1)  # wrong topic
        publisher.publish("ivs/cam-a/events/count", msgspec.json.encode(event("cam-a", 2**63)), qos=1)  # too big
        publisher.publish("ivs/cam-a/events/count", msgspec.json.encode(event("cam-a", 1)), qos=1).wait_for_publish(10)
        wait_for(lambda: store.message_count() == 1, what="the good message")
        wait_for(lambda: sum(worker.rejected.values()) == 4, what="4 rejects")
        assert worker.rejected == {"schema": 3, "sensor_mismatch": 1}
        text = metrics.render().decode()
        assert 'ivs_hub_messages_rejected_total{reason="schema"} 3.0' in text
        assert 'ivs_hub_messages_rejected_total{reason="sensor_mismatch"} 1.0' in text
    finally:
        worker.close()


def test_availability_and_state_reach_the_sensors_table(broker, publisher, store: Store) -> None:
    # retained before the hub starts: it learns them on subscribing
    publisher.publish("ivs/cam-a/availability", "online", qos=1, retain=True)
    state = {"sensor_id": "cam-a", "online": True, "outbox": 0, "model": {"name": "person", "version": "3"}}
    publisher.publish("ivs/cam-a/state", json.dumps(state), qos=1, retain=True).wait_for_publish(10)
    metrics = HubMetrics(store)
    worker = MqttIngest(store, "127.0.0.1", broker.port, metrics=metrics)
    try:
        assert worker.wait_connected(10)

        def sensor(name: str):
            return next((s for s in store.sensors() if s.sensor_id == name), None)

        wait_for(lambda: (s := sensor("cam-a")) is not None and s.online and s.model == "person", what="cam-a online")
        a = sensor("cam-a")
        assert a is not None
        assert (a.version, a.last_seen) == ("3", None)  # retained: not "seen" now
        assert "ivs_hub_sensors_online 1.0" in metrics.render().decode()

        publisher.publish("ivs/cam-b/availability", "online", qos=1, retain=True)
        publisher.publish("ivs/cam-b/state", b"{not json", qos=1, retain=True)
        publisher.publish("ivs/cam-b/availability", "maybe", qos=1)
        publisher.publish("ivs/cam-a/availability", "offline", qos=1, retain=True).wait_for_publish(10)
        wait_for(lambda: (s := sensor("cam-a")) is not None and not s.online, what="cam-a offline")
        wait_for(lambda: (s := sensor("cam-b")) is not None and s.online, what="cam-b online")
        a = sensor("cam-a")
        assert a is not None and a.last_seen is not None and a.model == "person"
        assert "ivs_hub_sensors_online 1.0" in metrics.render().decode()
        wait_for(lambda: worker.rejected["schema"] == 1, what="the bad availability counted")
    finally:
        worker.close()
