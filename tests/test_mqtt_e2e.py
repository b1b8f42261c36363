"""A sensor set up only by its YAML file, as a user deploys one, against a real Mosquitto that
wants passwords, and the hub's MQTT ingest: MessagePack on the wire and the same messages stored
and served as JSON, the password from the environment (`password_env`, never in a log), Home
Assistant discovery (`home_assistant: true`), and the retained `state` topic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ivs.hub.mqtt_ingest import MqttIngest
from ivs.hub.store import Store
from tests.broker import Mosquitto
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
FRAMES = 40
SECRET = "s3cret-cam1"


class Subscriber:
    """Every message (retained ones included) on some topic filters, by topic, as the hub user."""

    def __init__(self, port: int, *filters: str) -> None:
        self.messages: dict[str, list[bytes]] = {}
        self.lock = threading.Lock()
        subscribed = threading.Event()
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        c.username_pw_set("hub", "hubpw")
        c.on_message = self._on_message
        c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe([(f, 1) for f in filters])
        c.on_subscribe = lambda cl, ud, mid, rcs, pr: subscribed.set()
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        wait_for(subscribed.is_set, what="the SUBACK")

    def _on_message(self, client: Any, userdata: Any, m: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.setdefault(m.topic, []).append(bytes(m.payload))

    def settle(self, marker: str) -> None:
        """Everything queued for us before now has arrived (a marker published now comes after it)."""
        self.client.publish(marker, b"marker", qos=1).wait_for_publish(10)
        wait_for(lambda: marker in self.topics(), what=f"the marker on {marker}")

    def topics(self) -> set[str]:
        with self.lock:
            return set(self.messages)

    def payloads(self, prefix: str) -> list[bytes]:
        with self.lock:
            return [p for t, ps in self.messages.items() if t.startswith(prefix) for p in ps]

    def last(self, topic: str) -> bytes:
        with self.lock:
            return self.messages[topic][-1]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture()
def secured(tmp_path: Path):
    """Mosquitto with passwords only: cam1 (the sensor) and hub."""
    pw = tmp_path / "passwd"
    for i, (user, password) in enumerate((("cam1", SECRET), ("hub", "hubpw"))):
        create = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", "-b", *create, str(pw), user, password], check=True, capture_output=True)
    pw.chmod(0o600)
    broker = Mosquitto(tmp_path / "b", f"password_file {pw}\n")
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    broker.start()
    yield broker
    broker.stop()


def test_a_yaml_sensor_sends_msgpack_with_home_assistant_and_state_to_the_hub(
    secured: Mosquitto, db_url: str, vtest: Path, tmp_path: Path
) -> None:
    store = Store(db_url)
    worker = MqttIngest(store, "127.0.0.1", secured.port, username="hub", password="hubpw")
    wire = Subscriber(secured.port, "ivs/cam1/#", "homeassistant/#")
    sent = tmp_path / "sent.jsonl"
    config = tmp_path / "cam1.yaml"
    config.write_text(
        f"""id: cam1
source:
  url: '{vtest}'
  fps: 0
  max_frames: {FRAMES}
model:
  name: person
  runtime: onnxruntime
frames: true
apps:
  - {{type: line, name: door, p1: [384, 0], p2: [384, 576]}}
  - {{type: zone, name: shelf, polygon: [[0, 300], [768, 300], [768, 576], [0, 576]]}}
sinks:
  - type: mqtt
    port: {secured.port}
    username: cam1
    password_env: CAM1_MQTT_PASSWORD
    encoding: msgpack
    home_assistant: true
    outbox: '{tmp_path / "outbox.sqlite"}'
  - {{type: jsonl, path: '{sent}'}}
"""
    )
    try:
        assert worker.wait_connected(10)
        run = subprocess.run(
            [sys.executable, "-m", "ivs", "-v", "run", "--config", str(config), "-q"],
            env=os.environ | {"CAM1_MQTT_PASSWORD": SECRET},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert SECRET not in run.stderr + run.stdout, "the password is never logged, even with -v"
        messages = [json.loads(line) for line in sent.read_text().splitlines()]
        assert len([m for m in messages if m["schema"] == "ivs.frame/1"]) == FRAMES
        wire.settle("ivs/cam1/test-marker")

        # On the wire: MessagePack maps, each one of the messages the JSON sink wrote.
        payloads = wire.payloads("ivs/cam1/frames") + wire.payloads("ivs/cam1/events/")
        assert len(payloads) == len(messages) and all(p[:1] != b"{" for p in payloads)
        decoded = sorted((msgspec.msgpack.decode(p) for p in payloads), key=lambda m: m["seq"])
        assert decoded == messages

        # At the hub: every message stored once, served as JSON, equal to what was sent.
        wait_for(lambda: store.message_count() >= len(messages), what="the hub to store every message")
        assert store.message_count() == len(messages)
        stored = [json.loads(p) for p in store.events(sensor="cam1", after_seq=0, limit=10_000)]
        assert stored == messages

        # The retained state: what the sensor ran and did, left at its clean stop; the hub knows the model.
        state = json.loads(wire.last("ivs/cam1/state"))
        assert state["model"] == {"name": "person", "version": "1.0.0", "runtime": "onnxruntime"}
        assert (state["frames"], state["outbox"], state["online"]) == (FRAMES, 0, False)
        app_events = [m for m in messages if m["schema"] == "ivs.event/1" and m["kind"] != "ledger"]
        assert state["events"] == len(app_events) > 0, "the apps' events (the ledger is the sensor's own)"
        assert wire.last("ivs/cam1/availability") == b"offline"
        wait_for(
            lambda: any(s.sensor_id == "cam1" and s.model == "person" and not s.online for s in store.sensors()),
            what="the hub to learn the model from the state topic",
        )

        # Home Assistant: retained discovery for each app's entities, pointing at retained states.
        late = Subscriber(secured.port, "homeassistant/#", "ivs/cam1/#")
        late.settle("ivs/cam1/test-marker-2")
        configs = {t: json.loads(late.last(t)) for t in late.topics() if t.startswith("homeassistant/")}
        assert {
            "homeassistant/sensor/cam1/door_count_in/config",
            "homeassistant/sensor/cam1/door_count_out/config",
            "homeassistant/sensor/cam1/shelf_occupancy/config",
            "homeassistant/binary_sensor/cam1/shelf_occupied/config",
        } <= set(configs)
        for c in configs.values():
            assert c["state_topic"] in late.topics(), f"{c['state_topic']}: a retained state for each entity"
            assert c["availability_topic"] == "ivs/cam1/availability"
        assert json.loads(late.last("ivs/cam1/state"))["frames"] == FRAMES, "the state is retained"
        late.close()
    finally:
        wire.close()
        worker.close()
        store.close()
