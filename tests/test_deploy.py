"""Deploy: the hub assigns signed packages (and configs) to devices, the sensor pulls, verifies,
hot-swaps and reports; the hub shows desired vs reported. A real hub (uvicorn, on SQLite and on
PostgreSQL) and a real sensor (synthetic source, the classifier re-signed by a test key in its
keyring)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from ivs import cli
from ivs.apps import App
from ivs.assemble import build_app
from ivs.config import SensorConfig
from ivs.deploy import DeployAgent, HubClient, LiveApps, LiveConfig
from ivs.errors import ConfigError
from ivs.events import Heatmap
from ivs.hub.app import create_app
from ivs.hub.store import SCHEMA_VERSION, Store
from ivs.localnet import ServerThread
from ivs.model import Model, load_model
from ivs.package.reader import read_package
from ivs.package.signing import Keyring
from ivs.records import FrameRecord
from ivs.sensor import Sensor
from ivs.sources.synthetic import SyntheticSource
from tests.waiting import wait_for

ADMIN = "admin-secret"
WAIT_S = 60.0


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Hub(ServerThread):
    def __init__(self, store: Store, push_desired: Any = None, command: Any = None, rollouts: Any = None) -> None:
        self.store = store
        app = create_app(store, ADMIN, push_desired=push_desired, command=command, rollouts=rollouts)
        super().__init__(app, timeout_graceful_shutdown=3)

    def call(
        self, method: str, path: str, token: str | None, body: bytes | dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """(status, the answer's JSON or bytes) of one request; 4xx/5xx are answers, not errors."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        data = None
        if isinstance(body, dict):
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        elif body is not None:
            data, headers["Content-Type"] = body, "application/octet-stream"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw, kind = response.status, response.read(), response.headers["Content-Type"]
        except urllib.error.HTTPError as err:
            with err:
                status, raw, kind = err.code, err.read(), err.headers["Content-Type"]
        return status, json.loads(raw) if kind.startswith("application/json") else raw

    def upload(self, path: Path) -> tuple[int, Any]:
        return self.call("POST", "/api/v1/packages", ADMIN, path.read_bytes())

    def deploy_state(self, device: str) -> dict[str, Any]:
        status, state = self.call("GET", f"/api/v1/devices/{device}/deploy", ADMIN)
        assert status == 200, state
        return dict(state)


@pytest.fixture()
def hub(db_url: str) -> Iterator[Hub]:
    """A hub on SQLite and on PostgreSQL (`db_url`): the tests that use it run on both."""
    store = Store(db_url)
    h = Hub(store)
    yield h
    assert h.stop(), "uvicorn did not stop"
    store.close()


class Collect:
    """A sink that keeps every message. `delay` per frame record holds an unpaced sensor (fps=0:
    no frame is ever dropped) to a gentle rate, so the test does not take a whole core."""

    def __init__(self, delay: float = 0.0) -> None:
        self.messages: list[msgspec.Struct] = []
        self.delay = delay

    def write(self, message: msgspec.Struct) -> None:
        self.messages.append(message)
        if self.delay and isinstance(message, FrameRecord):
            time.sleep(self.delay)

    def close(self) -> None:
        pass

    def records(self) -> list[FrameRecord]:
        return [m for m in list(self.messages) if isinstance(m, FrameRecord)]


def sensor_yaml(sensor_id: str, model: Path, apps: str = "") -> str:
    return (
        f"id: {sensor_id}\nsource:\n  url: synthetic:160x120@30\nmodel:\n  name: {model}\n  runtime: onnxruntime\n"
        + apps
    )


HEATMAP_APP = "apps:\n  - type: heatmap\n    name: floor\n    cols: 4\n    rows: 3\n    period_s: 0.5\n"


def test_deploy_round_trip_and_a_tampered_package_is_refused(hub: Hub, signed: dict[str, Any], tmp_path: Path) -> None:
    token = hub.store.add_device("cam-1")
    keyring = Keyring.load(signed["ring"])

    def load(path: Path) -> Model:
        return load_model(path, keyring=keyring, runtime="onnxruntime")

    sink = Collect(delay=0.02)
    live = LiveApps()
    sensor = Sensor(
        SyntheticSource(160, 120, fps=30), load(signed["1.0.0"]), [sink], sensor_id="cam-1", apps=[live], fps=0
    )
    size = (160, 120)

    def build(config: SensorConfig) -> list[App]:
        return [build_app(a, sensor.model.labels, size, None) for a in config.apps]

    running = SensorConfig.model_validate({"id": "cam-1", "source": {"url": "synthetic:160x120@30"},
                                           "model": {"name": str(signed["1.0.0"]), "runtime": "onnxruntime"}})  # fmt: skip
    agent = DeployAgent(
        HubClient(hub.url, token),
        tmp_path / "deploy",
        current=lambda: sensor.model,
        load=load,
        swap=sensor.swap_model,
        apply_config=LiveConfig(running, live, build, frame_size=size, labels=lambda: sensor.model.labels),
        interval_s=0.2,
    )
    runner = threading.Thread(target=sensor.run)
    runner.start()
    agent.start()
    try:
        wait_for(what="frames on 1.0.0", timeout=WAIT_S, predicate=lambda: len(sink.records()) >= 10)
        assert hub.deploy_state("cam-1")["status"] == "none"

        # upload and assign 2.0.0 with a config that adds a heatmap app
        status, v2 = hub.upload(signed["2.0.0"])
        assert status == 201, v2
        assert (v2["name"], v2["version"], v2["sha256"]) == ("classifier", "2.0.0", sha(signed["2.0.0"]))
        assert v2["signed_by"] == signed["key_id"] and v2["problem"] is None
        status, desired = hub.call(
            "PUT",
            "/api/v1/devices/cam-1/desired",
            ADMIN,
            {"package": "classifier@2.0.0", "config": sensor_yaml("cam-1", signed["1.0.0"], HEATMAP_APP)},
        )
        assert status == 200, desired
        assert desired["revision"] == 1 and desired["package"]["sha256"] == v2["sha256"]

        # the sensor swaps; the hub shows 2.0.0 as reported
        state = wait_for(
            what="the hub to show 2.0.0",
            timeout=WAIT_S,
            predicate=lambda: (s := hub.deploy_state("cam-1"))["in_sync"] and s,
        )
        assert state["status"] == "ok" and state["reported"]["revision"] == 1
        assert state["reported"]["model"] == {"name": "classifier", "version": "2.0.0", "sha256": v2["sha256"]}
        assert state["reported"]["error"] is None
        assert "apps applied live (floor)" in state["reported"]["config_status"]
        assert "restart" not in state["reported"]["config_status"]
        wait_for(
            what="frames on 2.0.0",
            timeout=WAIT_S,
            predicate=lambda: sum(r.model.version == "2.0.0" for r in sink.records()) >= 10,
        )
        wait_for(what="the deployed heatmap app", timeout=WAIT_S, predicate=lambda: any(isinstance(m, Heatmap) and m.app == "floor"
                                                         for m in list(sink.messages)))  # fmt: skip

        # a tampered 3.0.0: the hub takes it (and warns), the sensor refuses it
        status, v3 = hub.upload(signed["tampered"])
        assert status == 201, v3
        assert v3["version"] == "3.0.0" and "changed after packing" in v3["problem"]
        status, desired = hub.call("PUT", "/api/v1/devices/cam-1/desired", ADMIN, {"package": v3["sha256"]})
        assert status == 200 and desired["revision"] == 2, desired
        state = wait_for(
            what="the hub to show the refusal",
            timeout=WAIT_S,
            predicate=lambda: (s := hub.deploy_state("cam-1"))["status"] == "failed" and s,
        )
        reported = state["reported"]
        assert not state["in_sync"] and state["desired"]["package"]["version"] == "3.0.0"
        assert reported["revision"] == 2 and reported["model"]["version"] == "2.0.0"
        assert reported["model"]["sha256"] == v2["sha256"]
        network = read_package(signed["1.0.0"], keyring).manifest.model.path
        assert "refused, the running model stays" in reported["error"]
        assert f"member {network} has sha256" in reported["error"] and "changed after packing" in reported["error"]
        refused_at = len(sink.records())
        wait_for(
            what="frames after the refusal", timeout=WAIT_S, predicate=lambda: len(sink.records()) >= refused_at + 15
        )

        # the dashboard's sensors list carries desired vs reported and the reason
        row = next(s for s in _dashboard_sensors(hub) if s["sensor_id"] == "cam-1")
        assert (row["desired"], row["reported"], row["deploy_status"]) == (
            "classifier 3.0.0",
            "classifier 2.0.0",
            "failed",
        )
        assert "changed after packing" in row["deploy_error"]
    finally:
        agent.close()
        sensor.stop()
        runner.join(30)
        sensor.model.close()
    records = sink.records()
    # No frame is lost at a swap: every index missing between two records is one the sensor
    # dropped and says so (a loaded machine drops frames of a paced source, swap or not).
    previous = [-1, *(r.frame for r in records[:-1])]
    gaps = [(r.frame - p - 1, r.dropped) for p, r in zip(previous, records, strict=True)]
    assert all(missing == dropped for missing, dropped in gaps), f"frames lost beyond the drops: {gaps}"
    versions = [r.model.version for r in records]
    switch = versions.index("2.0.0")
    assert set(versions[:switch]) == {"1.0.0"} and set(versions[switch:]) == {"2.0.0"}
    assert sensor.swaps == 1 and agent.swaps == 1 and agent.refused == 1
    assert [p.name for p in (tmp_path / "deploy").glob("*.ivsm")] == [f"{v2['sha256']}.ivsm"]
    assert "floor" in (tmp_path / "deploy" / "config.yaml").read_text()


def _dashboard_sensors(hub: Hub) -> list[dict[str, Any]]:
    """The first `sensors` event of the dashboard's stream."""
    request = urllib.request.Request(f"{hub.url}/api/v1/stream", headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        while line := response.readline():
            if line.startswith(b"event: sensors"):
                data = response.readline().decode()
                return list(json.loads(data.removeprefix("data: ")))
    raise AssertionError("no sensors event in the stream")


def test_devices_see_only_their_own_and_bad_requests_say_why(hub: Hub, signed: dict[str, Any]) -> None:
    cam1, cam2 = hub.store.add_device("cam-1"), hub.store.add_device("cam-2")
    package = signed["2.0.0"].read_bytes()
    # admin endpoints: no token 401, a device token 403 (refused before the body is read: a small one)
    status, body = hub.call("POST", "/api/v1/packages", None, b"PK")
    assert status == 401, body
    status, body = hub.call("POST", "/api/v1/packages", cam1, b"PK")
    assert status == 403 and "'cam-1' is a device" in body["detail"]
    status, body = hub.call("GET", "/api/v1/devices/cam-1/deploy", cam2)
    assert status == 403, body
    status, body = hub.call("GET", "/api/v1/devices/cam-1/deploy", "not-a-token")
    assert status == 401, body
    # what is not a package is refused with the reason
    status, body = hub.call("POST", "/api/v1/packages", ADMIN, b"hello, I am not a zip")
    assert status == 400 and "not a zip archive" in body["detail"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("model.onnx", b"\x00" * 10)
    status, body = hub.call("POST", "/api/v1/packages", ADMIN, buffer.getvalue())
    assert status == 400 and "no manifest.json" in body["detail"]
    # an upload is stored once
    status, first = hub.call("POST", "/api/v1/packages", ADMIN, package)
    assert status == 201
    status, again = hub.call("POST", "/api/v1/packages", ADMIN, package)
    assert status == 200 and again == first
    status, listed = hub.call("GET", "/api/v1/packages", ADMIN)
    assert status == 200 and [p["sha256"] for p in listed] == [first["sha256"]]
    # assignments: unknown device or package 404, a config for another sensor 422
    status, body = hub.call("PUT", "/api/v1/devices/cam-9/desired", ADMIN, {"package": first["sha256"]})
    assert status == 404 and "no device named 'cam-9'" in body["detail"]
    status, body = hub.call("PUT", "/api/v1/devices/cam-1/desired", ADMIN, {"package": "classifier@9.9"})
    assert status == 404 and "no package 'classifier@9.9'" in body["detail"]
    config = sensor_yaml("cam-2", signed["2.0.0"])
    status, body = hub.call("PUT", "/api/v1/devices/cam-1/desired", ADMIN, {"package": "classifier", "config": config})
    assert status == 422 and "expected the device's name 'cam-1'" in body["detail"]
    bad = sensor_yaml("cam-1", signed["2.0.0"]) + "colour: blue\n"
    status, body = hub.call("PUT", "/api/v1/devices/cam-1/desired", ADMIN, {"package": "classifier", "config": bad})
    assert status == 422 and "unknown key 'colour'" in body["detail"]
    status, desired = hub.call("PUT", "/api/v1/devices/cam-1/desired", ADMIN, {"package": "classifier"})
    assert status == 200 and desired["revision"] == 1
    # each device sees its own desired state and downloads only its own package
    status, mine = hub.call("GET", "/api/v1/device/desired", cam1)
    assert status == 200 and mine["package"]["sha256"] == first["sha256"]
    status, theirs = hub.call("GET", "/api/v1/device/desired", cam2)
    assert status == 200 and (theirs["device"], theirs["revision"], theirs["package"]) == ("cam-2", 0, None)
    status, data = hub.call("GET", mine["download"], cam1)
    assert status == 200 and data == package
    status, body = hub.call("GET", mine["download"], cam2)
    assert status == 403 and "not the one assigned to device 'cam-2'" in body["detail"]
    status, body = hub.call("GET", mine["download"], None)
    assert status == 401
    # a report for a revision never assigned
    status, body = hub.call("POST", "/api/v1/device/report", cam2, {"revision": 1, "status": "ok"})
    assert status == 409 and "never assigned" in body["detail"]
    status, body = hub.call("POST", "/api/v1/device/report", cam1, {"revision": 1, "status": "maybe"})
    assert status == 422


def test_a_version_1_database_is_upgraded(db_url: str) -> None:
    url = db_url
    store = Store(url)
    token = store.add_device("cam-1")
    with store.engine.begin() as conn:  # what ivs with schema version 1 left behind
        for table in ("packages", "assignments", "deploy_reports"):
            conn.execute(text(f"DROP TABLE {table}"))
        conn.execute(text("UPDATE schema_version SET version = 1"))
    store.close()
    store = Store(url)
    try:
        assert SCHEMA_VERSION == 5 and store.schema_version() == 5
        assert store.authenticate(token) == "cam-1"
        info, new = store.add_package(b"bytes", name="x", version="1")
        assert new and store.assign("cam-1", info.sha256).revision == 1
    finally:
        store.close()


def test_live_config_applies_apps_and_says_what_needs_a_restart(signed: dict[str, Any]) -> None:
    running = SensorConfig.model_validate(
        {"id": "cam-1", "source": {"url": "synthetic:160x120@30"}, "model": {"name": "classifier"}}
    )
    live = LiveApps()

    def build(config: SensorConfig) -> list[App]:
        return [build_app(a, ["person"], (160, 120), None) for a in config.apps]

    apply = LiveConfig(running, live, build, frame_size=(160, 120), labels=lambda: ["person"])
    moved = running.model_copy(update={"source": running.source.model_copy(update={"url": "synthetic:320x240@30"})})
    doc = moved.model_dump(mode="json") | {"apps": [{"type": "heatmap", "name": "floor"}]}
    said = apply(SensorConfig.model_validate(doc))
    assert said == "apps applied live (floor); restart needed for: source"
    assert live.apps == [] and live.finish(None) == []  # the new apps take over at the next frame
    assert [a.name for a in live.apps] == ["floor"] and live.replaced == 1
    outside = doc | {"apps": [{"type": "line", "name": "door", "p1": [0, 0], "p2": [500, 10]}]}
    with pytest.raises(ConfigError, match="outside the 160x120 frame"):
        apply(SensorConfig.model_validate(outside))


def test_cli_uploads_deploys_and_ivs_run_follows_the_hub(hub: Hub, signed: dict[str, Any], tmp_path: Path) -> None:
    """`ivs hub package upload`, `ivs hub deploy`, `ivs hub deploy-status`, and an `ivs run --config`
    process whose `deploy:` section points at the hub."""
    token = hub.store.add_device("cam-1")
    out = tmp_path / "out.jsonl"
    config = tmp_path / "cam-1.yaml"
    config.write_text(
        f"id: cam-1\nsource:\n  url: synthetic:160x120@15\nmodel:\n  name: {signed['1.0.0']}\n  runtime: onnxruntime\n"
        f"keyring: {signed['ring']}\nframes: true\nsinks:\n  - type: jsonl\n    path: {out}\n"
        f"deploy:\n  hub: {hub.url}\n  folder: {tmp_path / 'deploy'}\n  interval_s: 0.2\n"
    )
    runner = CliRunner()
    env = {"IVS_HUB_URL": hub.url, "IVS_HUB_ADMIN_TOKEN": ADMIN}
    result = runner.invoke(cli.app, ["hub", "package", "upload", str(signed["2.0.0"])], env=env)
    assert result.exit_code == 0, result.output
    assert f"classifier 2.0.0 sha256 {sha(signed['2.0.0'])}" in result.output
    wrong = env | {"IVS_HUB_ADMIN_TOKEN": "not-the-admin-token"}
    result = runner.invoke(cli.app, ["hub", "deploy", "cam-1", "--package", "classifier@2.0.0"], env=wrong)
    assert result.exit_code == 1 and "the hub answered 401" in result.output, result.output

    proc = subprocess.Popen(
        [sys.executable, "-m", "ivs", "run", "--config", str(config), "-q"],
        env=os.environ | {"IVS_HUB_TOKEN": token},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(what="frames on 1.0.0", timeout=WAIT_S, predicate=lambda: len(_lines(out)) >= 5)
        result = runner.invoke(cli.app, ["hub", "deploy", "cam-1", "--package", "classifier@2.0.0"], env=env)
        assert result.exit_code == 0, result.output
        assert "cam-1: revision 1 -> classifier 2.0.0" in result.output
        wait_for(
            what="frames on 2.0.0",
            timeout=WAIT_S,
            predicate=lambda: sum(r["model"]["version"] == "2.0.0" for r in _lines(out)) >= 5,
        )
        result = runner.invoke(cli.app, ["hub", "deploy-status", "cam-1"], env=env)
        assert result.exit_code == 0, result.output
        state = json.loads(result.output)
        assert state["in_sync"] and state["reported"]["model"]["version"] == "2.0.0"
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "deploy revision 1: now running classifier 2.0.0" in stderr
    versions = [r["model"]["version"] for r in _lines(out)]
    switch = versions.index("2.0.0")
    assert set(versions[:switch]) == {"1.0.0"} and set(versions[switch:]) == {"2.0.0"}


def _lines(path: Path) -> list[dict[str, Any]]:
    """The frame records among the complete JSON lines written so far (the last one may be half
    written; the sensor's heartbeats and other events left out)."""
    if not path.exists():
        return []
    lines = [json.loads(x) for x in path.read_text().splitlines()[:-1]]
    return [r for r in lines if r.get("schema") == "ivs.frame/1"]
