"""Home Assistant MQTT discovery against a real Mosquitto: retained configs, states from events."""

from __future__ import annotations

import json
import re
import sys
import threading
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ivs.apps.heatmap import HeatmapGrid
from ivs.apps.line import LineCounter
from ivs.apps.mask import MaskCheck
from ivs.apps.safety import SafetyZone
from ivs.apps.zone import Zone
from ivs.events import Clear, Count, MaskPing, Stop, ZoneEnter, ZoneLeave
from ivs.mqtt_client import MqttSettings
from ivs.outbox import Outbox
from ivs.sinks.homeassistant import HomeAssistantSink, discovery_messages, slug
from ivs.sinks.mqtt import MqttSink
from tests.waiting import wait_for

SQUARE = np.array([[0, 0], [100, 0], [100, 100], [0, 100]], dtype=np.float32)


class Subscriber:
    """Every message on some topic filters, in order, by topic."""

    def __init__(self, port: int, *filters: str) -> None:
        self.messages: dict[str, list[bytes]] = {}
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        c.on_message = self._on_message
        c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe([(f, 1) for f in filters])
        c.on_subscribe = lambda cl, ud, mid, rcs, pr: self.subscribed.set()
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        wait_for(self.subscribed.is_set, what="subscribed")

    def _on_message(self, client, userdata, m) -> None:
        with self.lock:
            self.messages.setdefault(m.topic, []).append(m.payload)

    def settle(self, marker_topic: str) -> None:
        """Wait until everything the broker had queued for us has arrived.

        A marker published now, on a topic our filters match, is delivered after the retained
        messages and everything published before it: once it is here, nothing earlier can
        still come. (What comes later is not the test's concern.) The marker is then forgotten."""
        self.client.publish(marker_topic, b"marker", qos=1).wait_for_publish(10)
        wait_for(lambda: marker_topic in self.topics(), what=f"the marker on {marker_topic}")
        with self.lock:
            del self.messages[marker_topic]

    def values(self, topic: str) -> list[str]:
        with self.lock:
            return [p.decode() for p in self.messages.get(topic, [])]

    def last(self, topic: str) -> str | None:
        v = self.values(topic)
        return v[-1] if v else None

    def topics(self) -> set[str]:
        with self.lock:
            return set(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def apps() -> list:
    return [
        Zone("door", SQUARE),
        SafetyZone("Robot Cell", SQUARE),
        LineCounter("gate", (0.0, 0.0), (100.0, 0.0)),
        MaskCheck("entrance"),
        HeatmapGrid("heat", cols=4, rows=3),
    ]


def fields(app: str, seq: int) -> dict:
    return {
        "sensor_id": "cam1",
        "seq": seq,
        "frame": seq,
        "time": 1.0 + seq,
        "t_capture_ns": seq,
        "t_source": 0.1 * seq,
        "app": app,
    }


EXPECTED_CONFIGS = {
    "homeassistant/sensor/cam1/door_occupancy/config": ("ivs/cam1/ha/door/occupancy", "door occupancy"),
    "homeassistant/binary_sensor/cam1/door_occupied/config": ("ivs/cam1/ha/door/occupied", "door occupied"),
    "homeassistant/binary_sensor/cam1/robot_cell_stop/config": ("ivs/cam1/ha/robot_cell/stop", "Robot Cell stop"),
    "homeassistant/sensor/cam1/gate_count_in/config": ("ivs/cam1/ha/gate/count_in", "gate count in"),
    "homeassistant/sensor/cam1/gate_count_out/config": ("ivs/cam1/ha/gate/count_out", "gate count out"),
    "homeassistant/sensor/cam1/entrance_masks/config": ("ivs/cam1/ha/entrance/masks", "entrance masks"),
    "homeassistant/sensor/cam1/entrance_no_masks/config": ("ivs/cam1/ha/entrance/no_masks", "entrance no masks"),
}


def test_discovery_configs_and_initial_states_are_retained(broker):
    sink = HomeAssistantSink("cam1", apps(), MqttSettings(port=broker.port), model_name="person-int8")
    assert sink.flush(10), "configs not acknowledged"
    # Subscribing afterwards: all of it must come back retained.
    sub = Subscriber(broker.port, "homeassistant/#", "ivs/cam1/ha/#")
    states = {t for t, _ in EXPECTED_CONFIGS.values()}
    wait_for(lambda: sub.topics() >= set(EXPECTED_CONFIGS) | states, what="retained configs and states")
    sub.settle("ivs/cam1/ha/test-marker")
    assert sub.topics() == set(EXPECTED_CONFIGS) | states  # the heatmap has no entity

    unique_ids = set()
    for topic, (state_topic, name) in EXPECTED_CONFIGS.items():
        [payload] = sub.values(topic)
        config = json.loads(payload)
        component = topic.split("/")[1]
        assert config["state_topic"] == state_topic and config["name"] == name
        assert config["availability_topic"] == "ivs/cam1/availability"
        assert config["payload_available"] == "online" and config["payload_not_available"] == "offline"
        assert config["device"] == {
            "identifiers": ["ivs_cam1"],
            "name": "cam1",
            "manufacturer": "ivs",
            "model": "person-int8",
        }
        assert re.fullmatch(r"ivs_cam1_[a-z0-9_]+", config["unique_id"])
        unique_ids.add(config["unique_id"])
        if component == "binary_sensor":
            assert config["payload_on"] == "ON" and config["payload_off"] == "OFF"
            assert sub.values(state_topic) == ["OFF"]
        else:
            assert "unit_of_measurement" not in config
            assert sub.values(state_topic) == ["0"]
    assert len(unique_ids) == len(EXPECTED_CONFIGS)

    def config(object_id: str) -> dict:
        [topic] = [t for t in EXPECTED_CONFIGS if t.split("/")[3] == object_id]
        return json.loads(sub.values(topic)[0])

    assert config("door_occupancy")["state_class"] == "measurement"
    assert config("door_occupied")["device_class"] == "occupancy"
    assert config("robot_cell_stop")["device_class"] == "safety"
    for object_id in ("gate_count_in", "gate_count_out", "entrance_masks", "entrance_no_masks"):
        assert config(object_id)["state_class"] == "total_increasing"
    sub.close()
    sink.close()


def test_events_drive_the_state_topics(broker):
    sink = HomeAssistantSink("cam1", apps(), MqttSettings(port=broker.port))
    assert sink.flush(10)
    sub = Subscriber(broker.port, "ivs/cam1/ha/#")
    wait_for(lambda: sub.last("ivs/cam1/ha/gate/count_out") == "0", what="initial states")

    sink.write(ZoneEnter(**fields("door", 1), track_id=4, label="person", anchor=(5.0, 5.0), occupancy=2))
    sink.write(Stop(**fields("Robot Cell", 2), objects=1, labels=["person"], boxes=[(1.0, 2.0, 3.0, 4.0)]))
    wait_for(lambda: sub.last("ivs/cam1/ha/robot_cell/stop") == "ON", what="stop -> ON")
    sink.write(Clear(**fields("Robot Cell", 3), empty_frames=10, stopped_s=1.5))
    sink.write(
        Count(
            **fields("gate", 4),
            track_id=7,
            class_id=0,
            label="person",
            direction="in",
            anchor_from=(1.0, 1.0),
            anchor_to=(1.0, -1.0),
            totals={"in": {"person": 3, "car": 2}, "out": {"person": 1}},
        )
    )
    sink.write(
        MaskPing(**fields("entrance", 5), track_id=9, mask=False, score=0.9, frames=4, totals={"mask": 6, "no_mask": 1})
    )
    # Events of an app without entities, or of no app this sink knows, change nothing.
    sink.write(ZoneEnter(**fields("elsewhere", 6), track_id=1, label="person", anchor=(5.0, 5.0), occupancy=9))
    sink.write(ZoneLeave(**fields("Robot Cell", 7), track_id=1, label="person", dwell_s=1.0, occupancy=5))
    assert sink.flush(10)
    wait_for(lambda: sub.last("ivs/cam1/ha/entrance/no_masks") == "1", what="mask totals")

    assert sub.values("ivs/cam1/ha/door/occupancy") == ["0", "2"]
    assert sub.values("ivs/cam1/ha/door/occupied") == ["OFF", "ON"]
    assert sub.values("ivs/cam1/ha/robot_cell/stop") == ["OFF", "ON", "OFF"]
    assert sub.values("ivs/cam1/ha/gate/count_in") == ["0", "5"]
    assert sub.values("ivs/cam1/ha/gate/count_out") == ["0", "1"]
    assert sub.values("ivs/cam1/ha/entrance/masks") == ["0", "6"]

    sink.write(ZoneLeave(**fields("door", 8), track_id=4, label="person", dwell_s=2.0, occupancy=0))
    wait_for(lambda: sub.last("ivs/cam1/ha/door/occupied") == "OFF", what="zone empty -> OFF")
    assert sub.last("ivs/cam1/ha/door/occupancy") == "0"
    sub.close()
    sink.close()

    # What a new subscriber (Home Assistant restarting) gets: the latest states, retained.
    late = Subscriber(broker.port, "ivs/cam1/ha/#")
    wait_for(lambda: len(late.topics()) == 7, what="retained states")
    late.settle("ivs/cam1/ha/test-marker")
    assert {t: late.values(t) for t in late.topics()} == {
        "ivs/cam1/ha/door/occupancy": ["0"],
        "ivs/cam1/ha/door/occupied": ["OFF"],
        "ivs/cam1/ha/robot_cell/stop": ["OFF"],
        "ivs/cam1/ha/gate/count_in": ["5"],
        "ivs/cam1/ha/gate/count_out": ["1"],
        "ivs/cam1/ha/entrance/masks": ["6"],
        "ivs/cam1/ha/entrance/no_masks": ["1"],
    }
    late.close()


def test_a_burst_of_events_while_acknowledgements_arrive_ends_on_the_last_state(broker):
    """Thousands of updates from the sensor's thread while the broker's PUBACKs come back on
    paho's: before one thread did the publishing, the two deadlocked within a few hundred."""
    sink = HomeAssistantSink("cam1", [Zone("door", SQUARE)], MqttSettings(port=broker.port))
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads change hands all the time: the interleaving is found, not waited for
    try:
        assert sink.flush(10)
        writer = threading.Thread(target=lambda: [
            sink.write(ZoneEnter(**fields("door", seq), track_id=seq, label="person", anchor=(5.0, 5.0),
                                 occupancy=seq % 7)) for seq in range(1, 3001)], daemon=True)  # fmt: skip
        writer.start()
        writer.join(60)
    finally:
        sys.setswitchinterval(switch)
    # Stuck, the sink cannot be closed either (paho's thread is in the deadlock): fail, leave it.
    assert not writer.is_alive(), "the writer is stuck: a deadlock with paho's network thread"
    try:
        assert sink.flush(60), "every state acknowledged"
    finally:
        sink.close()
    late = Subscriber(broker.port, "ivs/cam1/ha/#")
    late.settle("ivs/cam1/ha/test-marker")
    assert late.values("ivs/cam1/ha/door/occupancy") == [str(3000 % 7)], "the last value is the one retained"
    late.close()


def test_availability_comes_from_the_mqtt_sink_not_from_this_one(broker, tmp_path: Path):
    ha = HomeAssistantSink("cam1", [Zone("door", SQUARE)], MqttSettings(port=broker.port))
    assert ha.flush(10)
    assert not ha._client._will  # no last will of its own
    ha.close()
    sub = Subscriber(broker.port, "ivs/cam1/availability", "ivs/cam1/test-marker")
    sub.settle("ivs/cam1/test-marker")  # anything retained on availability has arrived by now
    assert sub.values("ivs/cam1/availability") == []  # alone, nothing says online (or offline)

    mqtt_sink = MqttSink("cam1", Outbox(tmp_path / "o.sqlite"), MqttSettings(port=broker.port))
    ha = HomeAssistantSink("cam1", [Zone("door", SQUARE)], MqttSettings(port=broker.port))
    assert ha.flush(10)
    wait_for(lambda: sub.last("ivs/cam1/availability") == "online", what="online")
    assert all(c["availability_topic"] == "ivs/cam1/availability" for _, c in ha.discovery)
    ha.close()
    mqtt_sink.close()
    wait_for(lambda: sub.last("ivs/cam1/availability") == "offline", what="offline")
    sub.close()


def test_state_changed_during_an_outage_is_published_on_reconnect(broker):
    sink = HomeAssistantSink("cam1", [Zone("door", SQUARE)], MqttSettings(port=broker.port))
    assert sink.flush(10)
    broker.stop()
    wait_for(lambda: not sink.connected.is_set(), what="disconnect")
    sink.write(ZoneEnter(**fields("door", 1), track_id=4, label="person", anchor=(5.0, 5.0), occupancy=3))
    broker.start()
    assert sink.flush(20)
    assert sink.connects == 2
    sub = Subscriber(broker.port, "ivs/cam1/ha/#")
    wait_for(lambda: sub.last("ivs/cam1/ha/door/occupied") == "ON", what="state after reconnect")
    assert sub.last("ivs/cam1/ha/door/occupancy") == "3"
    sub.close()
    sink.close()


def test_ids_are_sanitized_and_unique_per_sensor_and_app():
    assert slug("Robot Cell #2") == "robot_cell_2" and slug("--") == "x" and slug("a..b__c") == "a_b_c"
    zones = [Zone("Door A", SQUARE), Zone("door-a", SQUARE), Zone("DOOR A!", SQUARE), SafetyZone("door a", SQUARE)]
    messages = discovery_messages("Cam.1", zones, discovery_prefix="ha")
    topics = [t for t, _ in messages]
    assert len(set(topics)) == len(topics) == 7
    assert "ha/sensor/cam_1/door_a_occupancy/config" in topics
    assert "ha/sensor/cam_1/door_a_2_occupancy/config" in topics
    assert "ha/sensor/cam_1/door_a_3_occupancy/config" in topics
    assert "ha/binary_sensor/cam_1/door_a_4_stop/config" in topics
    for topic, config in messages:
        _, _, node, object_id, _ = topic.split("/")
        assert re.fullmatch(r"[a-z0-9_]+", node) and re.fullmatch(r"[a-z0-9_]+", object_id)
        assert config["unique_id"] == f"ivs_cam_1_{object_id}"
        assert config["state_topic"].startswith("ivs/Cam.1/ha/door_a")
        assert config["availability_topic"] == "ivs/Cam.1/availability"
        assert config["device"]["identifiers"] == ["ivs_Cam.1"]
    assert len({c["unique_id"] for _, c in messages}) == 7
    assert len({c["state_topic"] for _, c in messages}) == 7
    # Another sensor: other unique ids.
    other = discovery_messages("cam2", zones[:1])
    assert other[0][1]["unique_id"] == "ivs_cam2_door_a_occupancy"
