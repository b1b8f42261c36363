"""Users, roles, tokens, logins and the audit log on the hub (ivs.hub.auth, ivs.hub.users):
nothing answers anonymously but /healthz; a viewer reads and cannot deploy; a device token reads
nothing; a session cookie only reads; every change and login is audited. The dashboard's login
in a real headless Chromium."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ivs import cli
from ivs.hub.app import create_app
from ivs.hub.store import HubError, Store
from ivs.localnet import ServerThread
from tests.messages import body, count

ADMIN = "admin-secret"


@pytest.fixture()
def hub(db_url: str) -> Iterator[tuple[Store, TestClient, dict[str, str]]]:
    store = Store(db_url)
    store.add_user("vera", "viewer", "vera-password")
    store.add_user("otto", "operator")
    store.add_user("ada", "admin")
    tokens = {name: store.create_token(name)[1] for name in ("vera", "otto", "ada")}
    tokens["cam-1"] = store.add_device("cam-1")
    tokens["cam-2"] = store.add_device("cam-2")
    with TestClient(create_app(store, ADMIN)) as client:
        yield store, client, tokens
    store.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


READS = ["/api/v1/events", "/api/v1/counts", "/api/v1/sensors", "/metrics", "/api/v1/me"]


def test_nothing_but_health_answers_anonymously(hub) -> None:
    _, client, t = hub
    assert client.get("/healthz").json() == {"ok": True}
    for path in [*READS, "/api/v1/stream", "/api/v1/rollouts", "/api/v1/devices", "/api/v1/audit"]:
        r = client.get(path)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/dashboard").status_code == 200  # the page itself: it shows its login
    assert client.get("/openapi.json").status_code == 401  # the API's document: viewers and up
    assert client.get("/openapi.json", headers=auth(t["vera"])).json()["info"]["title"] == "ivs hub"


def test_a_viewer_reads_an_operator_deploys_an_admin_manages(hub) -> None:
    _, client, t = hub
    assert (
        client.post("/api/v1/ingest", content=body(count("cam-1", 1, 1.7e9)), headers=auth(t["cam-1"])).status_code
        == 200
    )
    for path in READS:
        assert client.get(path, headers=auth(t["vera"])).status_code == 200, path
    assert client.get("/api/v1/me", headers=auth(t["vera"])).json() == {
        "name": "vera",
        "kind": "user",
        "role": "viewer",
    }
    deploy = {"package": "nothing@1.0.0"}
    r = client.put("/api/v1/devices/cam-1/desired", json=deploy, headers=auth(t["vera"]))
    assert r.status_code == 403 and r.json()["detail"] == "'vera' is a viewer: this needs the role operator or more"
    assert (
        client.put("/api/v1/devices/cam-1/desired", json=deploy, headers=auth(t["otto"])).status_code == 404
    )  # allowed: no such package
    r = client.post("/api/v1/devices", json={"name": "cam-3"}, headers=auth(t["otto"]))
    assert r.status_code == 403 and "is a operator: this needs the role admin" in r.json()["detail"]
    assert client.post("/api/v1/devices", json={"name": "cam-3"}, headers=auth(t["ada"])).status_code == 201


def test_a_device_token_reads_nothing_and_a_user_token_is_no_device(hub) -> None:
    _, client, t = hub
    for path in READS:
        r = client.get(path, headers=auth(t["cam-1"]))
        assert r.status_code == 403 and "'cam-1' is a device: a device token never acts as a user" in r.json()["detail"]
    r = client.post("/api/v1/ingest", content=body(count("cam-1", 1, 1.7e9)), headers=auth(t["ada"]))
    assert r.status_code == 401  # an admin's token posts as no device
    assert client.get("/api/v1/device/desired", headers=auth(t["otto"])).status_code == 401


def test_tokens_expire_and_are_revoked_and_a_disabled_user_has_none(hub) -> None:
    store, client, t = hub
    _, expired = store.create_token("vera", days=-1)  # it ended yesterday
    assert client.get("/api/v1/sensors", headers=auth(expired)).status_code == 401
    token_id, revoked = store.create_token("vera")
    assert client.get("/api/v1/sensors", headers=auth(revoked)).status_code == 200
    assert store.revoke_token(token_id)
    assert client.get("/api/v1/sensors", headers=auth(revoked)).status_code == 401
    with pytest.raises(HubError, match="expected viewer or below"):
        store.create_token("vera", role="admin")  # never more than the user's role
    assert store.disable_user("otto")
    assert client.get("/api/v1/sensors", headers=auth(t["otto"])).status_code == 401


def test_a_session_cookie_reads_and_changes_nothing(hub) -> None:
    _, client, _ = hub
    assert client.post("/api/v1/login", json={"user": "vera", "password": "wrong"}).status_code == 401
    assert client.post("/api/v1/login", json={"user": "nobody", "password": "x"}).status_code == 401
    r = client.post("/api/v1/login", json={"user": "vera", "password": "vera-password"})
    assert r.status_code == 200 and r.json() == {"user": "vera", "role": "viewer"}
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert client.get("/api/v1/sensors").status_code == 200  # the cookie reads
    store_admin = client.post("/api/v1/login", json={"user": "ada", "password": "x"})
    assert store_admin.status_code == 401  # ada has no password: tokens only
    # With only the cookie, a change is refused however high the role: no cross-site requests.
    r = client.put("/api/v1/devices/cam-1/tags", json={"site": "x"})
    assert r.status_code == 401
    assert client.post("/api/v1/logout").json() == {"logged_out": True}
    assert client.get("/api/v1/sensors").status_code == 401


def test_every_change_and_login_is_in_the_audit_log(hub) -> None:
    _, client, t = hub
    client.put("/api/v1/devices/cam-1/tags", json={"site": "berlin"}, headers=auth(t["otto"]))
    client.put("/api/v1/devices/cam-1/tags", json={"site": "paris"}, headers=auth(t["vera"]))  # refused
    client.post("/api/v1/devices", json={"name": "cam-9"}, headers=auth(t["ada"]))
    client.post("/api/v1/login", json={"user": "vera", "password": "wrong"})
    client.post("/api/v1/ingest", content=body(count("cam-1", 1, 1.7e9)), headers=auth(t["cam-1"]))  # a device's own
    assert client.get("/api/v1/audit", headers=auth(t["otto"])).status_code == 403  # admins only
    log = client.get("/api/v1/audit", headers=auth(t["ada"])).json()
    got = [(e["who"], e["role"], e["action"], e["status"]) for e in reversed(log)]
    assert got == [
        ("otto", "operator", "PUT /api/v1/devices/cam-1/tags", 200),
        ("vera", "viewer", "PUT /api/v1/devices/cam-1/tags", 403),
        ("ada", "admin", "POST /api/v1/devices", 201),
        ("vera", None, "POST /api/v1/login", 401),
    ]
    assert all(e["address"] == "testclient" and e["time"] > 0 for e in log)


def test_the_cli_adds_users_and_makes_and_revokes_their_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    runner = CliRunner()

    def ivs(*args: str) -> str:
        result = runner.invoke(cli.app, [*args, "--db", db])
        assert result.exit_code == 0, result.output
        return result.output

    refused = runner.invoke(cli.app, ["hub", "user", "add", "vera", "--role", "viewer", "--db", db])
    assert refused.exit_code == 2 and "IVS_USER_PASSWORD is not set" in refused.output
    monkeypatch.setenv("IVS_USER_PASSWORD", "s3cret")
    assert ivs("hub", "user", "add", "vera", "--role", "viewer").strip() == "user vera: viewer"
    users = [json.loads(line) for line in ivs("hub", "user", "list").splitlines()]
    assert users[0]["name"] == "vera" and users[0]["password"] and "s3cret" not in json.dumps(users)
    made = ivs("hub", "token", "create", "vera", "--days", "1")
    token = made.split(": ", 1)[1].strip()
    listed = ivs("hub", "token", "list")
    assert token not in listed and json.loads(listed.splitlines()[0])["role"] == "viewer"
    assert ivs("hub", "token", "revoke", "1").strip() == "token 1 revoked"
    assert ivs("hub", "user", "disable", "vera").strip() == "user vera disabled"
    store = Store(db)
    try:
        assert store.user_for_token(token) is None and store.check_password("vera", "s3cret") is None
    finally:
        store.close()


@pytest.mark.slow
def test_the_dashboard_shows_its_login_and_then_the_hub(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    store.add_user("vera", "viewer", "vera-password")
    hub = ServerThread(create_app(store, ADMIN))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None, "make test installs Debian's chromium (scripts/install-browser.sh)"
    try:
        device = store.add_device("cam-1")
        with TestClient(create_app(store, ADMIN)) as client:
            client.post("/api/v1/ingest", content=body(count("cam-1", 1, time.time())), headers=auth(device))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(hub.url + "/dashboard")
                page.locator("form#login").wait_for(state="visible", timeout=20_000)
                assert page.locator("main").is_hidden()  # nothing of the hub before the login
                page.fill("input[name=user]", "vera")
                page.fill("input[name=password]", "wrong")
                page.click("form#login button")
                page.locator("#login-error").filter(has_text="unknown user or wrong password").wait_for(timeout=10_000)
                page.fill("input[name=password]", "vera-password")
                page.click("form#login button")
                page.locator('#sensors tbody tr:has-text("cam-1")').wait_for(timeout=20_000)
                assert page.locator("#whoami").inner_text() == "vera (viewer)"
            finally:
                browser.close()
    finally:
        assert hub.stop()
        store.close()
