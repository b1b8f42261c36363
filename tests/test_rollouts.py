"""Staged rollouts (ivs.hub.rollouts): waves, health gates, automatic rollback, pause, resume,
abort and priority, with a simulated fleet answering as sensors do (deploy reports and health),
on SQLite and PostgreSQL; and the target conditions and wave sizes on their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ivs.hub.app import create_app
from ivs.hub.rollouts import RolloutController, wave_sizes
from ivs.hub.store import HubError, Store
from ivs.hub.targets import ConditionError, parse_condition

ADMIN = "admin-secret"


class Fleet:
    """Devices that act on their desired state as sensors do: `settle()` makes each report the
    revision it was given and its health, at the fps `rate(device, version)` says."""

    def __init__(self, store: Store, rate, refuse: set[tuple[str, str]] = frozenset()) -> None:
        self.store, self.rate, self.refuse = store, rate, refuse
        self.applied: dict[str, int] = {}

    def settle(self) -> None:
        for d in self.store.devices():
            desired = self.store.desired(d.name)
            if desired is None or self.applied.get(d.name) == desired.revision:
                continue
            p = desired.package
            if (d.name, p.version) in self.refuse:
                self.store.report_deploy(d.name, revision=desired.revision, status="failed",
                                         error="signature not trusted: expected a key in the keyring")  # fmt: skip
            else:
                self.store.report_deploy(d.name, revision=desired.revision, status="ok", model=p.name,
                                         version=p.version, sha256=p.sha256)  # fmt: skip
                self.store.set_health(d.name, self.rate(d.name, p.version), 100, 0, p.name, p.version)
            self.applied[d.name] = desired.revision


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def site(db_url: str) -> Iterator[tuple[Store, RolloutController, Clock, dict[str, str]]]:
    store = Store(db_url)
    shas = {v: store.add_package(f"det {v}".encode(), name="det", version=v)[0].sha256 for v in ("1.0.0", "2.0.0")}
    for i in range(1, 7):
        store.add_device(f"b{i}")
        store.set_tags(f"b{i}", {"site": "berlin", "role": "entrance" if i <= 2 else "floor"})
    for i in range(1, 4):
        store.add_device(f"p{i}")
        store.set_tags(f"p{i}", {"site": "paris"})
    for d in store.devices():  # everyone on 1.0.0 at 10 fps
        a = store.assign(d.name, shas["1.0.0"])
        store.report_deploy(
            d.name, revision=a.revision, status="ok", model="det", version="1.0.0", sha256=shas["1.0.0"]
        )
        store.set_health(d.name, 10.0, 100, 0, "det", "1.0.0")
    clock = Clock()
    pushed: list[tuple[str, int]] = []
    controller = RolloutController(store, lambda d, r: pushed.append((d, r)), clock=clock)
    yield store, controller, clock, shas
    store.close()


def states(store: Store, name: str) -> dict[str, str]:
    return {d.device: d.state for d in store.rollout_devices(store.rollout(name).id)}


def running(store: Store, device: str) -> str:
    desired = store.desired(device)
    assert desired is not None
    return desired.package.version


def test_a_failed_gate_rolls_the_updated_waves_back_and_the_rest_never_get_it(site) -> None:
    store, controller, clock, _ = site
    # 2.0.0 keeps b1's rate but halves the others': wave 1 passes, wave 2 fails its gate.
    fleet = Fleet(store, lambda d, v: 10.0 if v == "1.0.0" or d == "b1" else 4.0)
    paris_revisions = {f"p{i}": store.desired(f"p{i}").revision for i in range(1, 4)}
    r = controller.create("det-2", "det@2.0.0", "site = berlin", waves="1,50%,100%", gate_s=10, min_fps_ratio=0.8)
    assert (r.state, r.wave) == ("running", 0)
    assert states(store, "det-2") == {"b1": "updating"} | {f"b{i}": "pending" for i in range(2, 7)}
    fleet.settle()
    controller.step()
    assert states(store, "det-2")["b1"] == "running"
    clock.t += 5
    controller.step()
    assert store.rollout("det-2").wave == 0  # the gate is 10 s
    clock.t += 6
    controller.step()  # b1 healthy for the gate: wave 2 (up to 50%: b2, b3)
    controller.step()
    assert store.rollout("det-2").wave == 1
    assert states(store, "det-2") == {"b1": "healthy", "b2": "updating", "b3": "updating", "b4": "pending",
                                      "b5": "pending", "b6": "pending"}  # fmt: skip
    fleet.settle()
    controller.step()
    r = store.rollout("det-2")
    assert r.state == "rolled_back"
    assert r.reason == "wave 2: b2 runs 4.0 fps on det 2.0.0, under 80% of its 10.0 fps before"
    assert states(store, "det-2") == {"b1": "rolled_back", "b2": "rolled_back", "b3": "rolled_back",
                                      "b4": "never_updated", "b5": "never_updated", "b6": "never_updated"}  # fmt: skip
    assert {d: running(store, d) for d in ("b1", "b2", "b3", "b4", "b5", "b6")} == dict.fromkeys(
        ("b1", "b2", "b3", "b4", "b5", "b6"), "1.0.0"
    )
    assert store.desired("b4").revision == 1  # wave 3 never received 2.0.0
    assert {f"p{i}": store.desired(f"p{i}").revision for i in range(1, 4)} == paris_revisions  # the other site
    controller.step()  # a rolled back rollout does nothing more
    assert store.rollout("det-2").state == "rolled_back"


def test_a_clean_rollout_goes_wave_by_wave_to_done(site) -> None:
    store, controller, clock, _ = site
    fleet = Fleet(store, lambda d, v: 10.0)
    controller.create("det-2", "det@2.0.0", "site = berlin and role = entrance", waves="1,100%", gate_s=3)
    for _ in range(6):
        fleet.settle()
        controller.step()
        clock.t += 4
    assert store.rollout("det-2").state == "done"
    assert states(store, "det-2") == {"b1": "healthy", "b2": "healthy"}
    assert [running(store, d) for d in ("b1", "b2", "b3")] == ["2.0.0", "2.0.0", "1.0.0"]


def test_a_refused_package_stops_the_rollout_with_the_devices_reason(site) -> None:
    store, controller, _, _ = site
    fleet = Fleet(store, lambda d, v: 10.0, refuse={("p1", "2.0.0")})
    controller.create("det-2", "det@2.0.0", "site = paris", waves="1,100%")
    fleet.settle()
    controller.step()
    r = store.rollout("det-2")
    assert r.state == "rolled_back"
    assert r.reason == "wave 1: p1 refused the package: signature not trusted: expected a key in the keyring"
    assert running(store, "p1") == "1.0.0" and running(store, "p2") == "1.0.0"


def test_pause_holds_resume_goes_on_abort_rolls_back(site) -> None:
    store, controller, clock, _ = site
    fleet = Fleet(store, lambda d, v: 10.0)
    controller.create("det-2", "det@2.0.0", "site = paris", waves="1,100%", gate_s=2)
    fleet.settle()
    controller.step()
    controller.pause("det-2")
    clock.t += 10
    controller.step()
    assert store.rollout("det-2").wave == 0 and states(store, "det-2")["p1"] == "running"
    with pytest.raises(HubError, match="is paused: expected a running one"):
        controller.pause("det-2")
    controller.resume("det-2")
    controller.step()
    controller.step()
    assert store.rollout("det-2").wave == 1
    controller.abort("det-2")
    r = store.rollout("det-2")
    assert (r.state, r.reason) == ("rolled_back", "aborted by the operator")
    assert [running(store, d) for d in ("p1", "p2", "p3")] == ["1.0.0"] * 3


def test_a_device_in_two_rollouts_belongs_to_the_higher_priority(site) -> None:
    store, controller, _, _ = site
    controller.create("urgent", "det@2.0.0", "role = entrance", waves="100%", priority=10)
    low = controller.create("berlin", "det@2.0.0", "site = berlin", waves="100%", priority=0)
    assert sorted(d.device for d in store.rollout_devices(low.id)) == ["b3", "b4", "b5", "b6"]
    with pytest.raises(HubError, match="selects no device"):
        controller.create("again", "det@2.0.0", "role = entrance", waves="100%", priority=5)


def test_the_api_starts_shows_and_stops_rollouts_behind_the_admin_token(site) -> None:
    store, controller, _, _ = site
    client = TestClient(create_app(store, ADMIN, rollouts=controller))
    auth = {"Authorization": f"Bearer {ADMIN}"}
    body = {"name": "det-2", "package": "det@2.0.0", "target": "site = paris", "waves": "1,100%"}
    assert client.post("/api/v1/rollouts", json=body).status_code == 401
    started = client.post("/api/v1/rollouts", json=body, headers=auth)
    assert started.status_code == 201, started.text
    view = started.json()
    assert view["state"] == "running" and [len(w["devices"]) for w in view["waves"]] == [1, 2]
    assert view["waves"][0]["devices"][0] == {"device": "p1", "state": "updating", "reason": None, "baseline_fps": 10.0}
    assert client.post("/api/v1/rollouts", json=body, headers=auth).status_code == 409  # the name is taken
    bad = client.post("/api/v1/rollouts", json=body | {"name": "x", "target": "site ~ paris"}, headers=auth)
    assert bad.status_code == 409 and "expected KEY = VALUE or KEY != VALUE" in bad.json()["detail"]
    assert client.post("/api/v1/rollouts/det-2/pause", headers=auth).json()["state"] == "paused"
    assert client.post("/api/v1/rollouts/det-2/abort", headers=auth).json()["state"] == "rolled_back"
    assert client.get("/api/v1/rollouts/nothing", headers=auth).status_code == 404
    tagged = client.put("/api/v1/devices/p1/tags", json={"site": None, "floor": "2"}, headers=auth)
    assert tagged.status_code == 200 and tagged.json() == {"floor": "2"}
    assert client.get("/api/v1/tags", headers=auth).json()["p1"] == {"floor": "2"}


def test_target_conditions_and_wave_sizes() -> None:
    c = parse_condition("site = berlin and role != till")
    assert c.matches({"site": "berlin", "role": "door"}) and c.matches({"site": "berlin"})
    assert not c.matches({"site": "berlin", "role": "till"}) and not c.matches({"role": "door"})
    assert parse_condition("*").matches({}) and parse_condition("name = 'a b'").matches({"name": "a b"})
    for bad in ("", "site", "site = ", "site == berlin", "site = berlin or role = x"):
        with pytest.raises(ConditionError):
            parse_condition(bad)
    assert wave_sizes("1,10%,100%", 20) == [1, 2, 20]
    assert wave_sizes("1,10%,100%", 5) == [1, 5]  # 10% of 5 rounds up to 1: no wave of nobody
    assert wave_sizes("100%", 3) == [3]
    with pytest.raises(HubError, match="end before every target device"):
        wave_sizes("1,50%", 10)
    with pytest.raises(HubError, match="expected a count"):
        wave_sizes("1,ten", 10)


def test_the_cli_tags_devices_and_starts_shows_pauses_resumes_and_aborts_rollouts(site) -> None:
    import json

    from typer.testing import CliRunner

    from ivs import cli
    from ivs.localnet import ServerThread

    store, controller, _, _ = site
    hub = ServerThread(create_app(store, ADMIN, rollouts=controller))
    runner = CliRunner()
    common = ["--hub", hub.url, "--admin-token", ADMIN]

    def ivs(*args: str) -> str:
        result = runner.invoke(cli.app, [*args, *common])
        assert result.exit_code == 0, result.output
        return result.output

    try:
        assert json.loads(ivs("hub", "tag", "p3", "site=", "role=spare")) == {"role": "spare"}
        started = json.loads(ivs("hub", "rollout", "start", "det-2", "--package", "det@2.0.0", "--target",
                                 "site = paris", "--waves", "1,100%"))  # fmt: skip
        assert [[d["device"] for d in w["devices"]] for w in started["waves"]] == [["p1"], ["p2"]]  # p3 left the site
        assert json.loads(ivs("hub", "rollout", "list"))["state"] == "running"
        assert json.loads(ivs("hub", "rollout", "show", "det-2"))["target"] == "site = paris"
        assert ivs("hub", "rollout", "pause", "det-2").strip() == "rollout det-2: paused"
        assert ivs("hub", "rollout", "resume", "det-2").strip() == "rollout det-2: running"
        assert "rolled_back (aborted by the operator)" in ivs("hub", "rollout", "abort", "det-2")
        refused = runner.invoke(cli.app, ["hub", "rollout", "resume", "det-2", *common])
        assert refused.exit_code == 1 and "is rolled_back: expected a paused one" in refused.output
    finally:
        assert hub.stop()


def test_on_postgresql_one_hub_worker_steps_the_rollouts_at_a_time(site) -> None:
    from sqlalchemy import func, select

    from ivs.hub.rollouts import _ROLLOUT_LOCK

    store, controller, clock, _ = site
    if store.dialect != "postgresql":
        pytest.skip("SQLite: one hub process")
    fleet = Fleet(store, lambda d, v: 10.0)
    controller.create("det-2", "det@2.0.0", "site = paris", waves="1,100%", gate_s=1)
    fleet.settle()
    with store.engine.connect() as other:  # another worker's controller, in the middle of its step
        assert other.scalar(select(func.pg_try_advisory_lock(_ROLLOUT_LOCK)))
        clock.t += 5
        controller.step()
        assert states(store, "det-2")["p1"] == "updating"  # this one waited its turn: nothing moved
        other.scalar(select(func.pg_advisory_unlock(_ROLLOUT_LOCK)))
    controller.step()
    assert states(store, "det-2")["p1"] == "running"
