"""The fleet: the hub pushes a device's desired state over MQTT (a real Mosquitto), the sensor
acts on it at once, with no polling."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ivs import cli
from ivs.build import BuiltSensor, RunOptions, build_sensor
from ivs.config import parse
from ivs.hub.mqtt_auth import acl_text
from ivs.hub.mqtt_ingest import MqttIngest
from ivs.hub.store import Store
from ivs.localnet import LocalMosquitto
from ivs.sinks.mqtt import MqttSink
from tests.test_deploy import ADMIN, WAIT_S, Collect, Hub
from tests.waiting import wait_for


@contextlib.contextmanager
def running(text: str, sinks: list[Any] | None = None) -> Iterator[BuiltSensor]:
    """The sensor this config text describes, built and running on a thread; stopped and closed after."""
    config, problems, _ = parse(text)
    assert config is not None, problems
    built = build_sensor(config, RunOptions(watch=False, sinks=sinks or [], ledger_period_s=None))
    runner = threading.Thread(target=built.sensor.run, daemon=True)
    runner.start()
    try:
        yield built
    finally:
        built.sensor.stop()
        runner.join(30)
        built.close()


@pytest.fixture()
def mqtt_hub(broker: LocalMosquitto, tmp_path: Path) -> Iterator[tuple[Store, Hub]]:
    """A hub on SQLite with its MQTT ingest on the test's broker: it pushes desired states and
    relays commands."""
    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    ingest = MqttIngest(store, "127.0.0.1", broker.port)
    hub = Hub(store, push_desired=ingest.push_desired, command=ingest.command)
    yield store, hub
    assert hub.stop()
    ingest.close()
    store.close()


def test_a_desired_change_reaches_a_connected_sensor_over_mqtt_without_polling(
    mqtt_hub: tuple[Store, Hub],
    broker: LocalMosquitto,
    signed: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, hub = mqtt_hub
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
    with running(text, [Collect()]) as built:
        agent = built.agent
        assert agent is not None
        mqtt = next(s for s in built.sensor.sinks if isinstance(s, MqttSink))
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


def test_the_hub_may_write_only_desired_states_and_commands_on_the_broker():
    acl = acl_text(["cam-1"])
    hub_rules = acl.split("user ivs-hub\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert hub_rules == ["topic read ivs/#", "topic write ivs/+/desired", "topic write ivs/+/commands"]


def test_commands_reach_a_sensor_and_one_offline_times_out_with_a_clear_error(
    mqtt_hub: tuple[Store, Hub], broker: LocalMosquitto, tmp_path: Path
) -> None:
    store, hub = mqtt_hub
    store.add_device("cam-c")
    store.add_device("cam-gone")
    text = (
        "id: cam-c\nsource: {url: 'synthetic:160x120@10'}\nmodel: {name: face, runtime: onnxruntime}\n"
        "apps: [{type: zone, name: door, polygon: [[0, 0], [80, 0], [80, 60]]}]\n"
        f"sinks: [{{type: mqtt, port: {broker.port}, outbox: '{tmp_path / 'outbox.sqlite'}'}}]\n"
    )

    def command(device: str, name: str, args: dict[str, Any] | None = None, timeout_s: float = 5) -> Any:
        return hub.call("POST", f"/api/v1/devices/{device}/commands", ADMIN,
                        {"name": name, "args": args or {}, "timeout_s": timeout_s})  # fmt: skip

    with running(text) as built:
        # The first may be sent before the sensor's subscription stands (commands are not kept).
        status, ping = wait_for(lambda: (r := command("cam-c", "ping", timeout_s=1))[0] == 200 and r, WAIT_S,
                                "the sensor answering ping")  # fmt: skip
        assert ping["ok"] and ping["result"]["model"] == "face" and ping["result"]["apps"] == {"door": True}
        print(f"ping answered in {ping['ms']} ms")
        status, off = command("cam-c", "app", {"name": "door", "enabled": False})
        assert status == 200 and off["ok"] and built.sensor.disabled_apps == {"door"}
        status, bad = command("cam-c", "app", {"name": "till", "enabled": True})
        assert status == 200 and not bad["ok"] and "expected one of this sensor's apps ['door']" in bad["error"]
        status, restart = command("cam-c", "restart")
        assert status == 200 and not restart["ok"] and "runs alone (ivs run)" in restart["error"]
        status, lines = command("cam-c", "log", {"lines": 10})
        assert status == 200 and lines["ok"] and isinstance(lines["result"]["lines"], list)
        assert any("app door disabled by a command" in line for line in lines["result"]["lines"])
        status, gone = command("cam-gone", "ping", timeout_s=1)
        assert status == 504 and gone["detail"] == "cam-gone did not answer 'ping' within 1 s: it is offline or busy"
        status, missing = command("nobody", "ping")
        assert status == 404 and "no device named 'nobody'" in missing["detail"]
        result = CliRunner().invoke(cli.app, ["hub", "command", "cam-c", "app", "--arg", "name=door", "--arg",
                                              "enabled=true", "--hub", hub.url, "--admin-token", ADMIN])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["result"] == {"app": "door", "enabled": True}
        assert built.sensor.disabled_apps == set()


def test_a_nodes_sensor_restarts_on_command(broker: LocalMosquitto, tmp_path: Path) -> None:
    from ivs.node import Node
    from ivs.node_config import parse_node

    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    ingest = MqttIngest(store, "127.0.0.1", broker.port)
    hub = Hub(store, command=ingest.command)
    site, problems, _ = parse_node(
        "defaults: {model: {name: face, runtime: onnxruntime}}\n"
        f"sensors: [{{id: cam-n, source: {{url: 'synthetic:160x120@10'}}, sinks: [{{type: mqtt, port: {broker.port}, "
        f"outbox: '{tmp_path / 'n.sqlite'}'}}]}}]\n"
    )
    assert site is not None, problems
    store.add_device("cam-n")
    node = Node(site).start()
    try:

        def command(name: str) -> Any:
            status, answer = hub.call("POST", "/api/v1/devices/cam-n/commands", ADMIN, {"name": name, "timeout_s": 1})
            return answer if status == 200 else None

        wait_for(lambda: command("ping"), WAIT_S, "the node's sensor answering ping")
        answer = command("restart")
        assert answer is not None and answer["ok"] and answer["result"] == {"restarting": True}
        wait_for(lambda: node.health()[0].restarts == 1 and node.health()[0].state == "running", WAIT_S, "restarted")
        wait_for(lambda: node.health()[0].frames >= 3, WAIT_S, "frames after the restart")
    finally:
        node.stop()
        assert hub.stop()
        ingest.close()
        store.close()


def test_a_site_file_deployed_from_the_hub_reaches_a_running_node(tmp_path: Path, procs: list) -> None:
    """The node's twin: `ivs hub node-deploy` sets the site file, the node (`node.hub`) applies it
    with a reload (the running sensor runs on), and reports each sensor's health back."""
    from tests.processes import Proc, ivs

    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    hub = Hub(store)
    try:
        token = store.add_device("shop-1")

        def site(*sensors: str) -> str:
            return (
                f"node: {{id: shop-1, hub: {{hub: '{hub.url}', interval_s: 0.5}}}}\n"
                "defaults: {model: {name: face, runtime: onnxruntime}, frames: true}\n"
                "sensors:\n"
                + "".join(
                    f"  - {{id: {s}, source: {{url: 'synthetic:160x120@10'}}, "
                    f"sinks: [{{type: jsonl, path: '{tmp_path}/{s}.jsonl'}}]}}\n"
                    for s in sensors
                )
            )

        path = tmp_path / "site.yaml"
        path.write_text(site("cam-1"))
        node = Proc(ivs("node", "--config", str(path), "--status-s", "0"), tmp_path / "node.log",
                    env={"IVS_NODE_TOKEN": token})  # fmt: skip
        procs.append(node)

        def state() -> dict[str, Any]:
            status, answer = hub.call("GET", "/api/v1/devices/shop-1/node", ADMIN)
            assert status == 200, answer
            return dict(answer)

        wait_for(lambda: (r := state()["reported"]) and r["sensors"] and r["sensors"][0]["frames"] > 0, WAIT_S,
                 "the node's first report", procs=[node.proc])  # fmt: skip
        new = tmp_path / "new.yaml"
        new.write_text(site("cam-1", "cam-2"))
        runner = CliRunner()
        env = {"IVS_HUB_URL": hub.url, "IVS_HUB_ADMIN_TOKEN": ADMIN}
        result = runner.invoke(cli.app, ["hub", "node-deploy", "shop-1", "--config", str(new)], env=env)
        assert result.exit_code == 0 and "shop-1: site revision 1" in result.output, result.output

        def both_running() -> bool:
            s = state()
            health = {h["id"]: h for h in (s["reported"] or {}).get("sensors", [])}
            return s["in_sync"] and health.get("cam-2", {}).get("frames", 0) > 0

        wait_for(both_running, WAIT_S, "cam-2 started by the hub's site file", procs=[node.proc])
        health = {h["id"]: h for h in state()["reported"]["sensors"]}
        assert health["cam-1"]["restarts"] == 0 and health["cam-1"]["state"] == "running"
        lines = [json.loads(line) for line in (tmp_path / "cam-1.jsonl").read_text().splitlines()[:-1]]
        frames = [r["frame"] for r in lines if r["schema"] == "ivs.frame/1"]
        assert frames == list(range(len(frames)))  # cam-1 ran on through the change: no gap, no restart
        result = runner.invoke(cli.app, ["hub", "node-status", "shop-1"], env=env)
        assert result.exit_code == 0 and json.loads(result.output)["in_sync"]

        bad = tmp_path / "bad.yaml"
        bad.write_text(site("cam-1").replace("runtime: onnxruntime", "runtime: tpu"))
        result = runner.invoke(cli.app, ["hub", "node-deploy", "shop-1", "--config", str(bad)], env=env)
        assert result.exit_code == 1 and "not a valid site file: config:2: sensors[0].model.runtime" in result.output
        wrong = runner.invoke(cli.app, ["hub", "node-deploy", "shop-1", "--config", str(new)],
                              env=env | {"IVS_HUB_ADMIN_TOKEN": token})  # fmt: skip
        assert wrong.exit_code == 1 and "403" in wrong.output  # a device's token deploys nothing
        node.interrupt()
    finally:
        assert hub.stop()
        store.close()


def test_an_http_sensor_shows_its_model_while_it_runs_and_goes_offline_after_its_heartbeat_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sensor list tells the truth on HTTP too: no last will there, so the heartbeat says
    it is alive (and what it runs); missed for --offline-after, it is offline."""
    from ivs.hub.app import create_app
    from ivs.localnet import ServerThread

    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    hub = ServerThread(create_app(store, ADMIN, offline_after_s=2.0))
    try:
        monkeypatch.setenv("IVS_HUB_TOKEN", store.add_device("cam-h"))
        text = (
            "id: cam-h\nsource: {url: 'synthetic:160x120@10'}\nmodel: {name: face, runtime: onnxruntime}\n"
            "heartbeat_s: 0.5\n"
            f"sinks: [{{type: http, url: '{hub.url}/api/v1/ingest', token_env: IVS_HUB_TOKEN, "
            f"outbox: '{tmp_path / 'box.sqlite'}', batch_wait_s: 0.1}}]\n"
        )

        def listed() -> dict[str, Any]:
            request = urllib.request.Request(f"{hub.url}/api/v1/sensors", headers={"Authorization": f"Bearer {ADMIN}"})
            with urllib.request.urlopen(request, timeout=10) as r:
                return {s["sensor_id"]: s for s in json.loads(r.read())}.get("cam-h", {})

        with running(text):
            seen = wait_for(lambda: (s := listed()).get("online") and s.get("model") and s, WAIT_S, "cam-h online")
            assert (seen["model"], seen["version"]) == ("face", "1.0.0")
            health = wait_for(lambda: (h := store.health("cam-h")) and h.frames >= 5 and h, WAIT_S, "heartbeats")
            assert health.model == "face" and health.fps > 0
        wait_for(lambda: listed().get("online") is False, WAIT_S, "cam-h offline after its heartbeats stopped")
        assert listed()["model"] == "face"  # what it ran is still shown
    finally:
        assert hub.stop()
        store.close()


def test_a_site_revision_pushed_over_mqtt_reaches_a_node_that_polls_hourly(
    mqtt_hub: tuple[Store, Hub], broker: LocalMosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ivs.node import Node
    from ivs.node_agent import NodeAgent
    from ivs.node_config import parse_node

    store, hub = mqtt_hub
    monkeypatch.setenv("IVS_NODE_TOKEN", store.add_device("shop-2"))

    def site(*sensors: str) -> str:
        return (
            f"node: {{id: shop-2, hub: {{hub: '{hub.url}', interval_s: 3600, mqtt: {{port: {broker.port}}}}}}}\n"
            "defaults: {model: {name: face, runtime: onnxruntime}, sinks: []}\n"
            "sensors:\n" + "".join(f"  - {{id: {s}, source: {{url: 'synthetic:160x120@10'}}}}\n" for s in sensors)
        )

    first, problems, _ = parse_node(site("cam-1"))
    assert first is not None and first.node.hub is not None, problems
    node = Node(first).start()
    agent = NodeAgent(node, first.node.hub).start()
    try:
        wait_for(lambda: hub.call("GET", "/api/v1/devices/shop-2/node", ADMIN)[1]["reported"], WAIT_S, "a report")
        status, _ = hub.call("PUT", "/api/v1/devices/shop-2/node-config", ADMIN, {"config": site("cam-1", "cam-2")})
        assert status == 200
        wait_for(lambda: {h.id for h in node.health()} == {"cam-1", "cam-2"}, WAIT_S, "cam-2 from the pushed site")
        assert agent.nudges == 1 and agent.revision == 1 and agent.status == "ok"  # an hour between polls: the push
        wait_for(lambda: next(h for h in node.health() if h.id == "cam-2").frames > 0, WAIT_S, "cam-2 running")
    finally:
        agent.close()
        node.stop()
