"""The fleet: the hub pushes a device's desired state over MQTT (a real Mosquitto), the sensor
acts on it at once, with no polling."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ivs.build import RunOptions, build_sensor
from ivs.config import parse
from ivs.hub.mqtt_auth import acl_text
from ivs.hub.mqtt_ingest import MqttIngest
from ivs.hub.store import Store
from ivs.localnet import LocalMosquitto
from ivs.sinks.mqtt import MqttSink
from tests.test_deploy import ADMIN, WAIT_S, Collect, Hub
from tests.waiting import wait_for


def test_a_desired_change_reaches_a_connected_sensor_over_mqtt_without_polling(
    broker: LocalMosquitto, signed: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    ingest = MqttIngest(store, "127.0.0.1", broker.port)
    hub = Hub(store, push_desired=ingest.push_desired)
    try:
        token = store.add_device("cam-p")
        monkeypatch.setenv("IVS_HUB_TOKEN", token)
        assert hub.upload(signed["2.0.0"])[0] == 201
        text = (
            f"id: cam-p\nsource: {{url: 'synthetic:160x120@10'}}\n"
            f"model: {{name: '{signed['1.0.0']}', runtime: onnxruntime}}\nkeyring: '{signed['ring']}'\n"
            f"sinks: [{{type: mqtt, port: {broker.port}, outbox: '{tmp_path / 'outbox.sqlite'}'}}]\n"
            # an hour between polls: within this test only a push can bring the change
            f"deploy: {{hub: '{hub.url}', folder: '{tmp_path / 'deploy'}', interval_s: 3600}}\n"
        )
        config, problems, _ = parse(text)
        assert config is not None, problems
        sink = Collect()
        built = build_sensor(config, RunOptions(watch=False, sinks=[sink], ledger_period_s=None))
        agent = built.agent
        assert agent is not None
        mqtt = next(s for s in built.sensor.sinks if isinstance(s, MqttSink))
        runner = threading.Thread(target=built.sensor.run, daemon=True)
        runner.start()
        try:
            wait_for(lambda: mqtt.connected.is_set() and built.sensor.stats.frames_processed >= 3,
                     WAIT_S, "the sensor running and connected")  # fmt: skip
            wait_for(lambda: hub.deploy_state("cam-p")["status"] == "none", WAIT_S, "no deploy yet")
            t0 = time.monotonic()
            status, _ = hub.call("PUT", "/api/v1/devices/cam-p/desired", ADMIN, {"package": "classifier@2.0.0"})
            assert status == 200
            wait_for(lambda: hub.deploy_state("cam-p")["in_sync"], WAIT_S, "the device in sync with revision 1")
            latency = time.monotonic() - t0
            print(f"desired -> running and reported, pushed over MQTT: {latency * 1e3:.0f} ms")
            assert agent.nudges == 1 and agent.revision == 1
            wait_for(lambda: built.sensor.model.manifest.version == "2.0.0", WAIT_S, "frames on 2.0.0")
        finally:
            built.sensor.stop()
            runner.join(30)
            built.close()
    finally:
        assert hub.stop()
        ingest.close()
        store.close()


def test_the_hub_may_write_only_desired_states_on_the_broker():
    acl = acl_text(["cam-1"])
    hub_rules = acl.split("user ivs-hub\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert hub_rules == ["topic read ivs/#", "topic write ivs/+/desired"]
