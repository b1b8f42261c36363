"""A staged rollout end to end: 12 real sensors in one `ivs node`, tagged in two sites, a real
Mosquitto, a hub on PostgreSQL; package v2 to one site in 3 waves. Wave 1 is healthy; on wave 2
v2 loads but runs at about half the frame rate, the gate fails, waves 1-2 go back to v1
by themselves, wave 3 never gets v2 and the other site is untouched; every step in the API and
the dashboard (headless Chromium).

Why the gate fails whatever the machine's speed: the two cameras of wave 2 are unpaced (`fps: 0`,
a frame as soon as the last one is done), so their frames per second are set by the cost of a
frame alone; v2 costs about twice v1's a frame (0.46 of v1's rate measured here), so they run at
about half their rate before, under the gate's 80% on a machine half or twice as fast. Wave 1's
camera is paced at 2 fps, which either network keeps with room to spare."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from ivs.hub.mqtt_ingest import MqttIngest
from ivs.hub.rollouts import RolloutController
from ivs.hub.store import Store
from ivs.localnet import LocalMosquitto
from tests.processes import Proc, ivs
from tests.test_deploy import ADMIN, Hub
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

BERLIN = [f"b{i}" for i in range(1, 7)]
PARIS = [f"p{i}" for i in range(1, 7)]
FAST = {"b2", "b3"}  # unpaced cameras: their rate is 1 / the cost of a frame, which v2 doubles


@pytest.fixture(scope="module")
def v2(signed: dict[str, Any]) -> Path:
    """The COCO detector, re-signed by the test key as `coco 2.0.0`: it loads everywhere, and
    costs twice the classifier's time a frame."""
    from ivs.package.reader import read_package
    from ivs.package.signing import load_private
    from ivs.package.writer import write_package
    from ivs.package.zoo import resolve

    src = read_package(resolve("coco"))
    fields = src.manifest.model_dump(mode="json", exclude_none=True)
    fields["version"] = "2.0.0"
    out = Path(signed["ring"]).parent / "coco-2.0.0.ivsm"
    write_package(out, fields, src.members, load_private(Path(signed["ring"]).parent / "k.key"))
    return out


def site_yaml(path: Path, broker: int, hub: str, v1: Path, ring: Path) -> Path:
    lines = [
        "node: {id: fleet, restart_s: 1}",
        "defaults:",
        f"  model: {{name: '{v1}', runtime: onnxruntime}}",
        f"  keyring: '{ring}'",
        f"  sinks: [{{type: mqtt, port: {broker}, outbox: '{path.parent}/boxes/{{id}}.sqlite'}}]",
        f"  deploy: {{hub: '{hub}', folder: '{path.parent}/deploy/{{id}}', interval_s: 60}}",
        "sensors:",
    ]
    for name in BERLIN + PARIS:
        source = "{url: 'synthetic:160x120@30', fps: 0}" if name in FAST else "{url: 'synthetic:160x120@2'}"
        lines.append(f"  - {{id: {name}, source: {source}, deploy: {{token_env: TOKEN_{name.upper()}}}}}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_rollout_in_waves_stops_at_a_failed_gate_and_rolls_back(
    signed: dict[str, Any], v2: Path, postgres_url: str, tmp_path: Path, procs: list[Proc]
) -> None:
    broker = LocalMosquitto(tmp_path / "mosquitto")
    broker.start()
    store = Store(postgres_url)
    ingest = MqttIngest(store, "127.0.0.1", broker.port)
    controller = RolloutController(store, ingest.push_desired, period_s=0.5).start()
    hub = Hub(store, push_desired=ingest.push_desired, command=ingest.command, rollouts=controller)
    try:
        _rollout(signed, v2, store, hub, broker, tmp_path, procs)
    finally:
        assert hub.stop()
        controller.close()
        ingest.close()
        store.close()
        broker.stop()


def _rollout(signed: dict[str, Any], v2: Path, store: Store, hub: Hub, broker: LocalMosquitto, tmp_path: Path,
             procs: list[Proc]) -> None:  # fmt: skip
    def api(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        status, answer = hub.call(method, path, ADMIN, body)
        assert status in (200, 201), (status, answer)
        return answer

    tokens = {name: store.add_device(name) for name in BERLIN + PARIS}
    for name in BERLIN + PARIS:
        api("PUT", f"/api/v1/devices/{name}/tags", {"site": "berlin" if name in BERLIN else "paris"})
    assert hub.upload(signed["1.0.0"])[0] == 201 and hub.upload(v2)[0] == 201
    site = site_yaml(tmp_path / "site.yaml", broker.port, hub.url, signed["1.0.0"], signed["ring"])
    env = {f"TOKEN_{n.upper()}": t for n, t in tokens.items()}
    node = Proc(ivs("node", "--config", str(site), "--status-s", "10"), tmp_path / "node.log", env=env)
    procs.append(node)
    # Every sensor's health known, on v1 (classifier 1.0.0), before the rollout: the paced ones at
    # their 2 fps, the unpaced ones at whatever this machine gives them.
    wait_for(lambda: all((h := store.health(n)) is not None and h.fps >= (1 if n in FAST else 1.5)
                         for n in BERLIN + PARIS), 120, "every sensor's health on v1", procs=[node.proc])  # fmt: skip
    paris_before = {n: store.desired(n) for n in PARIS}

    started = api("POST", "/api/v1/rollouts", {"name": "coco-2", "package": "coco@2.0.0", "target": "site = berlin",
                                               "waves": "1,3,100%", "gate_s": 6, "min_fps_ratio": 0.8})  # fmt: skip
    assert [[d["device"] for d in w["devices"]] for w in started["waves"]] == [["b1"], ["b2", "b3"], ["b4", "b5", "b6"]]

    def rollout() -> dict[str, Any]:
        return dict(api("GET", "/api/v1/rollouts/coco-2"))

    def device_states(r: dict[str, Any]) -> dict[str, str]:
        return {d["device"]: d["state"] for w in r["waves"] for d in w["devices"]}

    wait_for(lambda: rollout()["wave"] == 2, 120, "wave 1 healthy and wave 2 started", procs=[node.proc])
    assert device_states(rollout())["b1"] == "healthy"
    final = wait_for(lambda: (r := rollout())["state"] == "rolled_back" and r, 120, "wave 2's gate to fail")
    print(f"rolled back: {final['reason']}")
    assert final["reason"].startswith("wave 2: b2 runs") or final["reason"].startswith("wave 2: b3 runs")
    assert "on coco 2.0.0, under 80% of its" in final["reason"]
    states = device_states(final)
    assert {n: states[n] for n in ("b1", "b2", "b3")} == dict.fromkeys(("b1", "b2", "b3"), "rolled_back")
    assert {n: states[n] for n in ("b4", "b5", "b6")} == dict.fromkeys(("b4", "b5", "b6"), "never_updated")

    # By themselves, back on v1: the hub's push, the sensors' swap and report.
    def on(name: str, version: str) -> bool:
        report = store.deploy_report(name)
        desired = store.desired(name)
        return bool(report and desired and report.revision == desired.revision and report.version == version)

    wait_for(lambda: all(on(n, "1.0.0") for n in ("b1", "b2", "b3")), 120, "waves 1-2 back on v1")
    for n in ("b4", "b5", "b6"):
        desired = store.desired(n)
        assert desired is None or desired.package.version == "1.0.0"  # wave 3 never received v2
    assert {n: store.desired(n) for n in PARIS} == paris_before  # the other site untouched

    # The dashboard shows the rollout's waves and each device's state to whoever logs in.
    store.add_user("vera", "viewer", "vera-password")
    _dashboard(hub, final)
    node.interrupt()


def _dashboard(hub: Hub, final: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None, "make test installs Debian's chromium (scripts/install-browser.sh)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(hub.url + "/dashboard")
            page.fill("input[name=user]", "vera")
            page.fill("input[name=password]", "vera-password")
            page.click("form#login button")
            row = page.locator('tr[data-rollout="coco-2"]')
            row.wait_for(timeout=20_000)
            assert row.locator("td.state .badge").inner_text() == "rolled back"
            assert row.locator('[data-device="b2"]').get_attribute("title") == "rolled_back"
            assert row.locator('[data-device="b5"]').get_attribute("title") == "never_updated"
            assert page.locator('tr[data-rollout-why="coco-2"]').inner_text() == final["reason"]
        finally:
            browser.close()
